"""The right to erasure on a real graph (SQLite source, local lake, DuckDB warehouse, encrypted checkpoints):
after forget_customer the person's personal values are nowhere in the lake's files or the warehouse, a restore
of the checkpoint taken before brings every other person back exactly (the database's own values compared) and
this one without name, e-mail, CPF or phone, and the audit log says when and by whom, never whom."""


import dagster as dg
import pytest

from platform_assets.ops.runner import embedded_resources, last_days, run_graph
from platform_assets.protection.restoring import plan_restore, restore
from platform_assets.security.erasure import ERASURE_LOG, forget_customer
from resources.checkpoints.subject_keys import SubjectKeys
from tests.conftest import lake_contents, rows_as_stored
from tests.test_checkpoints import drop

KEY = "5e" * 32
PERSONAL = ("name", "email", "cpf", "phone")


def test_a_forgotten_customer_is_gone_downstream_and_unrecoverable_from_checkpoints(tmp_path, monkeypatch):
    monkeypatch.setenv("AEGIS_CHECKPOINT_KEYS", f"k1*={KEY}")
    resources = embedded_resources(tmp_path, 2000, pii_key="a-real-pii-secret-for-erasure")
    resources["checkpoints"] = type(resources["checkpoints"])(lake=resources["lake"])  # the keyring of the env
    db, lake, store, warehouse = (resources[k] for k in ("source_db", "lake", "checkpoints", "warehouse"))
    day = last_days(1)[0]
    with dg.DagsterInstance.ephemeral() as instance:
        run_graph(resources, [day], instance, checkpoint=True)
        columns = ["id", "signup_date", *PERSONAL, "city", "state"]
        before = rows_as_stored(db, "customers")
        served = {r["customer_key"]: r for r in warehouse.query("SELECT * FROM serving.dim_customer").to_pylist()}
        # the proof uses values that belong to this person alone: the synthetic names repeat (300 combinations for
        # ~500 customers a day) and a namesake's rows rightly stay, so a shared value could not tell a leak from
        # a namesake; e-mail and CPF are always the person's own
        person = next(dict(zip(columns, r, strict=True)) for r in before
                      if all(r[columns.index(c)] for c in PERSONAL) and r[0] in served)
        shared = {c: {r[columns.index(c)] for r in before if r[0] != person["id"]} for c in PERSONAL}
        own = {c for c in PERSONAL if person[c] not in shared[c]}
        assert {"email", "cpf"} <= own, f"the fixture's person shares {set(PERSONAL) - own} with someone"
        masked = {v for k, v in served[person["id"]].items()
                  if k.endswith("_hash") and v and k.removesuffix("_hash") in own}
        personal = {person[c] for c in own} | masked
        destroyed = SubjectKeys(lake).load("customers")[str(person["id"])]
        manifest = store.manifest("customers", store.list("customers")[-1])
        assert manifest["sealed"]["columns"] == list(PERSONAL) and manifest["encryption"]

        result = forget_customer.execute_in_process(
            resources=resources, instance=instance, tags={"dagster/user": "dpo@example.com"},
            run_config={"ops": {"forget": {"config": {"customer_id": person["id"]}}}})
        assert result.success
        (audit,) = [e.materialization for e in result.get_asset_materialization_events()
                    if e.asset_key == ERASURE_LOG]
        meta = {k: v.value for k, v in audit.metadata.items()}
        assert meta["by"] == "dpo@example.com" and meta["keys_destroyed"] == 1 and meta["checkpoints_covered"] >= 1
        assert meta["rows_removed"]["silver/customers"] == 1 and meta["rows_removed"]["serving.dim_customer"] == 1
        assert not personal & {str(v) for v in meta.values()} and "customer_id" not in meta

        again = forget_customer.execute_in_process(
            resources=resources, instance=instance, raise_on_error=False,
            run_config={"ops": {"forget": {"config": {"customer_id": person["id"]}}}})
        assert not again.success and "unknown id, or already forgotten" in str(
            again.get_step_failure_events()[0].step_failure_data.error)

    files = lake_contents(lake)
    leaked = [(path, value) for path, data in files.items() for value in personal if value.encode() in data]
    assert not leaked, f"personal values still in the lake: {leaked[:3]}"
    assert not any(key in data for key in destroyed for data in files.values()), "a destroyed key is still stored"
    assert person["id"] not in warehouse.query("SELECT customer_key FROM serving.dim_customer")["customer_key"] \
        .to_pylist()
    for layer, table, column in (("silver", "customers", "id"), ("gold", "dim_customer", "customer_key")):
        assert person["id"] not in lake.read_partition(layer, table, day)[column].to_pylist(), layer

    drop(db, "customers")  # the checkpoint taken before the erasure, restored afterwards
    outcome = restore(store, db, plan_restore(store, "customers"))
    assert "1 erased" in outcome.fingerprint
    after = rows_as_stored(db, "customers")
    forgotten = tuple(None if c in PERSONAL else person[c] for c in columns)
    assert sorted(after, key=repr) == sorted([r for r in before if r[0] != person["id"]] + [forgotten], key=repr)
    assert not any(value in str(row) for row in after for value in personal)


def test_without_an_erasure_a_sealed_checkpoint_restores_every_value_with_the_full_fingerprint(tmp_path):
    from platform_assets.layers.generators import generate
    from platform_assets.layers.tables import SOURCE_TABLES

    resources = embedded_resources(tmp_path, 400)
    db, store = resources["source_db"], resources["checkpoints"]
    for day in last_days(2):  # the source systems deliver two days of customers
        db.replace_day("customers", SOURCE_TABLES["customers"].day_column, day, generate("customers", day, 400))
    manifest = store.write(db, "customers")
    before = rows_as_stored(db, "customers")
    assert manifest["sealed"] and store.verify("customers", manifest["id"], "deep").ok
    drop(db, "customers")
    outcome = restore(store, db, plan_restore(store, "customers"))
    assert outcome.fingerprint == manifest["fingerprint"]["value"] and rows_as_stored(db, "customers") == before


@pytest.mark.parametrize("spec, says", [("customers:id", "is not `table:subject_column"),
                                        ("customers:nope:email", "has no column nope")])
def test_a_wrong_subject_configuration_is_a_clear_error(tmp_path, monkeypatch, spec, says):
    from resources.subjects import SealingError

    resources = embedded_resources(tmp_path, 200)
    with dg.DagsterInstance.ephemeral() as instance:
        run_graph(resources, last_days(1), instance, selection=dg.AssetSelection.assets(["source", "customers"]))
    monkeypatch.setenv("AEGIS_SUBJECT_TABLES", spec)
    with pytest.raises(SealingError, match=says):
        resources["checkpoints"].write(resources["source_db"], "customers")


def test_on_postgresql_a_destroyed_key_leaves_the_person_without_personal_values_and_the_rest_exact(
        tmp_path, make_pg_database):
    from resources import CheckpointStore, Lake, SourceDatabase
    from tests.test_checkpoints import fill

    db = SourceDatabase(url=make_pg_database("erasure"))
    fill(db, rows=800, tables=["customers"])
    store = CheckpointStore(lake=Lake(url=f"file://{tmp_path}/lake"), encryption_key="")
    manifest = store.write(db, "customers")
    before = rows_as_stored(db, "customers")  # each row as the server prints it: t::text
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(db.parsed.location) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, (t.id, t.signup_date, NULL, NULL, NULL, NULL, t.city, t.state)::text, t::text "
                    "FROM customers t WHERE email IS NOT NULL ORDER BY id LIMIT 1")
        subject, erased_text, original_text = cur.fetchone()
    assert SubjectKeys(store.lake).destroy("customers", str(subject)) == 1
    drop(db, "customers")
    outcome = restore(store, db, plan_restore(store, "customers", checkpoint_id=manifest["id"]))
    assert "1 erased" in outcome.fingerprint
    assert rows_as_stored(db, "customers") == sorted([r for r in before if r != original_text] + [erased_text])

"""Users choose what is protected: AEGIS_PROTECTED_TABLES (names, schema.table, patterns, -exclusions)
resolved against the real database, one checkpoint and one recovery asset per table, and the watch sensor
restores any of them."""

import subprocess

import dagster as dg
import pytest

from platform_assets.protection import checkpoints, recovery
from platform_assets.protection.protected import resolve
from resources import CheckpointStore, Lake, RecoveryPolicy, SourceDatabase
from resources.databases.consistency_groups import ConsistencyGroup
from resources.databases.table_refs import TableRef, resolve_protected, safe_component
from sensors.jobs import recovery_job
from sensors.source_watch import build_source_watch
from tests.conftest import schema_as_dumped

SCHEMA = """
CREATE SCHEMA ops;
CREATE TABLE public.orders (id int PRIMARY KEY, total numeric(12,2));
CREATE TABLE public.tmp_scratch (x int);
CREATE TABLE public."Order Items" (id int PRIMARY KEY, order_id int REFERENCES public.orders(id), sku uuid);
CREATE TABLE ops.jobs (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, spec jsonb);
INSERT INTO public.orders VALUES (1, 10.50), (2, 3.33);
INSERT INTO public."Order Items" VALUES (1, 1, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11');
INSERT INTO ops.jobs (spec) VALUES ('{"a": 1}'), ('[]');
"""


@pytest.fixture
def user_db(make_pg_database):
    url = make_pg_database("protected")
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", SCHEMA], check=True)
    return url


def test_patterns_exclusions_and_schemas_resolve_to_the_right_tables(user_db, tmp_path):
    found = resolve(user_db, "public.*,-public.tmp_*,ops.jobs", lake_url=f"file://{tmp_path}/lake")[0].tables
    assert {(t.schema, t.name) for t in found} >= {(None, "orders"), (None, "Order Items"), ("ops", "jobs")}
    assert not [t for t in found if t.name == "tmp_scratch"], "excluded by -public.tmp_*"
    ids = {t.id for t in found}
    assert {"orders", "ops/jobs", safe_component("Order Items")} <= ids
    assert all(part.replace("_", "").isalnum() for i in ids for part in i.split("/")), "safe keys and paths"


def test_a_named_table_that_does_not_exist_is_protected_and_said_never_a_load_error(user_db, tmp_path):
    resolution, groups = resolve(user_db, "orders,ops.missing,archive_*", lake_url=f"file://{tmp_path}/lake")
    assert [t.label for t in resolution.tables] == ["orders", "ops.missing"], "named: protected, there or not"
    assert resolution.empty_patterns == ["archive_*"]
    (note,) = resolution.notes
    assert "'ops.missing'" in note and "no table ops.missing" in note and "no checkpoint" in note
    assert {g.members for g in groups} == {(TableRef(None, "orders"),), (TableRef("ops", "missing", False),)}


def test_a_pattern_keeps_the_dropped_tables_it_matched_while_they_have_checkpoints():
    live = {("main", "orders_b"), ("main", "other")}
    kept = {("main", "orders_a"), ("main", "orders_b"), ("main", "old_stuff")}
    resolution = resolve_protected("orders_*,-orders_tmp", live, "main", kept)
    assert [t.name for t in resolution.tables] == ["orders_a", "orders_b"], "orders_a is dropped, not forgotten"
    assert [t.name for t in resolution.retired] == ["old_stuff"], "checkpoints but no longer configured"
    unreachable = resolve_protected("orders_*,ledger", None, "main", kept)
    assert [t.name for t in unreachable.tables] == ["orders_a", "orders_b", "ledger"]
    assert unreachable.notes == [], "with the database unreachable, nothing can be said missing"


def test_quoted_names_with_dots_and_case_are_kept_exactly():
    existing = {("main", "a.b"), ("main", "Sales"), ("main", "sales")}
    found = resolve_protected('"a.b",Sales', existing, "main").tables
    assert [(t.name, t.sql) for t in found] == [("a.b", '"a.b"'), ("Sales", '"Sales"')]


def test_a_dropped_protected_table_in_another_schema_is_restored_by_the_sensor(user_db, tmp_path):
    db = SourceDatabase(url=user_db)
    store = CheckpointStore(lake=Lake(url=f"file://{tmp_path}/lake"), encryption_key="")
    jobs, items = TableRef("ops", "jobs", default_schema=False), TableRef(None, "Order Items")
    resources = {"source_db": db, "checkpoints": store, "recovery_policy": RecoveryPolicy()}
    groups = [ConsistencyGroup((jobs,)), ConsistencyGroup((items,))]
    assets = [checkpoints.checkpoint_assets(group) for group in groups]
    assets += [recovery.recovery_assets(group) for group in groups]
    with dg.DagsterInstance.ephemeral() as instance:
        assert dg.materialize(assets[:2], instance=instance, resources=resources).success
        before = {ref.sql: schema_as_dumped(db, ref.sql) for ref in (jobs, items)}
        subprocess.run(["psql", "-X", "-q", "-d", user_db, "-c", 'DROP TABLE ops.jobs'], check=True)
        sensor = build_source_watch([jobs, items], recovery_job, RecoveryPolicy())
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            result = sensor.evaluate_tick(context)
        (request,) = result.run_requests
        assert request.asset_selection == [dg.AssetKey(["recovery", "ops", "jobs"])]
        run = dg.materialize(assets, instance=instance, resources=resources, selection=request.asset_selection,
                             tags=request.tags)
        assert run.success
        assert {ref.sql: schema_as_dumped(db, ref.sql) for ref in (jobs, items)} == before


def checkpoint_groups(groups, resources) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        assets = [checkpoints.checkpoint_assets(group) for group in groups]
        assert dg.materialize(assets, instance=instance, resources=resources).success


def test_what_is_protected_and_grouped_does_not_depend_on_the_tables_still_being_there(user_db, tmp_path):
    """The code location is loaded again after every loss (each run is a new process): the protected set and the
    groups must come out the same after a DROP … CASCADE, after every table is gone, and with the database down."""
    lake = f"file://{tmp_path}/lake"
    spec = 'orders,"Order Items",ops.*'
    db = SourceDatabase(url=user_db)
    store = CheckpointStore(lake=Lake(url=lake), encryption_key="")
    loaded = resolve(user_db, spec, lake_url=lake)
    (group,) = [g for g in loaded[1] if len(g.members) > 1]
    assert {m.name for m in group.members} == {"orders", "Order Items"}, "joined by the foreign key"
    checkpoint_groups(loaded[1], {"source_db": db, "checkpoints": store, "recovery_policy": RecoveryPolicy()})

    subprocess.run(["psql", "-X", "-q", "-d", user_db, "-c", "DROP TABLE orders CASCADE"], check=True)
    assert resolve(user_db, spec, lake_url=lake) == loaded, "the foreign key the CASCADE removed is remembered"
    subprocess.run(["psql", "-X", "-q", "-d", user_db, "-c", 'DROP TABLE "Order Items"; DROP SCHEMA ops CASCADE'],
                   check=True)
    gone = resolve(user_db, spec, lake_url=lake)
    assert gone == loaded, "every table gone: all still protected, as one group where they were one"
    assert not gone[0].notes, gone[0].notes

    down = resolve("postgresql://postgres@127.0.0.1:9/nothing", spec, lake_url=lake)
    assert (down[0].tables, down[1]) == (loaded[0].tables, loaded[1]), "the database down: the code location loads"
    assert any("could not be asked" in n for n in down[0].notes)


def test_a_table_whose_schema_was_dropped_comes_back_with_its_schema(user_db, tmp_path):
    db = SourceDatabase(url=user_db)
    jobs = TableRef("ops", "jobs", default_schema=False)
    group = ConsistencyGroup((jobs,))
    resources = {"source_db": db, "checkpoints": CheckpointStore(lake=Lake(url=f"file://{tmp_path}/lake"),
                                                                 encryption_key=""),
                 "recovery_policy": RecoveryPolicy()}
    before = schema_as_dumped(db, jobs.sql)
    with dg.DagsterInstance.ephemeral() as instance:
        assert dg.materialize([checkpoints.checkpoint_assets(group)], instance=instance, resources=resources).success
        subprocess.run(["psql", "-X", "-q", "-d", user_db, "-c", "DROP SCHEMA ops CASCADE"], check=True)
        run = dg.materialize([recovery.recovery_assets(group)], instance=instance, resources=resources)
        assert run.success
        (event,) = [e for e in run.get_asset_materialization_events()
                    if e.asset_key == dg.AssetKey(["recovery", "ops", "jobs"])]
        assert any("schema ops did not exist" in w for w in event.materialization.metadata["schema_warnings"].value)
    assert schema_as_dumped(db, jobs.sql) == before


def test_a_retired_table_takes_no_new_checkpoint_and_its_checkpoints_expire_with_retention(tmp_path):
    import datetime as dt

    from platform_assets.layers.generators import generate
    from platform_assets.layers.tables import SOURCE_TABLES
    from resources.checkpoints.format import new_checkpoint_id

    db = SourceDatabase(url=f"sqlite:///{tmp_path}/s.db")
    db.replace_day("sales", SOURCE_TABLES["sales"].day_column, "2026-06-01", generate("sales", "2026-06-01", 200))
    store = CheckpointStore(lake=Lake(url=f"file://{tmp_path}/lake"), encryption_key="")
    now = dt.datetime.now(dt.UTC)
    old = store.write(db, "sales", new_checkpoint_id(now - dt.timedelta(days=9)))["id"]
    recent = store.write(db, "sales", new_checkpoint_id(now - dt.timedelta(days=1)))["id"]
    retired = checkpoints.checkpoint_assets(ConsistencyGroup((TableRef(None, "sales"),), retired=True))
    resources = {"source_db": db, "checkpoints": store, "recovery_policy": RecoveryPolicy()}
    with dg.DagsterInstance.ephemeral() as instance:
        assert dg.materialize([retired], instance=instance, resources=resources).success
        assert store.list("sales") == [recent], f"{old} expired although it was the oldest of two"
        week = {"ops": {"checkpoints__sales": {"config": {"keep_days": 0}}}}
        assert dg.materialize([retired], instance=instance, resources=resources, run_config=week).success
    assert store.list("sales") == [], "the newest goes too: a retired table leaves with its last checkpoint"


def run_log(instance, result) -> str:
    return " ".join(e.user_message for e in instance.all_logs(result.run_id))


def test_the_hourly_checkpoint_on_a_fresh_install_succeeds_saying_which_tables_do_not_exist_yet(tmp_path):
    from platform_assets.layers.generators import generate
    from platform_assets.layers.tables import SOURCE_TABLES
    from sensors.alerts import build_alert_sensor

    db = SourceDatabase(url=f"sqlite:///{tmp_path}/fresh.db")  # nothing generated yet
    store = CheckpointStore(lake=Lake(url=f"file://{tmp_path}/lake"), encryption_key="")
    resources = {"source_db": db, "checkpoints": store, "recovery_policy": RecoveryPolicy()}
    groups = [ConsistencyGroup((TableRef(None, t),)) for t in ("sales", "customers")]
    assets = [checkpoints.checkpoint_assets(g) for g in groups]
    with dg.DagsterInstance.ephemeral() as instance:
        fresh = dg.materialize(assets, instance=instance, resources=resources)
        assert fresh.success and not fresh.get_asset_materialization_events(), "nothing to checkpoint: no failure"
        logged = run_log(instance, fresh)
        assert "sales does not exist yet" in logged and "customers does not exist yet" in logged

        db.replace_day("sales", SOURCE_TABLES["sales"].day_column, "2026-06-01", generate("sales", "2026-06-01", 100))
        db.replace_day("customers", SOURCE_TABLES["customers"].day_column, "2026-06-01",
                       generate("customers", "2026-06-01", 100))
        assert dg.materialize(assets, instance=instance, resources=resources).success
        with db.connect() as conn, conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS sales")
            conn.commit()
        hourly = dg.materialize(assets, instance=instance, resources=resources)
        assert hourly.success, "a lost table is the watch sensor's to restore, not an hourly failure"
        assert [e.asset_key for e in hourly.get_asset_materialization_events()] == [
            dg.AssetKey(["checkpoints", "customers"])]
        assert "sales is missing: not checkpointed this time" in run_log(instance, hourly)
        alerts = build_alert_sensor([dg.AssetKey(["checkpoints", "sales"])])
        with dg.build_sensor_context(instance=instance) as context:
            assert not alerts.evaluate_tick(context).run_requests
        assert not [r for r in instance.get_runs() if r.status != dg.DagsterRunStatus.SUCCESS], "no failed run"

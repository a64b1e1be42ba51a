"""Tables linked by foreign keys (or listed in AEGIS_CONSISTENCY_GROUPS) are checkpointed from one snapshot and
restored together without orphans, on the real PostgreSQL and on SQLite, although another application writes
between the two tables' reads; a table restored alone says when its partners are newer."""

import sqlite3
import subprocess

import dagster as dg
import pytest

from platform_assets.protection import checkpoints, recovery
from platform_assets.protection.protected import resolve
from resources import CheckpointStore, Lake, RecoveryPolicy, SourceDatabase
from resources.databases import sqlite_tables as lite
from resources.databases import table_capture
from resources.databases.consistency_groups import ConsistencyGroupError, build_groups
from resources.databases.table_refs import TableRef
from sensors.jobs import recovery_job
from sensors.source_watch import build_source_watch
from tests.conftest import rows_as_stored, schema_as_dumped

PG_SCHEMA = """
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                     customer_id int NOT NULL REFERENCES customers(id), total numeric(12,2));
CREATE TABLE audit (id int);
INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 50) g;
INSERT INTO orders (customer_id, total) SELECT 1 + g % 50, g * 1.25 FROM generate_series(1, 400) g;
"""
# committed by "the application" between the read of the first table and the read of the second: a new
# customer with an order, and a customer removed with its orders — either read order would leave orphans
PG_WRITES = """
INSERT INTO customers VALUES (1000, 'new');
INSERT INTO orders (customer_id, total) VALUES (1000, 9.99);
DELETE FROM orders WHERE customer_id = 7; DELETE FROM customers WHERE id = 7;
"""
SQLITE_SCHEMA = """
PRAGMA journal_mode = WAL;
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE orders (id INTEGER PRIMARY KEY AUTOINCREMENT, customer_id INTEGER NOT NULL REFERENCES customers(id),
                     total);
WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 50)
INSERT INTO customers SELECT n, 'c' || n FROM g;
WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 400)
INSERT INTO orders (customer_id, total) SELECT 1 + n % 50, n * 1.25 FROM g;
"""
SQLITE_WRITES = """
INSERT INTO customers VALUES (1000, 'new');
INSERT INTO orders (customer_id, total) VALUES (1000, 9.99);
DELETE FROM orders WHERE customer_id = 7; DELETE FROM customers WHERE id = 7;
"""
ORPHANS = "SELECT count(*) FROM orders o WHERE NOT EXISTS (SELECT 1 FROM customers c WHERE c.id = o.customer_id)"


def test_foreign_keys_and_listed_groups_join_tables_and_order_parents_first():
    a, b, c, d = (TableRef(None, n) for n in ("orders", "customers", "items", "logs"))
    links = [(("main", "items"), ("main", "orders")), (("main", "orders"), ("main", "customers")),
             (("main", "orders"), ("main", "not_protected"))]
    groups = build_groups([a, b, c, d], links, None, "main")
    assert [[m.name for m in g.members] for g in groups] == [["orders", "customers", "items"], ["logs"]]
    assert [m.name for m in groups[0].completion_order([c, a, b])] == ["customers", "orders", "items"]
    listed = build_groups([a, b, c, d], [], "orders+logs; items + customers", "main")
    assert [[m.name for m in g.members] for g in listed] == [["orders", "logs"], ["customers", "items"]]
    with pytest.raises(ConsistencyGroupError, match="'orders'.*one table"):
        build_groups([a, b], [], "orders", "main")
    with pytest.raises(ConsistencyGroupError, match="'nope'.*not a protected table"):
        build_groups([a, b], [], "orders+nope", "main")


def writes_between_reads(monkeypatch, module, name: str, write) -> list[str]:
    """Run `write` (another application's committed transaction) right after the first table is read."""
    read, order = getattr(module, name), []

    def reading(*args, **kwargs):
        yield from read(*args, **kwargs)
        order.append("read")
        if len(order) == 1:
            write()

    monkeypatch.setattr(module, name, reading)
    return order


@pytest.fixture(params=["postgres", "sqlite"])
def linked(request, make_pg_database, tmp_path, monkeypatch):
    """A database with customers ← orders, and a switch that makes another application commit writes right
    after the first table is read (returns the list of reads)."""
    if request.param == "postgres":
        url = make_pg_database("groups")
        psql = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c"]
        subprocess.run([*psql, PG_SCHEMA], check=True)
        db = SourceDatabase(url=url)
        return db, lambda: writes_between_reads(monkeypatch, table_capture, "_stream_postgres",
                                                lambda: subprocess.run([*psql, PG_WRITES], check=True))
    path = tmp_path / "linked.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(SQLITE_SCHEMA)

    def write():
        with sqlite3.connect(path) as conn:
            conn.executescript(SQLITE_WRITES)

    return SourceDatabase(url=f"sqlite:///{path}"), lambda: writes_between_reads(monkeypatch, lite, "read_batches",
                                                                                 write)


def orphans(db: SourceDatabase) -> int:
    with db.connect() as conn, conn.cursor() as cur:
        cur.execute(ORPHANS)
        return cur.fetchone()[0]


def drop(db: SourceDatabase, *tables: str) -> None:
    with db.connect() as conn, conn.cursor() as cur:
        for table in tables:
            cur.execute(f"DROP TABLE {table}" + (" CASCADE" if db.kind == "postgres" else ""))
        conn.commit()


def test_a_group_checkpointed_while_the_application_writes_restores_together_without_orphans(linked, tmp_path):
    db, application_writes = linked
    reads = application_writes()
    resolution, groups = resolve(db.url, "customers,orders,audit" if db.kind == "postgres" else "customers,orders",
                                 lake_url=f"file://{tmp_path}/lake")
    (group,) = [g for g in groups if len(g.members) > 1]
    assert {m.name for m in group.members} == {"customers", "orders"}, "found by the foreign key"
    store = CheckpointStore(lake=Lake(url=f"file://{tmp_path}/lake"), encryption_key="")
    resources = {"source_db": db, "checkpoints": store, "recovery_policy": RecoveryPolicy()}
    before = {t: rows_as_stored(db, t) for t in ("customers", "orders")}
    schema = {t: schema_as_dumped(db, t) for t in ("customers", "orders")} if db.kind == "postgres" else None
    with dg.DagsterInstance.ephemeral() as instance:
        taken = dg.materialize([checkpoints.checkpoint_assets(group)], instance=instance, resources=resources)
        assert taken.success and reads == ["read", "read"]
        assert orphans(db) == 0 and rows_as_stored(db, "customers") != before["customers"], "the writes landed"
        ids = {store.list(t)[-1] for t in ("customers", "orders")}
        assert len(ids) == 1, "one snapshot, one checkpoint id"

        drop(db, "orders", "customers")
        keys = [dg.AssetKey(["recovery", t]) for t in ("customers", "orders")]
        run = dg.materialize([recovery.recovery_assets(group)], instance=instance, resources=resources,
                             selection=keys)
        assert run.success
    assert {t: rows_as_stored(db, t) for t in ("customers", "orders")} == before, "both as of one moment"
    assert orphans(db) == 0
    if db.kind == "postgres":
        assert {t: schema_as_dumped(db, t) for t in ("customers", "orders")} == schema, "the FK came back validated"
    else:
        with sqlite3.connect(db.parsed.location) as conn:
            assert conn.execute("PRAGMA foreign_key_check").fetchall() == []


def protect_both(db: SourceDatabase, tmp_path) -> tuple:
    """customers and orders protected (one group, by their foreign key), with the resources of a run."""
    _, groups = resolve(db.url, "customers,orders", lake_url=f"file://{tmp_path}/lake")
    (group,) = groups
    store = CheckpointStore(lake=Lake(url=f"file://{tmp_path}/lake"), encryption_key="")
    return group, {"source_db": db, "checkpoints": store, "recovery_policy": RecoveryPolicy()}


def test_a_table_restored_alone_warns_that_its_partner_is_newer(linked, tmp_path):
    db, _ = linked
    group, resources = protect_both(db, tmp_path)
    with dg.DagsterInstance.ephemeral() as instance:
        assert dg.materialize([checkpoints.checkpoint_assets(group)], instance=instance, resources=resources).success
        with db.connect() as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO customers VALUES (2000, 'later')")
            cur.execute("INSERT INTO orders (customer_id, total) VALUES (2000, 1.00)")
            conn.commit()
        drop(db, "customers")  # PostgreSQL's CASCADE also drops the foreign key of orders
        run = dg.materialize([recovery.recovery_assets(group)], instance=instance, resources=resources,
                             selection=[dg.AssetKey(["recovery", "customers"])])
        assert run.success
        (event,) = [e for e in run.get_asset_materialization_events()
                    if e.asset_key == dg.AssetKey(["recovery", "customers"])]
        warnings = event.materialization.metadata["schema_warnings"].value
    assert any("orders (same consistency group) has changed since checkpoint" in w for w in warnings), warnings
    assert orphans(db) == 1, "orders kept its newer row, whose customer the checkpoint does not hold"
    if db.kind == "postgres":
        assert any("NOT VALID" in w for w in warnings), warnings


def test_the_watch_restores_a_group_lost_at_once_in_one_run(linked, tmp_path):
    db, _ = linked
    group, resources = protect_both(db, tmp_path)
    assets = [checkpoints.checkpoint_assets(group), recovery.recovery_assets(group)]
    before = {t: rows_as_stored(db, t) for t in ("customers", "orders")}
    with dg.DagsterInstance.ephemeral() as instance:
        assert dg.materialize(assets[:1], instance=instance, resources=resources).success
        drop(db, "orders", "customers")
        sensor = build_source_watch(list(group.members), recovery_job, RecoveryPolicy(), groups=[group])
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            (request,) = sensor.evaluate_tick(context).run_requests
        assert set(request.asset_selection) == {dg.AssetKey(["recovery", t]) for t in ("customers", "orders")}
        assert dg.materialize(assets, instance=instance, resources=resources, selection=request.asset_selection,
                              tags=request.tags).success
    assert {t: rows_as_stored(db, t) for t in ("customers", "orders")} == before
    assert orphans(db) == 0

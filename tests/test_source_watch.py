"""source_table_watch on a real Dagster instance: one restore per loss, never for a fresh install."""

from pathlib import Path

import dagster as dg
import pytest

from platform_assets.layers.generators import generate
from platform_assets.layers.tables import SOURCE_TABLES
from platform_assets.protection import loaded as protection
from resources import CheckpointStore, Lake, RecoveryPolicy, SourceDatabase
from resources.databases.table_refs import TableRef
from sensors.jobs import recovery_job
from sensors.source_watch import build_source_watch

DAY = "2026-06-01"
TABLES = ["sales", "customers"]


@pytest.fixture
def world(tmp_path):
    db = SourceDatabase(url=f"sqlite:///{tmp_path}/s.db")
    store = CheckpointStore(lake=Lake(url=f"file://{tmp_path}/lake"), encryption_key="")
    for name in TABLES:
        db.replace_day(name, SOURCE_TABLES[name].day_column, DAY, generate(name, DAY, 800))
    with dg.DagsterInstance.ephemeral() as instance:
        yield db, store, instance


class Ticker:
    """Evaluates the sensor tick after tick, carrying the cursor as the daemon does."""

    def __init__(self, db, store, instance, policy: RecoveryPolicy | None = None):
        self.sensor = build_source_watch([TableRef(None, t) for t in TABLES], recovery_job, policy or RecoveryPolicy())
        self.db, self.store, self.instance, self.cursor = db, store, instance, None

    def tick(self):
        with dg.build_sensor_context(instance=self.instance, cursor=self.cursor,
                                     resources={"source_db": self.db, "checkpoints": self.store}) as context:
            result = self.sensor.evaluate_tick(context)
        self.cursor = result.cursor or context.cursor
        return result


def drop(db, table):
    with db.connect() as conn, conn.cursor() as cur:
        cur.execute(f'DROP TABLE "{table}"')
        conn.commit()


def test_tables_without_a_checkpoint_are_not_a_loss(world):
    db, store, instance = world
    drop(db, "sales")
    result = Ticker(db, store, instance).tick()
    assert result.run_requests == []
    assert "sales: no checkpoint yet" in result.skip_message


def test_present_tables_are_skipped(world):
    db, store, instance = world
    for table in TABLES:
        store.write(db, table)
    result = Ticker(db, store, instance).tick()
    assert result.run_requests == [] and "all 2 protected tables present" in result.skip_message


def test_a_missing_table_gets_exactly_one_restore_request_across_ticks(world):
    db, store, instance = world
    for table in TABLES:
        store.write(db, table)
    ticker = Ticker(db, store, instance)
    assert ticker.tick().run_requests == []
    drop(db, "sales")
    requests = [r for _ in range(4) for r in ticker.tick().run_requests]
    assert len(requests) == 1
    (request,) = requests
    assert request.asset_selection == [dg.AssetKey(["recovery", "sales"])]
    assert request.run_key == "restore-sales-loss-1"
    assert request.tags["aegis/trigger"] == "source_table_watch" and request.tags["aegis/detected_at"]


def test_a_table_dropped_again_after_its_restore_is_a_new_loss(world):
    db, store, instance = world
    manifest = store.write(db, "sales")
    store.write(db, "customers")
    ticker = Ticker(db, store, instance)
    ticker.tick()
    drop(db, "sales")
    assert [r.run_key for r in ticker.tick().run_requests] == ["restore-sales-loss-1"]
    from platform_assets.protection.restoring import plan_restore, restore

    restore(store, db, plan_restore(store, "sales", manifest["id"]))
    assert ticker.tick().run_requests == []
    drop(db, "sales")
    assert [r.run_key for r in ticker.tick().run_requests] == ["restore-sales-loss-2"]


def test_a_failed_restore_run_is_requested_again_while_the_table_stays_lost(world):
    db, store, instance = world
    for table in TABLES:
        store.write(db, table)
    ticker = Ticker(db, store, instance)
    drop(db, "sales")
    (first,) = ticker.tick().run_requests
    assert ticker.tick().run_requests == [], "no second request while the first restore is pending"
    # the restore really runs, and really fails: its only checkpoint is corrupted
    (part,) = (store.lake.filesystem()[1] / Path("checkpoints/sales")).glob("*/part-*.parquet")
    part.write_bytes(part.read_bytes()[:-50])
    result = run_request(first, db, store, instance)
    assert not result.success
    (retry,) = ticker.tick().run_requests
    assert retry.run_key == "restore-sales-loss-1-retry-1"


def test_a_shrunken_table_raises_an_alert_and_is_restored_only_when_configured(world):
    db, store, instance = world
    for table in TABLES:
        store.write(db, table)
    with db.connect() as conn, conn.cursor() as cur:
        cur.execute('DELETE FROM "sales" WHERE id % 10 <> 0')  # 90 % of the rows gone
        conn.commit()
    result = Ticker(db, store, instance).tick()
    assert result.run_requests == [] and "sales: shrunk to" in result.skip_message
    eager = Ticker(db, store, instance, RecoveryPolicy(restore_on_shrink=True))
    assert [r.run_key for r in eager.tick().run_requests] == ["restore-sales-shrink-1"]
    assert eager.tick().run_requests == []


def test_a_shrunken_table_restored_by_the_sensor_is_kept_aside_with_every_remaining_row(world):
    db, store, instance = world
    manifest = store.write(db, "sales")
    store.write(db, "customers")
    with db.connect() as conn, conn.cursor() as cur:
        cur.execute('DELETE FROM "sales" WHERE id % 10 <> 0')
        conn.commit()
    shrunk = rows_of(db, "sales")
    (request,) = Ticker(db, store, instance, RecoveryPolicy(restore_on_shrink=True)).tick().run_requests
    result = run_request(request, db, store, instance, RecoveryPolicy(restore_on_shrink=True))
    assert result.success
    assert db.count("sales") == manifest["rows"], "the table is back to its checkpoint"
    (aside,) = [t for t in db.tables() if t.startswith("sales__replaced_")]
    assert rows_of(db, aside) == shrunk, "the shrunk table is kept aside, row for row"
    (entry,) = store.audit_log("sales")
    assert entry["trigger"] == "source_table_watch" and entry["kept_aside"]["table"] == aside
    assert entry["kept_aside"]["rows"] == len(shrunk)


def rows_of(db, table) -> list:
    with db.connect() as conn, conn.cursor() as cur:
        cur.execute(f'SELECT * FROM "{table}" ORDER BY id')
        return cur.fetchall()


def run_request(request, db, store, instance, policy: RecoveryPolicy | None = None):
    """Run what the sensor requested, as the daemon would: its selection and its tags."""
    resources = {"source_db": db, "checkpoints": store, "recovery_policy": policy or RecoveryPolicy()}
    return dg.materialize(protection.recoveries, selection=request.asset_selection, instance=instance,
                          tags=request.tags, resources=resources, raise_on_error=False)



def test_a_retired_table_that_goes_missing_is_said_but_not_restored(world):
    db, store, instance = world
    for table in TABLES:
        store.write(db, table)
    sensor = build_source_watch([TableRef(None, "customers")], recovery_job, RecoveryPolicy(),
                                retired=[TableRef(None, "sales")])
    drop(db, "sales")
    with dg.build_sensor_context(instance=instance, resources={"source_db": db, "checkpoints": store}) as context:
        result = sensor.evaluate_tick(context)
    assert result.run_requests == []
    assert "sales: missing, but retired" in result.skip_message and "recovery/sales restores it by hand" in \
        result.skip_message


def test_an_unreachable_database_skips_the_tick_with_the_reason_and_the_watch_goes_on(world, tmp_path):
    db, store, instance = world
    for table in TABLES:
        store.write(db, table)
    ticker = Ticker(db, store, instance)
    ticker.tick()
    remembered = ticker.cursor
    ticker.db = SourceDatabase(url="postgresql://aegis:secret@127.0.0.1:9/source")  # nothing listens there
    result = ticker.tick()
    assert result.run_requests == [] and "cannot look at the protected tables now" in result.skip_message
    assert "AEGIS_SOURCE_URL" in result.skip_message and "secret" not in result.skip_message
    assert ticker.cursor == remembered, "what the watch knew is kept through the outage"
    ticker.db = db
    drop(db, "sales")
    assert [r.run_key for r in ticker.tick().run_requests] == ["restore-sales-loss-1"]

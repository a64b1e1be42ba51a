"""source_table_watch on a real Dagster instance: one restore per loss, never for a fresh install."""

from pathlib import Path

import dagster as dg
import pytest

from platform_assets import recovery
from platform_assets.generators import generate
from platform_assets.tables import SOURCE_TABLES
from resources import CheckpointStore, Lake, SourceDatabase
from sensors.jobs import recovery_job
from sensors.source_watch import WatchSettings, build_source_watch

DAY = "2026-06-01"
TABLES = ["sales", "customers"]


@pytest.fixture
def world(tmp_path):
    db = SourceDatabase(url=f"sqlite:///{tmp_path}/s.db")
    store = CheckpointStore(lake=Lake(url=f"file://{tmp_path}/lake"), encryption_key="")
    for name in TABLES:
        db.replace_day(name, SOURCE_TABLES[name].day_column, DAY, generate(name, DAY, 800))
    with dg.instance_for_test() as instance:
        yield db, store, instance


class Ticker:
    """Evaluates the sensor tick after tick, carrying the cursor as the daemon does."""

    def __init__(self, db, store, instance, settings: WatchSettings | None = None):
        self.sensor = build_source_watch(TABLES, recovery_job, settings or WatchSettings())
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
    from platform_assets.restoring import plan_restore, restore

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
    result = dg.materialize(recovery.assets, selection=first.asset_selection, instance=instance,
                            resources={"source_db": db, "checkpoints": store}, tags=first.tags,
                            raise_on_error=False)
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
    eager = Ticker(db, store, instance, WatchSettings(restore_on_shrink=True))
    assert [r.run_key for r in eager.tick().run_requests] == ["restore-sales-shrink-1"]
    assert eager.tick().run_requests == []


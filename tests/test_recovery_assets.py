"""The checkpoint and recovery assets as a user runs them: through Dagster, with run config. A restore never
discards data: over a present, healthy table it is refused with what would be lost and how to proceed;
replacing keeps the live table aside; a dry run is not a materialisation; any kept checkpoint can be picked
from the restore job's partitions."""

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from platform_assets.protection import loaded as protection
from platform_assets.protection import recovery
from platform_assets.protection.safeguard import aside_name
from resources import CheckpointStore, Lake, RecoveryPolicy, SourceDatabase
from tests.conftest import rows_as_stored
from tests.test_checkpoints import drop, fill, snapshot

ROOT = Path(__file__).resolve().parent.parent
RECOVERY = dg.AssetKey(["recovery", "sales"])


@pytest.fixture(params=["sqlite", "postgres"])
def world(request, tmp_path):
    if request.param == "sqlite":
        db = SourceDatabase(url=f"sqlite:///{tmp_path}/s.db")
    else:
        db = SourceDatabase(url=request.getfixturevalue("make_pg_database")("recovery"))
    store = CheckpointStore(lake=Lake(url=f"file://{tmp_path}/lake"), encryption_key="")
    fill(db, tables=["sales"])
    with dg.DagsterInstance.ephemeral() as instance:
        yield db, store, instance


@pytest.fixture
def sqlite_world(tmp_path):
    db = SourceDatabase(url=f"sqlite:///{tmp_path}/s.db")
    store = CheckpointStore(lake=Lake(url=f"file://{tmp_path}/lake"), encryption_key="")
    fill(db, tables=["sales"])
    with dg.DagsterInstance.ephemeral() as instance:
        yield db, store, instance


def resources(db, store, policy: RecoveryPolicy | None = None) -> dict:
    return {"source_db": db, "checkpoints": store, "recovery_policy": policy or RecoveryPolicy()}


def checkpoint(db, store, instance, **config) -> dg.ExecuteInProcessResult:
    return dg.materialize(protection.checkpoints, instance=instance,
                          selection=dg.AssetSelection.assets(["checkpoints", "sales"]), resources=resources(db, store),
                          run_config={"ops": {"checkpoints__sales": {"config": config}}})


def recover(db, store, instance, policy=None, raise_on_error=True, **config) -> dg.ExecuteInProcessResult:
    return dg.materialize([*protection.recoveries, protection.log], instance=instance, selection=[RECOVERY],
                          resources=resources(db, store, policy), raise_on_error=raise_on_error,
                          run_config={"ops": {"recovery__sales": {"config": config}}})


def metadata(result: dg.ExecuteInProcessResult, key: dg.AssetKey = RECOVERY) -> dict:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    (event,) = result.get_step_failure_events()
    return event.step_failure_data.user_failure_data.description


def write_after_checkpoint(db, rows: int = 3) -> None:
    fill(db, rows=rows, day="2026-06-02", tables=["sales"])


def test_checkpoint_asset_is_verified_by_its_blocking_check(sqlite_world):
    db, store, instance = sqlite_world
    result = checkpoint(db, store, instance)
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed and evaluation.check_name == "checkpoint_verified"
    meta = metadata(result, dg.AssetKey(["checkpoints", "sales"]))
    assert meta["checkpoint_id"] == store.list("sales")[-1] and meta["dagster/row_count"] == snapshot(db, "sales")[0]


def test_checkpoint_check_fails_when_what_was_written_is_damaged(sqlite_world, monkeypatch):
    db, store, instance = sqlite_world
    write = CheckpointStore._write

    def damaging_write(self, path: str, data: bytes) -> None:  # storage that flips bytes after the checksum
        write(self, path, b"garbage" + data[7:] if path.endswith(".parquet") else data)

    monkeypatch.setattr(CheckpointStore, "_write", damaging_write)
    result = dg.materialize(protection.checkpoints, instance=instance,
                            selection=dg.AssetSelection.assets(["checkpoints", "sales"]),
                            resources=resources(db, store), raise_on_error=False)
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed and not result.success, "a blocking check that fails fails its step"
    assert "sha256 differs" in str(evaluation.metadata["problems"].value)


def test_a_restore_over_a_healthy_table_is_refused_and_says_what_would_be_lost_and_how_to_proceed(world):
    db, store, instance = world
    checkpoint(db, store, instance)
    write_after_checkpoint(db, rows=3)
    before = rows_as_stored(db, "sales")

    result = recover(db, store, instance, raise_on_error=False)
    assert not result.success, "the run refuses"
    message = failure_message(result)
    assert f"holds {len(before):,} rows now" in message and f"holds {len(before) - 3:,}" in message
    assert "discard 3 row(s) the checkpoint does not hold" in message
    assert "target_table: sales_restored" in message and "replace_live_table: true" in message
    assert rows_as_stored(db, "sales") == before, "every row is still there"
    assert sorted(db.tables()) == ["sales"], "nothing was created or set aside"
    assert instance.get_latest_materialization_event(RECOVERY) is None, "a refusal is not a restore"
    (observation,) = instance.fetch_observations(RECOVERY, limit=5).records
    assert observation.asset_observation.metadata["rows_lost_by_replacing"].value == 3


def test_a_refusal_stands_and_says_why_even_when_the_checkpoint_is_unreadable(sqlite_world):
    db, store, instance = sqlite_world
    checkpoint(db, store, instance)
    (manifest,) = Path(store.lake.filesystem()[1], "checkpoints/sales").glob("*/manifest.json")
    manifest.write_text(manifest.read_text().replace('"rows"', '"rowz"', 1))
    before = rows_as_stored(db, "sales")
    result = recover(db, store, instance, raise_on_error=False)
    assert not result.success and "Refused to restore sales" in failure_message(result)
    assert rows_as_stored(db, "sales") == before


def test_replace_live_table_restores_and_keeps_the_replaced_table_listed_in_the_recovery_log(world):
    db, store, instance = world
    checkpoint(db, store, instance)
    at_checkpoint = rows_as_stored(db, "sales")
    write_after_checkpoint(db)
    live = rows_as_stored(db, "sales")

    result = recover(db, store, instance, replace_live_table=True)
    meta = metadata(result)
    (aside,) = [t for t in db.tables() if t.startswith("sales__replaced_")]
    assert rows_as_stored(db, "sales") == at_checkpoint
    assert rows_as_stored(db, aside) == live, "the replaced table is still in the database, row for row"
    assert meta["kept_aside"] == aside
    (row,) = meta["recovery_log"].records
    assert row.data["kept aside"].startswith(f"{aside} ({len(live):,} rows, until")
    across = metadata(result, recovery.RECOVERY_LOG)["restores"].records
    assert [r.data["restored"] for r in across] == ["sales"] and across[0].data["kept aside"] == row.data["kept aside"]


def test_a_table_shrunk_below_the_alert_share_is_restored_by_hand_and_kept_aside(sqlite_world):
    db, store, instance = sqlite_world
    checkpoint(db, store, instance)
    with db.connect() as conn, conn.cursor() as cur:
        cur.execute('DELETE FROM "sales" WHERE id % 4 <> 0')
        conn.commit()
    shrunk = rows_as_stored(db, "sales")
    meta = metadata(recover(db, store, instance))
    assert "shrunk" in meta["why"]
    assert rows_as_stored(db, meta["kept_aside"]) == shrunk


def test_materialising_everything_restores_nothing_healthy_says_why_and_keeps_the_run_green(sqlite_world):
    db, store, instance = sqlite_world
    checkpoint(db, store, instance)
    write_after_checkpoint(db)
    before = rows_as_stored(db, "sales")
    defs = dg.Definitions(assets=[*protection.checkpoints, *protection.recoveries, protection.log],
                          resources=resources(db, store))
    everything = defs.resolve_implicit_global_asset_job_def()  # what the UI's Materialize launches
    result = everything.execute_in_process(instance=instance,
                                           asset_selection=[dg.AssetKey(["checkpoints", "sales"]), RECOVERY])
    assert result.success, "a restore swept up with other layers is skipped, not failed"
    assert rows_as_stored(db, "sales") == before
    assert instance.get_latest_materialization_event(RECOVERY) is None
    (observation,) = instance.fetch_observations(RECOVERY, limit=5).records
    assert "Refused to restore sales" in observation.asset_observation.description


def test_a_dry_run_is_an_observation_and_leaves_the_latest_materialisation_unchanged(sqlite_world):
    db, store, instance = sqlite_world
    checkpoint(db, store, instance)
    drop(db, "sales")
    restored = recover(db, store, instance)
    write_after_checkpoint(db)
    before = rows_as_stored(db, "sales")

    dry = recover(db, store, instance, dry_run=True)
    assert dry.success and not dry.get_asset_materialization_events()
    assert instance.get_latest_materialization_event(RECOVERY).run_id == restored.run_id
    assert rows_as_stored(db, "sales") == before, "a dry run changes nothing"
    (observation,) = instance.fetch_observations(RECOVERY, limit=5).records
    assert "would refuse" in observation.asset_observation.description
    plan = observation.asset_observation.metadata["plan"].value.records
    assert [r.data["checkpoint"] for r in plan] == store.list("sales")[::-1]


def test_the_restore_job_lists_each_kept_checkpoint_and_restores_the_picked_one_beside_the_live_table(sqlite_world):
    db, store, instance = sqlite_world
    checkpoint(db, store, instance)
    state_a = snapshot(db, "sales")
    write_after_checkpoint(db, rows=2000)
    checkpoint(db, store, instance)
    state_b = snapshot(db, "sales")
    old, new = store.list("sales")
    assert instance.get_dynamic_partitions("checkpoints_sales") == [old, new]

    defs = dg.Definitions(assets=[*protection.recoveries, protection.log], jobs=protection.restore_jobs,
                          resources=resources(db, store))
    job = defs.resolve_job_def("restore_sales")
    launchpad = job.partitioned_config.get_run_config_for_partition_key(old)  # what the launchpad pre-fills
    launchpad["ops"]["recovery__sales"]["config"]["target_table"] = "sales_before"  # the one thing typed
    result = job.execute_in_process(instance=instance, partition_key=old, run_config=launchpad)
    assert metadata(result)["checkpoint_id"] == old
    assert snapshot(db, "sales_before") == state_a and snapshot(db, "sales") == state_b


def test_every_kept_checkpoint_is_listed_with_rows_bytes_verification_and_retention(sqlite_world):
    db, store, instance = sqlite_world
    for _ in range(3):
        result = checkpoint(db, store, instance, keep_last=2, keep_days=0)
    kept = store.list("sales")
    assert len(kept) == 2
    listed = metadata(result, dg.AssetKey(["checkpoints", "sales"]))["kept_checkpoints"].records
    assert [r.data["checkpoint"] for r in listed] == kept[::-1]
    newest = store.manifest("sales", kept[-1])
    assert listed[0].data["rows"] == newest["rows"] and listed[0].data["bytes"] == newest["files"][0]["bytes"]
    assert all(r.data["retention"].startswith("kept") for r in listed)
    assert listed[0].data["verification"].startswith("full: passed")
    assert instance.get_dynamic_partitions("checkpoints_sales") == kept, "expired checkpoints leave the list"


def test_tables_set_aside_are_dropped_by_retention_after_the_kept_days(sqlite_world):
    db, store, instance = sqlite_world
    now = dt.datetime.now(dt.UTC)
    old, young = aside_name("sales", now - dt.timedelta(days=8)), aside_name("sales", now - dt.timedelta(days=1))
    with db.connect() as conn, conn.cursor() as cur:
        for name in (old, young):
            cur.execute(f'CREATE TABLE "{name}" (id INTEGER)')
        conn.commit()
    meta = metadata(checkpoint(db, store, instance), dg.AssetKey(["checkpoints", "sales"]))
    assert meta["replaced_tables_dropped"] == [old] and meta["replaced_tables_kept"] == [young]
    assert old not in db.tables() and young in db.tables()


def test_recovery_by_as_of_and_into_a_target_table(sqlite_world):
    db, store, instance = sqlite_world
    checkpoint(db, store, instance)
    state_a = snapshot(db, "sales")
    between = dt.datetime.now(dt.UTC)
    write_after_checkpoint(db, rows=2000)
    checkpoint(db, store, instance)
    state_b = snapshot(db, "sales")
    old, new = store.list("sales")

    meta = metadata(recover(db, store, instance, as_of=between.isoformat(), target_table="sales_before"))
    assert meta["checkpoint_id"] == old and meta["target_table"] == "sales_before"
    assert snapshot(db, "sales_before") == state_a and snapshot(db, "sales") == state_b

    drop(db, "sales")
    meta = metadata(recover(db, store, instance))
    assert meta["checkpoint_id"] == new and snapshot(db, "sales") == state_b
    assert [r.data["trigger"] for r in meta["recovery_log"].records] == ["manual", "manual"]
    assert [e["checkpoint_id"] for e in store.audit_log("sales")] == [new, old]


@pytest.mark.parametrize("config, message", [
    ({"checkpoint_id": "../../etc"}, "invalid checkpoint id"),
    ({"as_of": "last tuesday"}, "not an ISO 8601 time"),
    ({"target_table": "x; DROP TABLE sales"}, "invalid target table name"),
])
def test_bad_recovery_config_is_refused_with_a_clear_error(sqlite_world, config, message):
    db, store, instance = sqlite_world
    checkpoint(db, store, instance)
    before = snapshot(db, "sales")
    with pytest.raises(Exception, match=message):
        recover(db, store, instance, **config)
    assert snapshot(db, "sales") == before


def test_the_disaster_recovery_drill_passes_with_the_real_daemon(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AEGIS_", "DAGSTER_HOME"))}
    result = subprocess.run([sys.executable, "-m", "bench.drill", "--rows", "20000", "--timeout", "90"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "[PASS]" in result.stdout and "fingerprint" in result.stdout

"""The checkpoint and recovery assets as a user runs them: through Dagster, with run config."""

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from platform_assets import checkpoints, recovery
from resources import CheckpointStore, Lake, SourceDatabase
from tests.test_checkpoints import drop, fill, snapshot

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def world(tmp_path):
    db = SourceDatabase(url=f"sqlite:///{tmp_path}/s.db")
    store = CheckpointStore(lake=Lake(url=f"file://{tmp_path}/lake"), encryption_key="")
    fill(db, tables=["sales"])
    with dg.instance_for_test() as instance:
        yield db, store, instance


def checkpoint(db, store, instance) -> dg.ExecuteInProcessResult:
    return dg.materialize([*checkpoints.assets, *checkpoints.checks], instance=instance,
                          selection=dg.AssetSelection.assets(["checkpoints", "sales"]),
                          resources={"source_db": db, "checkpoints": store})


def recover(db, store, instance, **config) -> dg.ExecuteInProcessResult:
    return dg.materialize(recovery.assets, instance=instance, selection=[dg.AssetKey(["recovery", "sales"])],
                          resources={"source_db": db, "checkpoints": store},
                          run_config={"ops": {"recovery__sales": {"config": config}}})


def metadata(result: dg.ExecuteInProcessResult) -> dict:
    (event,) = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_checkpoint_asset_is_verified_by_its_blocking_check(world):
    db, store, instance = world
    result = checkpoint(db, store, instance)
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed and evaluation.check_name == "checkpoint_verified"
    meta = metadata(result)
    assert meta["checkpoint_id"] == store.list("sales")[-1] and meta["dagster/row_count"] == snapshot(db, "sales")[0]


def test_checkpoint_check_fails_when_the_checkpoint_is_damaged(world):
    db, store, instance = world
    checkpoint(db, store, instance)
    (part,) = Path(store.lake.filesystem()[1], "checkpoints/sales").glob("*/part-*.parquet")
    part.write_bytes(b"garbage" + part.read_bytes()[7:])
    result = dg.materialize([*checkpoints.assets, *checkpoints.checks], instance=instance,
                            selection=dg.AssetSelection.checks_for_assets(dg.AssetKey(["checkpoints", "sales"])),
                            resources={"source_db": db, "checkpoints": store}, raise_on_error=False)
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed and not result.success, "a blocking check that fails fails its step"
    assert "sha256 differs" in str(evaluation.metadata["problems"].value)


def test_recovery_by_config_dry_run_target_table_and_as_of(world):
    db, store, instance = world
    checkpoint(db, store, instance)
    state_a = snapshot(db, "sales")
    between = dt.datetime.now(dt.UTC)
    fill(db, rows=2000, day="2026-06-02", tables=["sales"])
    checkpoint(db, store, instance)
    state_b = snapshot(db, "sales")
    old, new = store.list("sales")

    plan = metadata(recover(db, store, instance, dry_run=True))
    assert plan["dry_run"] is True and old in plan["plan"] and new in plan["plan"]
    assert snapshot(db, "sales") == state_b, "a dry run changes nothing"

    meta = metadata(recover(db, store, instance, as_of=between.isoformat(), target_table="sales_before"))
    assert meta["checkpoint_id"] == old and meta["target_table"] == "sales_before"
    assert snapshot(db, "sales_before") == state_a and snapshot(db, "sales") == state_b

    drop(db, "sales")
    meta = metadata(recover(db, store, instance))
    assert meta["checkpoint_id"] == new and snapshot(db, "sales") == state_b
    assert "| manual |" in meta["recovery_log"] and new in meta["recovery_log"]
    assert [e["checkpoint_id"] for e in store.audit_log("sales")] == [new, old]


@pytest.mark.parametrize("config, message", [
    ({"checkpoint_id": "../../etc"}, "invalid checkpoint id"),
    ({"as_of": "last tuesday"}, "not an ISO 8601 time"),
    ({"target_table": "x; DROP TABLE sales"}, "invalid target table name"),
])
def test_bad_recovery_config_is_refused_with_a_clear_error(world, config, message):
    db, store, instance = world
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

"""Checkpoint key rotation on real SQLite tables and checkpoint files: checkpoints under key 1, the ring rotated
to key 2, both restore; key 1 cannot be retired while a checkpoint needs it; `rekey_checkpoints` moves the old
ones to key 2 (verified, no plaintext file ever written) and they restore with key 1 gone from the ring."""

import dagster as dg
import pytest

from platform_assets.protection.restoring import RestoreFailedError, plan_restore, restore
from platform_assets.security.key_rotation import rekey_checkpoints, retire_checkpoint_key
from resources import CheckpointStore, Lake, SourceDatabase
from resources.checkpoints.format import CheckpointKeyError, key_id
from tests.test_checkpoints import drop, fill, snapshot

KEY_1, KEY_2 = "1a" * 32, "2b" * 32
RING, SINGLE = "AEGIS_CHECKPOINT_KEYS", "AEGIS_CHECKPOINT_KEY"


@pytest.fixture
def world(tmp_path, monkeypatch):
    monkeypatch.delenv(RING, raising=False)
    monkeypatch.delenv(SINGLE, raising=False)
    db = SourceDatabase(url=f"sqlite:///{tmp_path}/source.db")
    fill(db, rows=400, tables=["sales"])
    return db, CheckpointStore(lake=Lake(url=f"file://{tmp_path}/lake")), tmp_path


def restored_equals(store: CheckpointStore, db: SourceDatabase, checkpoint_id: str, before) -> bool:
    drop(db, "sales")
    restore(store, db, plan_restore(store, "sales", checkpoint_id=checkpoint_id))
    return snapshot(db, "sales") == before


def run(job, store: CheckpointStore, **config) -> dg.ExecuteInProcessResult:
    run_config = {"ops": {"check_retirement": {"config": config}}} if config else None
    return job.execute_in_process(resources={"checkpoints": store}, run_config=run_config, raise_on_error=False)


def test_rotate_restore_both_refuse_retirement_rekey_then_retire(world, monkeypatch):
    db, store, root = world
    before = snapshot(db, "sales")
    monkeypatch.setenv(RING, f"k1*={KEY_1}")
    old = store.write(db, "sales")["id"]
    monkeypatch.setenv(RING, f"k1={KEY_1}, k2*={KEY_2}")
    new = store.write(db, "sales")["id"]
    assert store.manifest("sales", old)["encryption"]["key_id"] == key_id(bytes.fromhex(KEY_1))
    assert store.manifest("sales", new)["encryption"]["key_id"] == key_id(bytes.fromhex(KEY_2))
    assert restored_equals(store, db, old, before) and restored_equals(store, db, new, before)

    refused = run(retire_checkpoint_key, store, key="k1")
    message = refused.get_step_failure_events()[0].step_failure_data.error.to_string()
    assert not refused.success and f"sales/{old}" in message and f"sales/{new}" not in message

    parts_before = {p.name for p in (root / "lake/checkpoints/sales" / old).glob("part-*")}
    assert run(rekey_checkpoints, store).success
    manifest = store.manifest("sales", old)
    assert manifest["encryption"]["key_id"] == key_id(bytes.fromhex(KEY_2))
    files = list((root / "lake/checkpoints/sales" / old).glob("part-*"))
    names = {f.name for f in files}
    assert names == {f["path"] for f in manifest["files"]} and not parts_before & names, "old parts deleted"
    assert not any(f.read_bytes().startswith(b"PAR1") for f in files), "no part of the checkpoint is plaintext"
    assert store.verify("sales", old, "deep").ok

    assert run(retire_checkpoint_key, store, key="k1").success
    monkeypatch.setenv(RING, f"k2*={KEY_2}")  # key 1 gone
    assert restored_equals(store, db, old, before) and restored_equals(store, db, new, before)


def test_the_single_key_variable_keeps_working_and_joins_a_ring(world, monkeypatch):
    db, store, _ = world
    monkeypatch.setenv(SINGLE, KEY_1)
    first = store.write(db, "sales")["id"]
    assert store.manifest("sales", first)["encryption"]["key_id"] == key_id(bytes.fromhex(KEY_1))
    monkeypatch.setenv(RING, f"k2*={KEY_2}")  # the old single key still opens what it wrote
    second = store.write(db, "sales")["id"]
    assert store.manifest("sales", second)["encryption"]["key_id"] == key_id(bytes.fromhex(KEY_2))
    assert store.verify("sales", first, "deep").ok and store.verify("sales", second, "deep").ok


@pytest.mark.parametrize("ring, says", [
    (f"k1={KEY_1}", "no key is marked current"),
    (f"k1*={KEY_1},k2*={KEY_2}", "two keys are marked current"),
    (f"k1*={KEY_1},k1={KEY_2}", "appears twice"),
    (f"k1*={KEY_1},k2={KEY_1}", "same key"),
    ("k1*=not-a-key", "AEGIS_CHECKPOINT_KEYS \\(k1\\) must be a 32-byte key"),
    (f"{KEY_1}", "is not `label=key`"),
])
def test_a_wrong_ring_is_a_clear_error_and_writes_nothing(world, monkeypatch, ring, says):
    db, store, root = world
    monkeypatch.setenv(RING, ring)
    with pytest.raises(CheckpointKeyError, match=says):
        store.write(db, "sales")
    assert not (root / "lake/checkpoints/sales").exists() or not list((root / "lake/checkpoints/sales").iterdir())
    assert KEY_1 not in says


def test_a_checkpoint_whose_key_left_the_ring_says_which_key_it_needs(world, monkeypatch):
    db, store, _ = world
    monkeypatch.setenv(RING, f"k1*={KEY_1}")
    store.write(db, "sales")
    monkeypatch.setenv(RING, f"k2*={KEY_2}")
    with pytest.raises(RestoreFailedError, match=f"key id {key_id(bytes.fromhex(KEY_1))}, which is not in"):
        restore(store, db, plan_restore(store, "sales"))

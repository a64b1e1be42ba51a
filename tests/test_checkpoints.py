"""Checkpoints round-trip every table on SQLite and PostgreSQL, on a local lake and on S3, and every
fault is caught: crashed writers, corrupted files, failing restores, wrong keys, hostile names."""

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pytest

from platform_assets.layers.generators import generate
from platform_assets.layers.tables import SOURCE_TABLES
from platform_assets.protection import restoring
from platform_assets.protection.restoring import RestoreFailedError, plan_restore, restore
from platform_assets.protection.safeguard import aside_name
from resources import CheckpointStore, Lake, SourceDatabase
from resources.checkpoints.format import CheckpointKeyError, InvalidCheckpointIdError
from resources.databases import sqlite_tables
from resources.fingerprints import fingerprint_of
from resources.identifiers import InvalidIdentifierError
from tests.conftest import rows_as_stored, schema_as_dumped

DAY = "2026-06-01"
KEY_A, KEY_B = "a1" * 32, "b2" * 32


def fill(db: SourceDatabase, rows: int = 1500, day: str = DAY, tables=SOURCE_TABLES) -> None:
    for name in tables:
        contract = SOURCE_TABLES[name]
        db.replace_day(name, contract.day_column, day, generate(name, day, rows))


def snapshot(db: SourceDatabase, table: str) -> tuple[int, pa.Schema, str]:
    with db.read_table(table) as reader:
        batches = list(reader)
        schema = pa.schema([pa.field(f.name, f.type) for f in reader.schema])
    return sum(b.num_rows for b in batches), schema, fingerprint_of(batches)


def drop(db: SourceDatabase, table: str) -> None:
    with db.connect() as conn, conn.cursor() as cur:
        cur.execute(f'DROP TABLE "{table}"')
        conn.commit()


@pytest.fixture(params=["sqlite", "postgres"])
def source_db(request, tmp_path) -> SourceDatabase:
    if request.param == "sqlite":
        db = SourceDatabase(url=f"sqlite:///{tmp_path}/source.db")
    else:
        db = SourceDatabase(url=request.getfixturevalue("make_pg_database")("checkpoints"))
    fill(db)
    return db


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path) -> CheckpointStore:
    if request.param == "file":
        return CheckpointStore(lake=Lake(url=f"file://{tmp_path}/lake"), encryption_key="")
    s3 = request.getfixturevalue("s3_env")
    prefix = f"checkpoints-{os.urandom(4).hex()}"
    return CheckpointStore(lake=Lake(url=f"s3://{s3.bucket}/{prefix}", endpoint_url=s3.endpoint), encryption_key="")


@pytest.mark.parametrize("table", list(SOURCE_TABLES))
def test_round_trip_restores_rows_schema_and_fingerprint(source_db, store, table):
    rows, schema = rows_as_stored(source_db, table), schema_as_dumped(source_db, f'"{table}"')
    manifest = store.write(source_db, table)
    assert manifest["rows"] == len(rows)
    assert store.verify(table, manifest["id"], "deep").ok
    drop(source_db, table)
    outcome = restore(store, source_db, plan_restore(store, table))
    assert outcome.checkpoint_id == manifest["id"] and not outcome.failed_attempts
    assert rows_as_stored(source_db, table) == rows, "every value as the database holds it"
    assert schema_as_dumped(source_db, f'"{table}"') == schema, "the table, its indexes, as they were"
    assert outcome.fingerprint == manifest["fingerprint"]["value"]


def test_encrypted_round_trip_and_key_errors(tmp_path):
    db = SourceDatabase(url=f"sqlite:///{tmp_path}/s.db")
    fill(db, tables=["sales"])
    before = snapshot(db, "sales")
    lake = Lake(url=f"file://{tmp_path}/lake")
    store = CheckpointStore(lake=lake, encryption_key=KEY_A)
    manifest = store.write(db, "sales")
    assert manifest["encryption"]["algorithm"] == "AES-256-GCM" and KEY_A not in str(manifest)
    part = next((tmp_path / "lake/checkpoints/sales" / manifest["id"]).glob("part-*.parquet")).read_bytes()
    assert not part.startswith(b"PAR1") and b"electronics" not in part, "the part file is not plaintext"
    assert store.verify("sales", manifest["id"], "deep").ok

    with pytest.raises(RestoreFailedError, match="key id"):
        restore(CheckpointStore(lake=lake, encryption_key=KEY_B), db, plan_restore(store, "sales"))
    with pytest.raises(RestoreFailedError, match="not in AEGIS_CHECKPOINT_KEYS"):
        restore(CheckpointStore(lake=lake, encryption_key=""), db, plan_restore(store, "sales"))
    assert snapshot(db, "sales") == before, "failed restores change nothing"
    drop(db, "sales")
    restore(store, db, plan_restore(store, "sales"))
    assert snapshot(db, "sales") == before


def test_unusable_key_refuses_to_write_anything(tmp_path):
    db = SourceDatabase(url=f"sqlite:///{tmp_path}/s.db")
    fill(db, tables=["sales"])
    store = CheckpointStore(lake=Lake(url=f"file://{tmp_path}/lake"), encryption_key="not-a-32-byte-key")
    with pytest.raises(CheckpointKeyError, match="refusing to write plaintext"):
        store.write(db, "sales")
    assert not (tmp_path / "lake").exists()


# ---------------------------------------------------------------- faults


@pytest.fixture
def two_checkpoints(tmp_path):
    """An older good checkpoint (state A) and a newer one (state B) of `sales`; returns the pieces."""
    db = SourceDatabase(url=f"sqlite:///{tmp_path}/s.db")
    store = CheckpointStore(lake=Lake(url=f"file://{tmp_path}/lake"), encryption_key="")
    fill(db, tables=["sales"])
    state_a = snapshot(db, "sales")
    old = store.write(db, "sales")
    fill(db, rows=2500, day="2026-06-02", tables=["sales"])
    state_b = snapshot(db, "sales")
    new = store.write(db, "sales")
    assert state_a != state_b
    return db, store, old, new, state_a, state_b, tmp_path / "lake/checkpoints/sales"


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _edit_manifest(path: Path) -> None:
    manifest = json.loads(path.read_text())
    manifest["rows"] += 1  # a plausible edit, without re-sealing
    path.write_text(json.dumps(manifest))


CORRUPTIONS = {
    "flipped byte": lambda d: _flip_byte(next(d.glob("part-*.parquet"))),
    "truncated file": lambda d: (p := next(d.glob("part-*.parquet"))).write_bytes(p.read_bytes()[:-100]),
    "deleted part file": lambda d: next(d.glob("part-*.parquet")).unlink(),
    "deleted manifest": lambda d: (d / "manifest.json").unlink(),
    "edited manifest": lambda d: _edit_manifest(d / "manifest.json"),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_corruption_is_caught_by_verify_and_restore_falls_back_to_the_previous_checkpoint(two_checkpoints,
                                                                                           corruption):
    db, store, old, new, state_a, _, directory = two_checkpoints
    CORRUPTIONS[corruption](directory / new["id"])
    if corruption != "deleted manifest":
        assert not store.verify("sales", new["id"], "full").ok
    else:
        assert store.list("sales") == [old["id"]], "without a manifest there is no checkpoint"
    drop(db, "sales")
    outcome = restore(store, db, plan_restore(store, "sales"))
    assert outcome.checkpoint_id == old["id"]
    assert snapshot(db, "sales") == state_a
    if corruption != "deleted manifest":
        assert [a["checkpoint_id"] for a in outcome.failed_attempts] == [new["id"]]


def test_quick_verify_sees_a_missing_file_and_deep_verify_a_changed_row(two_checkpoints):
    _, store, _, new, _, _, directory = two_checkpoints
    assert store.verify("sales", new["id"], "quick").ok
    next((directory / new["id"]).glob("part-*.parquet")).unlink()
    problems = store.verify("sales", new["id"], "quick").problems
    assert problems == ["part-00000.parquet is missing"]


@pytest.mark.parametrize("failing_step", ["set_aside", "load_rows", "compare"])
def test_an_exception_in_the_middle_of_a_restore_leaves_the_live_table_untouched(two_checkpoints, monkeypatch,
                                                                                  failing_step):
    db, store, _, _, _, state_b, _ = two_checkpoints
    original = getattr(restoring, failing_step)

    def explode(*args, **kwargs):
        original(*args, **kwargs)  # the step's work is done inside the transaction …
        raise RuntimeError(f"power cut during {failing_step}")  # … and then everything fails

    monkeypatch.setattr(restoring, failing_step, explode)
    with pytest.raises(RestoreFailedError, match="power cut"):  # allowed to replace: the live table goes aside …
        restore(store, db, plan_restore(store, "sales"), aside=aside_name("sales", dt.datetime.now(dt.UTC)))
    assert snapshot(db, "sales") == state_b, "the live table is exactly as it was"
    assert not [t for t in db.tables() if "__restore_" in t], "the temporary table is gone"
    assert not [t for t in db.tables() if "__replaced_" in t], "… and is back in place, not left aside"


def test_a_failing_restore_on_postgres_leaves_the_live_table_untouched(make_pg_database, tmp_path, monkeypatch):
    db = SourceDatabase(url=make_pg_database("restore_fault"))
    store = CheckpointStore(lake=Lake(url=f"file://{tmp_path}/lake"), encryption_key="")
    fill(db, tables=["sales"])
    store.write(db, "sales")
    fill(db, rows=2500, day="2026-06-02", tables=["sales"])
    live = snapshot(db, "sales")

    def explode(*args, **kwargs):
        raise RuntimeError("disk full during compare")

    monkeypatch.setattr(restoring, "compare", explode)
    with pytest.raises(RestoreFailedError, match="disk full"):
        restore(store, db, plan_restore(store, "sales"), aside=aside_name("sales", dt.datetime.now(dt.UTC)))
    assert snapshot(db, "sales") == live
    assert not [t for t in db.tables() if "__restore_" in t or "__replaced_" in t]


def test_a_large_table_is_split_into_parts_that_restore_to_the_same_rows(tmp_path):
    db = SourceDatabase(url=f"sqlite:///{tmp_path}/s.db")
    fill(db, rows=150_000, tables=["infra_logs"])
    before = snapshot(db, "infra_logs")
    store = CheckpointStore(lake=Lake(url=f"file://{tmp_path}/lake"), rows_per_file=50_000, encryption_key=KEY_A)
    manifest = store.write(db, "infra_logs")
    assert [f["rows"] for f in manifest["files"]] == [65_536, 65_536, before[0] - 131_072], \
        "parts close at the first whole row group past rows_per_file"
    assert store.verify("infra_logs", manifest["id"], "deep").ok
    drop(db, "infra_logs")
    restore(store, db, plan_restore(store, "infra_logs"))
    assert snapshot(db, "infra_logs") == before


def test_an_empty_table_checkpoints_and_restores_as_empty(tmp_path):
    db = SourceDatabase(url=f"sqlite:///{tmp_path}/s.db")
    db.replace_day("sales", "sale_ts", DAY, generate("sales", DAY, 10).slice(0, 0))
    store = CheckpointStore(lake=Lake(url=f"file://{tmp_path}/lake"), encryption_key="")
    manifest = store.write(db, "sales")
    assert manifest["rows"] == 0 and [f["rows"] for f in manifest["files"]] == [0]
    drop(db, "sales")
    restore(store, db, plan_restore(store, "sales"))
    assert db.count("sales") == 0 and db.table_exists("sales")


def test_a_source_failing_mid_read_raises_and_writes_no_manifest(tmp_path, monkeypatch):
    db = SourceDatabase(url=f"sqlite:///{tmp_path}/s.db")
    fill(db, rows=200_000, tables=["infra_logs"])
    store = CheckpointStore(lake=Lake(url=f"file://{tmp_path}/lake"), rows_per_file=65_536, encryption_key="")
    real_read_batches = sqlite_tables.read_batches

    def failing_after_two_batches(*args):
        batches = real_read_batches(*args)
        yield next(batches)
        yield next(batches)
        raise OSError("connection reset by peer")

    monkeypatch.setattr(sqlite_tables, "read_batches", failing_after_two_batches)
    with pytest.raises(OSError, match="connection reset"):
        store.write(db, "infra_logs")
    assert store.list("infra_logs") == [], "a checkpoint that failed mid-read must not look complete"


WRITER = textwrap.dedent("""
    import sys
    from resources import CheckpointStore, Lake, SourceDatabase
    from resources.databases import sqlite_tables
    store = CheckpointStore(lake=Lake(url=sys.argv[2]), rows_per_file=20_000, encryption_key="")
    store.write(SourceDatabase(url=sys.argv[1]), "infra_logs")
""")


def test_a_writer_killed_mid_write_leaves_no_manifest_and_the_previous_checkpoint_stays_newest(tmp_path):
    db = SourceDatabase(url=f"sqlite:///{tmp_path}/s.db")
    fill(db, rows=400_000, tables=["infra_logs"])
    store = CheckpointStore(lake=Lake(url=f"file://{tmp_path}/lake"), encryption_key="")
    previous = store.write(db, "infra_logs")
    directory = tmp_path / "lake/checkpoints/infra_logs"

    writer = subprocess.Popen([sys.executable, "-c", WRITER, db.url, store.lake.url],
                              cwd=Path(__file__).resolve().parent.parent)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        partial = [d for d in directory.iterdir() if d.name != previous["id"] and list(d.glob("part-*"))]
        if partial:
            break
        time.sleep(0.01)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert partial, "the writer never started writing parts"
    assert not (partial[0] / "manifest.json").exists(), "killed mid-write: there must be no manifest"
    assert store.list("infra_logs") == [previous["id"]]
    assert store.candidates("infra_logs")[0] == previous["id"]

    orphans = store.collect_garbage("infra_logs", min_age=dt.timedelta(0))
    assert orphans == [partial[0].name] and partial[0].exists(), "dry run by default"
    store.collect_garbage("infra_logs", min_age=dt.timedelta(0), dry_run=False)
    assert not partial[0].exists() and store.list("infra_logs") == [previous["id"]]


@pytest.mark.parametrize("checkpoint_id", ["../../etc", "../sales/x", "20261122T140501123456Z-1a2b3c/../..", ""])
def test_hostile_checkpoint_ids_are_refused_before_any_path_is_built(two_checkpoints, checkpoint_id):
    _, store, _, _, _, _, _ = two_checkpoints
    with pytest.raises(InvalidCheckpointIdError):
        store.manifest("sales", checkpoint_id)
    if checkpoint_id:  # (an empty id means "the newest", so only real strings are refused here)
        with pytest.raises(InvalidCheckpointIdError):
            plan_restore(store, "sales", checkpoint_id=checkpoint_id)


def test_table_names_with_sql_are_refused(two_checkpoints):
    db, store, _, _, _, state_b, _ = two_checkpoints
    for name in ['sales"; DROP TABLE sales; --', "sales; DROP TABLE sales", "../sales"]:
        with pytest.raises(InvalidIdentifierError):
            store.write(db, name)
        with pytest.raises(InvalidIdentifierError):
            plan_restore(store, name)
        with pytest.raises(InvalidIdentifierError):
            plan_restore(store, "sales", target_table=name)
    assert snapshot(db, "sales") == state_b


def test_retention_keeps_the_newest_and_never_the_newest_verified(two_checkpoints):
    _, store, old, new, _, _, directory = two_checkpoints
    _flip_byte(next((directory / new["id"]).glob("part-*.parquet")))  # the newest no longer verifies
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    doomed = store.apply_retention("sales", keep_last=1, keep_within=dt.timedelta(days=7), now=later)
    assert doomed == [], "the older checkpoint is the newest verified one: it must stay"
    assert store.list("sales") == [old["id"], new["id"]]

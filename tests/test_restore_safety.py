"""A restore never discards data: on SQLite and PostgreSQL a table in the way is set aside (with its indexes,
constraints and sequences renamed so the restored table gets the originals), never dropped; what replacing
would lose is measured against the database's own rows; the policy's settings are checked."""

import datetime as dt
import sqlite3

import numpy as np
import pytest

from platform_assets.protection.restoring import RestoreFailedError, plan_restore, restore
from platform_assets.protection.safeguard import (
    aside_name,
    aside_time,
    expired_asides,
    judge,
    measure_loss,
    multiset_difference,
)
from resources import CheckpointStore, Lake, RecoveryPolicy, SourceDatabase
from resources.urls import ConfigurationError
from tests.conftest import rows_as_stored
from tests.test_checkpoints import fill

NOW = dt.datetime(2026, 11, 23, 10, 15, 0, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path) -> SourceDatabase:
    if request.param == "sqlite":
        return SourceDatabase(url=f"sqlite:///{tmp_path}/source.db")
    return SourceDatabase(url=request.getfixturevalue("make_pg_database")("safety"))


@pytest.fixture
def store(tmp_path) -> CheckpointStore:
    return CheckpointStore(lake=Lake(url=f"file://{tmp_path}/lake"), encryption_key="")


def execute(db: SourceDatabase, *statements: str) -> None:
    with db.connect() as conn, conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
        conn.commit()


def indexes(db: SourceDatabase, table: str) -> set[str]:
    with db.connect() as conn, conn.cursor() as cur:
        if db.kind == "sqlite":
            cur.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?", parameters=[table])
        else:
            cur.execute("SELECT indexname FROM pg_indexes WHERE tablename = $1", parameters=[table])
        return {r[0] for r in cur.fetchall()}


def test_a_restore_not_allowed_to_replace_a_present_table_fails_and_changes_nothing(db, store):
    fill(db, tables=["sales"])
    store.write(db, "sales")
    fill(db, rows=3, day="2026-06-02", tables=["sales"])
    before = rows_as_stored(db, "sales")
    with pytest.raises(RestoreFailedError, match="exists and this restore may not replace it"):
        restore(store, db, plan_restore(store, "sales"))
    assert rows_as_stored(db, "sales") == before
    assert sorted(db.tables()) == ["sales"]


def test_replacing_keeps_the_live_table_aside_row_for_row_and_the_restored_table_gets_its_index_names(db, store):
    fill(db, tables=["sales"])
    at_checkpoint = rows_as_stored(db, "sales")
    store.write(db, "sales")
    fill(db, rows=3, day="2026-06-02", tables=["sales"])
    live = rows_as_stored(db, "sales")
    live_indexes = indexes(db, "sales")

    outcome = restore(store, db, plan_restore(store, "sales"), aside=aside_name("sales", NOW))
    assert outcome.kept_aside == {"table": "sales__replaced_20261123_101500", "rows": len(live)}
    assert rows_as_stored(db, "sales") == at_checkpoint
    assert rows_as_stored(db, "sales__replaced_20261123_101500") == live, "nothing of the live table is lost"
    assert indexes(db, "sales") == live_indexes, "the restored table has the original index names"
    assert indexes(db, "sales__replaced_20261123_101500") == {f"{i}_20261123_101500" for i in live_indexes}


def test_a_postgres_table_with_a_primary_key_and_a_serial_column_is_set_aside_whole(make_pg_database, store):
    db = SourceDatabase(url=make_pg_database("serial"))
    execute(db, 'CREATE TABLE "orders" (id serial PRIMARY KEY, item text NOT NULL)',
            "INSERT INTO orders (item) VALUES ('a'), ('b')")
    store.write(db, "orders")
    execute(db, "INSERT INTO orders (item) VALUES ('written after the checkpoint')")

    restore(store, db, plan_restore(store, "orders"), aside=aside_name("orders", NOW))
    aside = "orders__replaced_20261123_101500"
    assert len(rows_as_stored(db, aside)) == 3
    with db.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT conname FROM pg_constraint WHERE conrelid = $1::regclass AND contype = 'p'",
                    parameters=[aside])
        assert cur.fetchall() == [("orders_pkey_20261123_101500",)], "the aside table keeps its primary key"
        cur.execute("SELECT pg_get_serial_sequence($1, 'id')", parameters=[aside])
        assert cur.fetchone()[0] == "public.orders_id_seq_20261123_101500", "… and its sequence, renamed"
    execute(db, f"INSERT INTO {aside} (item) VALUES ('the aside table still takes inserts')")
    assert "orders_pkey" in indexes(db, "orders"), "the restored table has the original key index name"


def test_a_table_that_appears_while_the_checkpoint_loads_is_not_dropped(make_pg_database, store, monkeypatch):
    # PostgreSQL only: SQLite serialises writers, so nobody can create the table while a restore writes
    db = SourceDatabase(url=make_pg_database("appears"))
    fill(db, tables=["sales"])
    store.write(db, "sales")
    execute(db, 'DROP TABLE "sales"')
    from platform_assets.protection import restoring

    original = restoring.set_aside

    def meanwhile(*args, **kwargs):
        kept = original(*args, **kwargs)  # the restore found nothing in the way …
        with db.connect() as other, other.cursor() as cur:  # … and the application recreates its table meanwhile
            cur.execute('CREATE TABLE "sales" (id INTEGER)')
            cur.execute("INSERT INTO sales VALUES (42)")
            other.commit()
        return kept

    monkeypatch.setattr(restoring, "set_aside", meanwhile)
    with pytest.raises(RestoreFailedError):
        restore(store, db, plan_restore(store, "sales"))
    assert rows_as_stored(db, "sales") == ["(42)"], "the table that appeared is still there, untouched"


def test_what_replacing_would_lose_is_counted_row_by_row_against_the_checkpoint(db, store):
    fill(db, tables=["sales"])
    manifest = store.write(db, "sales")
    fill(db, rows=3, day="2026-06-02", tables=["sales"])
    execute(db, 'DELETE FROM "sales" WHERE id IN (SELECT id FROM "sales" ORDER BY id LIMIT 2)')
    loss = measure_loss(store, db, "sales", "sales", manifest)
    assert (loss.live_rows, loss.only_live, loss.only_checkpoint) == (manifest["rows"] + 1, 3, 2)
    assert not loss.columns_differ


def test_a_retyped_column_makes_every_row_count_as_replaced(make_pg_database, store):
    db = SourceDatabase(url=make_pg_database("retyped"))
    fill(db, tables=["sales"])
    manifest = store.write(db, "sales")
    execute(db, 'ALTER TABLE "sales" ALTER COLUMN quantity TYPE text')  # same names, same values as text
    loss = measure_loss(store, db, "sales", "sales", manifest)
    assert loss.columns_differ and loss.only_live == loss.live_rows == manifest["rows"]


def test_multiset_difference_counts_repeated_rows():
    a = np.array([1, 1, 2, 3, 3, 3], dtype=np.uint64)
    b = np.array([1, 2, 2, 3, 4], dtype=np.uint64)
    assert multiset_difference(a, b) == (3, 2)  # a: one 1, two 3s unmatched; b: one 2 and the 4
    assert multiset_difference(a, a) == (0, 0)
    assert multiset_difference(a, np.array([], dtype=np.uint64)) == (6, 0)


@pytest.mark.parametrize("target_rows, newest, replace, target, action", [
    (None, 100, False, "sales", "create"),  # nothing there: nothing to lose
    (100, 100, False, "sales", "refuse"),  # healthy
    (60, 100, False, "sales", "refuse"),  # fewer rows, but above the 50 % alert share
    (40, 100, False, "sales", "replace"),  # shrunk below the alert share
    (100, 100, True, "sales", "replace"),  # asked for explicitly
    (5, 100, False, "sales_before", "refuse"),  # a table beside is never replaced by the shrink rule
    (0, 0, False, "sales", "refuse"),  # an empty checkpoint does not make an empty table "shrunk"
])
def test_judge_lets_a_restore_replace_a_table_only_when_it_shrank_or_the_run_asks(target_rows, newest, replace,
                                                                                   target, action):
    assert judge("sales", target, target_rows, newest, RecoveryPolicy(), replace).action == action


def test_tables_set_aside_are_recognised_by_name_and_expire_after_the_kept_days():
    young, old = aside_name("sales", NOW), aside_name("sales", NOW - dt.timedelta(days=8))
    assert aside_time(young, "sales") == NOW
    assert aside_time(young, "customers") is None and aside_time("sales", "sales") is None
    tables = {young, old, "sales", aside_name("customers", NOW - dt.timedelta(days=30))}
    assert expired_asides(tables, "sales", dt.timedelta(days=7), NOW) == [old]


def test_recovery_policy_reads_the_environment_and_names_a_bad_variable():
    policy = RecoveryPolicy.from_env({"AEGIS_SHRINK_ALERT_SHARE": "0.25", "AEGIS_RESTORE_ON_SHRINK": "true",
                                      "AEGIS_KEEP_REPLACED_DAYS": "2.5"})
    assert (policy.shrink_alert_share, policy.restore_on_shrink, policy.keep_replaced_days) == (0.25, True, 2.5)
    assert RecoveryPolicy.from_env({}) == RecoveryPolicy()
    for variable, value in [("AEGIS_SHRINK_ALERT_SHARE", "50%"), ("AEGIS_SHRINK_ALERT_SHARE", "2"),
                            ("AEGIS_RESTORE_ON_SHRINK", "maybe"), ("AEGIS_KEEP_REPLACED_DAYS", "-1"),
                            ("AEGIS_WATCH_INTERVAL_SECONDS", "soon")]:
        with pytest.raises(ConfigurationError, match=variable):
            RecoveryPolicy.from_env({variable: value})


def test_sqlite_storage_classes_of_the_aside_table_are_exactly_the_live_ones(tmp_path, store):
    db = SourceDatabase(url=f"sqlite:///{tmp_path}/mixed.db")
    with sqlite3.connect(tmp_path / "mixed.db") as conn:
        conn.execute('CREATE TABLE "notes" (id INTEGER, body)')
        conn.executemany("INSERT INTO notes VALUES (?, ?)", [(1, "text"), (2, 2.5), (3, None)])
    store.write(db, "notes")
    with sqlite3.connect(tmp_path / "mixed.db") as conn:
        conn.execute("INSERT INTO notes VALUES (4, x'00ff')")
        typed = conn.execute("SELECT id, typeof(body) FROM notes ORDER BY id").fetchall()
    restore(store, db, plan_restore(store, "notes"), aside=aside_name("notes", NOW))
    with sqlite3.connect(tmp_path / "mixed.db") as conn:
        kept = conn.execute('SELECT id, typeof(body) FROM "notes__replaced_20261123_101500" ORDER BY id').fetchall()
    assert kept == typed, "renaming keeps every value with its storage class"

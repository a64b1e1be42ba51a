"""A table the user protects comes back after a DROP the way production brings it back: the real daemon's watch
sensor notices the loss and launches a restore run in a new process, which loads the code location *after* the
loss — so what is protected cannot depend on the victim still being in the database. Tables protected by name,
by `schema.table`, by a pattern, and a foreign-key group dropped with CASCADE; the platform started while a
table is missing; the source database stopped and started under a running platform. Every table is compared
with the truth as the database sees it (`t::text` and `pg_dump --schema-only`, SQLite's values with their
storage classes and `sqlite_master`)."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import dagster as dg
import pytest

from bench.dagster_server import DagsterServer, dagster_server, embedded_env, local_home
from platform_assets.protection.checkpoints import checkpoint_assets
from platform_assets.protection.protected import resolve
from resources import CheckpointStore, Lake, RecoveryPolicy, SourceDatabase
from tests.conftest import unavailable
from tests.pg_cluster import PgCluster, server_bindir

PG_TABLES = ["public.docs", "ops.ledger", "public.orders_a", "public.orders_b", "public.acct", "public.acct_entries"]
PG_SPEC = "docs,ops.ledger,orders_*,acct,acct_entries"
PG_SCHEMA = """
CREATE SCHEMA ops;
CREATE TYPE mood AS ENUM ('calm', 'busy');
CREATE TABLE docs (id int PRIMARY KEY, body text NOT NULL, meta jsonb, mood mood, tags text[],
                   at timestamptz DEFAULT '2026-01-01 00:00:00+00');
COMMENT ON TABLE docs IS 'the user''s documents';
CREATE TABLE ops.ledger (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                         amount numeric(14,2) NOT NULL CHECK (amount <> 0), memo text);
CREATE INDEX ledger_memo ON ops.ledger (memo);
CREATE TABLE orders_a (id int PRIMARY KEY, total numeric(12,2), placed date);
CREATE TABLE orders_b (id int PRIMARY KEY, total numeric(12,2), placed date);
CREATE TABLE acct (id int PRIMARY KEY, name text UNIQUE NOT NULL);
CREATE TABLE acct_entries (id serial PRIMARY KEY, acct_id int NOT NULL REFERENCES acct(id), amount numeric(12,2));
INSERT INTO docs SELECT i, 'doc ' || i, jsonb_build_object('n', i, 'x', i * 0.5),
       (ARRAY['calm', 'busy'])[1 + i % 2]::mood, ARRAY['a', i::text] FROM generate_series(1, 3000) i;
INSERT INTO ops.ledger (amount, memo) SELECT (i * 1.25)::numeric(14,2), 'memo ' || (i % 50)
       FROM generate_series(1, 2000) i;
INSERT INTO orders_a SELECT i, i * 3.10, DATE '2026-01-01' + i % 300 FROM generate_series(1, 1500) i;
INSERT INTO orders_b SELECT i, i * 1.01, DATE '2026-02-01' + i % 200 FROM generate_series(1, 1200) i;
INSERT INTO acct SELECT i, 'account ' || i FROM generate_series(1, 300) i;
INSERT INTO acct_entries (acct_id, amount) SELECT 1 + i % 300, i * 0.01 FROM generate_series(1, 4000) i;
"""

LITE_TABLES = ["docs", "ledger", "orders_a", "orders_b", "acct", "acct_entries"]
LITE_SPEC = "docs,main.ledger,orders_*,acct,acct_entries"
LITE_SCHEMA = """
CREATE TABLE docs (id INTEGER PRIMARY KEY, body TEXT NOT NULL, meta, score REAL);
CREATE TABLE ledger (id INTEGER PRIMARY KEY AUTOINCREMENT, amount NUMERIC NOT NULL CHECK (amount <> 0), memo TEXT);
CREATE INDEX ledger_memo ON ledger (memo);
CREATE TRIGGER ledger_no_zero BEFORE UPDATE ON ledger WHEN NEW.amount = 0 BEGIN SELECT RAISE(ABORT, 'zero'); END;
CREATE TABLE orders_a (id INTEGER PRIMARY KEY, total NUMERIC, placed TEXT);
CREATE TABLE orders_b (id INTEGER PRIMARY KEY, total NUMERIC, placed TEXT);
CREATE TABLE acct (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL);
CREATE TABLE acct_entries (id INTEGER PRIMARY KEY, acct_id INTEGER NOT NULL REFERENCES acct(id), amount REAL);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
INSERT INTO docs SELECT i, 'doc ' || i, CASE i % 3 WHEN 0 THEN i WHEN 1 THEN 'text ' || i ELSE x'00ff' END,
       i / 7.0 FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
INSERT INTO ledger (amount, memo) SELECT i * 1.25, 'memo ' || (i % 50) FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1500)
INSERT INTO orders_a SELECT i, i * 3.1, date('2026-01-01', '+' || (i % 300) || ' days') FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1200)
INSERT INTO orders_b SELECT i, i * 1.01, date('2026-02-01', '+' || (i % 200) || ' days') FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)
INSERT INTO acct SELECT i, 'account ' || i FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000)
INSERT INTO acct_entries SELECT i, 1 + i % 300, i * 0.01 FROM n;
"""


def psql(url: str, sql: str) -> str:
    return subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
                          capture_output=True, text=True, check=True).stdout


def pg_truth(url: str, tables: list[str]) -> dict[str, tuple[str, list[str]]]:
    """Each table as PostgreSQL holds it: its rows as `t::text` (sorted) and `pg_dump --schema-only` of it."""
    truth = {}
    for table in tables:
        rows = psql(url, f"SELECT t::text FROM {table} t ORDER BY 1")
        dump = subprocess.run(["pg_dump", "--schema-only", f"--table={table}", f"--dbname={url}"],
                              capture_output=True, text=True, check=True).stdout
        truth[table] = (rows, sorted(line for line in dump.splitlines()
                                     if line.strip() and not line.startswith(("--", "\\"))))
    return truth


def pg_existing(url: str, tables: list[str]) -> set[str]:
    names = ",".join(f"'{t}'" for t in tables)
    out = psql(url, f"SELECT schemaname || '.' || tablename FROM pg_tables WHERE schemaname || '.' || tablename "
                    f"IN ({names})")
    return set(out.split())


def lite_truth(path: Path, tables: list[str]) -> dict[str, tuple[list, list]]:
    """Each table as SQLite holds it: every value with its storage class, and its sqlite_master entries."""
    with sqlite3.connect(path) as conn:
        truth = {}
        for table in tables:
            columns = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
            typed = ", ".join(f'typeof("{c}"), quote("{c}")' for c in columns)
            rows = sorted(conn.execute(f'SELECT {typed} FROM "{table}"').fetchall())
            objects = conn.execute("SELECT type, name, sql FROM sqlite_master WHERE tbl_name = ? ORDER BY 1, 2",
                                   (table,)).fetchall()
            seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchall()
            truth[table] = (rows, objects + seq)
    return truth


def lite_existing(path: Path, tables: list[str]) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")} & set(tables)


def checkpoint_everything(server: DagsterServer) -> None:
    run = server.wait_for_run(server.launch("checkpoint_job"), timeout=300)
    assert run["status"] == "SUCCESS", run


def wait_for_restores(server: DagsterServer, back: Callable[[], bool], timeout: float = 240) -> list[dict]:
    """Wait until `back()` holds and every run the watch sensor launched has ended; returns those runs. A failed
    restore run fails at once (the sensor would retry it, but a failure is already wrong)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = server.runs({"aegis/trigger": "source_table_watch"})
        assert not [r for r in runs if r["status"] == "FAILURE"], f"a restore run failed: {runs}"
        if back() and runs and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in runs):
            return runs
        time.sleep(1)
    raise TimeoutError(f"not restored within {timeout} s; runs: {server.runs()}")


def assert_no_failed_run(server: DagsterServer) -> None:
    """No run of the platform's own reactions (restores, checkpoints) failed. Runs of the daily schedules are
    not this test's: one fires when a test happens to run across its hour (quality_checks_2330 on an empty
    lake), whatever the day."""
    failed = [r for r in server.runs() if r["status"] in ("FAILURE", "CANCELED")
              and "dagster/schedule_name" not in r["tags"]]
    assert not failed, f"runs that did not succeed: {failed}"


# ---------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="module")
def pg_platform(tmp_path_factory) -> Iterator[tuple[PgCluster, str, Callable[[], AbstractContextManager]]]:
    """A PostgreSQL cluster of this module's own (so it can be stopped), the user's schema in it, and a way to
    start the real webserver and daemon on it (each start is a fresh `make up` on the same Dagster home)."""
    bindir = server_bindir()
    if bindir is None:
        unavailable("the PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    cluster = PgCluster(bindir)
    try:
        cluster.start()
        url = cluster.create_database("app")
        psql(url, PG_SCHEMA)
        work = tmp_path_factory.mktemp("restore-new-process-pg")
        local_home(work)
        env = embedded_env(work, 500, AEGIS_SOURCE_URL=url, AEGIS_PROTECTED_TABLES=PG_SPEC,
                           AEGIS_WATCH_INTERVAL_SECONDS="2")
        yield cluster, url, lambda: dagster_server(env, work), lambda: checkpoint_in_process(url, work)
    finally:
        cluster.close()


def checkpoint_in_process(url: str, work: Path) -> None:
    """Checkpoints of every protected table into the platform's lake, without the platform running."""
    lake = Lake(url=f"file://{work}/lake")
    _, groups = resolve(url, PG_SPEC, lake_url=lake.url)
    resources = {"source_db": SourceDatabase(url=url), "checkpoints": CheckpointStore(lake=lake, encryption_key=""),
                 "recovery_policy": RecoveryPolicy()}
    with dg.DagsterInstance.ephemeral() as instance:
        assert dg.materialize([checkpoint_assets(g) for g in groups], instance=instance, resources=resources).success


def test_postgres_tables_protected_by_name_schema_pattern_and_group_come_back_from_the_sensor_alone(pg_platform):
    cluster, url, serve, _ = pg_platform
    with serve() as server:
        checkpoint_everything(server)
        truth = pg_truth(url, PG_TABLES)
        psql(url, "DROP TABLE docs; DROP TABLE ops.ledger; DROP TABLE orders_a; DROP TABLE acct, acct_entries CASCADE")
        runs = wait_for_restores(server, lambda: pg_existing(url, PG_TABLES) == set(PG_TABLES))
        assert_no_failed_run(server)
        assert pg_truth(url, PG_TABLES) == truth
        keys = [r["tags"]["aegis/restore_key"] for r in runs]
        assert any("acct-" in k and "acct_entries-" in k for k in keys), f"the group in one run: {keys}"
        assert server.location()["status"] == "LOADED"


def test_postgres_a_platform_started_while_a_table_is_missing_and_a_database_outage(pg_platform):
    cluster, url, serve, checkpoint = pg_platform
    checkpoint()
    truth = pg_truth(url, PG_TABLES)
    psql(url, "DROP TABLE docs")  # lost while the platform was down: `make up` finds it missing
    with serve() as server:
        location = server.location()
        assert location["status"] == "LOADED" and not location["error"], location
        wait_for_restores(server, lambda: "public.docs" in pg_existing(url, PG_TABLES))
        assert pg_truth(url, ["public.docs"]) == {"public.docs": truth["public.docs"]}

        cluster.stop()  # the source database goes away under the running platform
        try:
            reloaded = server.reload_location()
            assert reloaded["status"] == "LOADED" and not reloaded["error"], reloaded
            keys = {tuple(n["assetKey"]["path"]) for n in server.asset_nodes()}
            assert {("recovery", "docs"), ("recovery", "ops", "ledger"), ("recovery", "orders_b"),
                    ("recovery", "acct"), ("recovery", "acct_entries")} <= keys, "nothing protected is forgotten"
            deadline = time.monotonic() + 30
            while not any("cannot look at the protected tables now" in (t["skipReason"] or "")
                          for t in server.sensor_ticks("source_table_watch")):
                assert time.monotonic() < deadline, server.sensor_ticks("source_table_watch")
                time.sleep(1)
        finally:
            cluster.start()
        psql(url, "DROP TABLE orders_b")  # the first thing that happens when the database is back
        wait_for_restores(server, lambda: "public.orders_b" in pg_existing(url, PG_TABLES))
        assert_no_failed_run(server)
        assert pg_truth(url, PG_TABLES) == truth


# ---------------------------------------------------------------- SQLite


def test_sqlite_tables_protected_by_name_schema_pattern_and_group_come_back_from_the_sensor_alone(tmp_path):
    source = tmp_path / "app.db"
    with sqlite3.connect(source) as conn:
        conn.executescript(LITE_SCHEMA)
    local_home(tmp_path)
    env = embedded_env(tmp_path, 500, AEGIS_SOURCE_URL=f"sqlite:///{source}", AEGIS_PROTECTED_TABLES=LITE_SPEC,
                       AEGIS_WATCH_INTERVAL_SECONDS="2")
    with dagster_server(env, tmp_path) as server:
        checkpoint_everything(server)
        truth = lite_truth(source, LITE_TABLES)
        with sqlite3.connect(source) as conn:
            conn.executescript("BEGIN; DROP TABLE docs; DROP TABLE ledger; DROP TABLE orders_a; "
                               "DROP TABLE acct_entries; DROP TABLE acct; COMMIT;")
        runs = wait_for_restores(server, lambda: lite_existing(source, LITE_TABLES) == set(LITE_TABLES))
        assert_no_failed_run(server)
        assert lite_truth(source, LITE_TABLES) == truth
        keys = [r["tags"]["aegis/restore_key"] for r in runs]
        assert any("acct-" in k and "acct_entries-" in k for k in keys), f"the group in one run: {keys}"

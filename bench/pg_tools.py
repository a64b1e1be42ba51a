"""Aegis against the tools a PostgreSQL user reaches for: `pg_dump -Fc -t <table>` and `pg_restore`, on a
table with numeric, uuid, jsonb, timestamptz and text[] columns, an identity primary key, a foreign key and
two indexes. Both sides must bring back the same rows (the server's own fingerprint of every row) before any
time counts; Aegis's restore time includes its verification, pg_restore has none.

    python -m bench.pg_tools <postgresql url> <rows> <work dir> [repeat]
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from platform_assets.protection.restoring import plan_restore, restore
from resources import CheckpointStore, Lake, SourceDatabase
from resources.databases import postgres_tables as pg
from resources.databases.table_refs import TableRef

TABLE = TableRef(None, "bench_orders")
SCHEMA = """
DROP TABLE IF EXISTS bench_orders, bench_customers CASCADE;
CREATE TABLE bench_customers (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO bench_customers SELECT g, 'customer ' || g FROM generate_series(1, 10000) g;
CREATE TABLE bench_orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id int NOT NULL REFERENCES bench_customers(id),
    amount numeric(12,2) NOT NULL,
    ref uuid NOT NULL,
    attrs jsonb,
    created_at timestamptz NOT NULL,
    tags text[]
);
INSERT INTO bench_orders (customer_id, amount, ref, attrs, created_at, tags)
SELECT 1 + g % 10000, round((g % 100000) * 1.37, 2),
       md5(g::text)::uuid,
       jsonb_build_object('channel', (ARRAY['web','store','app'])[1 + g % 3], 'items', g % 7, 'promo', g % 11 = 0),
       timestamptz '2026-01-01 00:00:00+00' + (g * interval '17 seconds'),
       ARRAY['t' || (g % 13), 't' || (g % 5)]
FROM generate_series(1, {rows}) g;
CREATE INDEX bench_orders_created_at ON bench_orders (created_at);
CREATE INDEX bench_orders_customer ON bench_orders (customer_id);
ANALYZE bench_orders;
"""


def psql(url: str, sql: str) -> str:
    return subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
                          capture_output=True, text=True, check=True).stdout.strip()


def build(url: str, rows: int) -> None:
    psql(url, SCHEMA.format(rows=int(rows)))


def server_fingerprint(db: SourceDatabase) -> tuple[int, str]:
    with db.connect() as conn:
        return pg.fingerprint(conn, TABLE.sql)


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def compare(url: str, rows: int, work: Path, repeat: int = 3) -> dict:
    """Medians of alternating runs: checkpoint vs pg_dump -Fc, restore (verified) vs pg_restore."""
    db = SourceDatabase(url=url)
    build(url, rows)
    truth = server_fingerprint(db)
    store = CheckpointStore(lake=Lake(url=f"file://{work}/pg-tools-lake-{rows}"), encryption_key="")
    dump = work / f"bench_orders-{rows}.dump"
    times: dict[str, list[float]] = {"checkpoint": [], "pg_dump": [], "restore": [], "pg_restore": []}
    manifest = None
    for _ in range(repeat):
        times["checkpoint"].append(timed(lambda: store.write(db, TABLE)))
        times["pg_dump"].append(timed(lambda: subprocess.run(
            ["pg_dump", "-Fc", "-t", "public.bench_orders", "-f", str(dump), "-d", url], check=True)))
    manifest = store.newest_manifest(TABLE.id)
    for _ in range(repeat):
        psql(url, "DROP TABLE bench_orders CASCADE")
        times["restore"].append(timed(lambda: restore(store, db, plan_restore(store, TABLE.id, manifest["id"]))))
        if server_fingerprint(db) != truth:
            raise AssertionError("Aegis's restore differs from the original table")
        psql(url, "DROP TABLE bench_orders CASCADE")
        times["pg_restore"].append(timed(lambda: subprocess.run(
            ["pg_restore", "--exit-on-error", "-d", url, str(dump)], check=True)))
        if server_fingerprint(db) != truth:
            raise AssertionError("pg_restore's table differs from the original")
    median = {name: statistics.median(values) for name, values in times.items()}
    result = {"rows": rows, **median,
              "checkpoint_bytes": sum(f["bytes"] for f in manifest["files"]), "dump_bytes": dump.stat().st_size}
    shutil.rmtree(work / f"pg-tools-lake-{rows}", ignore_errors=True)
    dump.unlink()
    return result


if __name__ == "__main__":
    url, rows, work = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    print(compare(url, rows, work, int(sys.argv[4]) if len(sys.argv) > 4 else 3))

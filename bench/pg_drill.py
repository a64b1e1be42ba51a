"""The DROP drill on PostgreSQL with continuous protection (`make drill-postgres`): a protected table of ROWS rows
(pgbench_accounts), its base checkpoint, CHANGES rows changed since in many transactions, the change capture and
the real webserver and daemon running; DROP TABLE; the time until the watch sensor's restore has put it back —
verified by the restore (checkpoint, checksums, count and the database's fingerprint after the replay) and again
here against the table as it was just before the DROP — and where that time went.

    make drill-postgres                          # 1,000,000 rows, 100,000 changes since the base
    make drill-postgres PG_DRILL_ROWS=200000 CHANGES=20000

Writes bench/RESULTS-pg-drill.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.dagster_server import ROOT, dagster_server, embedded_env, local_home
from bench.pg_tools import psql
from resources import CheckpointStore, Lake
from resources.capture import change_log
from resources.capture.pgoutput import parse_lsn
from tests.pg_cluster import PgCluster, server_bindir

TABLE = "pgbench_accounts"



def truth(url: str) -> str:
    return psql(url, f"SELECT count(*), sum(hashtextextended(t::text, 0)) FROM {TABLE} t")


def wait(what: str, done, timeout: float, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:g} s")
        time.sleep(step)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--changes", type=int, default=100_000)
    parser.add_argument("--transactions", type=int, default=100, help="the changes come in this many commits")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS-pg-drill.md")
    args = parser.parse_args(argv)
    cluster = PgCluster(server_bindir(), {"wal_level": "logical", "max_replication_slots": "4",
                                          "max_wal_senders": "4"})
    work = Path(tempfile.mkdtemp(prefix="aegis-pg-drill-"))
    capture = None
    try:
        cluster.start()
        url = cluster.create_database("drill")
        subprocess.run(["pgbench", "-i", "-s", str(max(1, args.rows // 100_000)), "-q", url], check=True,
                       capture_output=True)
        local_home(work)
        # capture_watch ticks once (the first base, after the capture's first start) and not again for an hour:
        # it would fold CHANGES into a new base within a minute, and the drill measures replaying them
        env = embedded_env(work, 500, AEGIS_SOURCE_URL=url, AEGIS_PROTECTED_TABLES=TABLE,
                           AEGIS_CAPTURE_WATCH_INTERVAL_SECONDS="3600")
        log = open(work / "capture.log", "w")  # noqa: SIM115 - the capture writes it while it lives
        capture = subprocess.Popen([sys.executable, "-m", "platform_assets.protection.capture_process"], env=env,
                                   cwd=work, stdout=log, stderr=subprocess.STDOUT)
        wait("the capture's start", lambda: "capturing" in (work / "capture.log").read_text(), 60)
        store = CheckpointStore(lake=Lake(url=env["AEGIS_LAKE_URL"]))
        with dagster_server(env, work) as server:
            # the capture's first start is a gap: capture_watch takes the first base on its own
            wait("the first base checkpoint", lambda: any(
                r["status"] == "SUCCESS" for r in server.runs({"aegis/trigger": "capture_watch"})), 180, 1)
            base = store.newest_manifest(TABLE)
            per = max(1, args.changes // args.transactions)
            for first in range(1, args.changes + 1, per):
                psql(url, f"UPDATE {TABLE} SET abalance = abalance + 1, filler = md5(aid::text) "
                          f"WHERE aid BETWEEN {first} AND {min(args.changes, first + per - 1)}")
            now = parse_lsn(psql(url, "SELECT pg_current_wal_lsn()"))
            wait("the capture catching up", lambda: change_log.position(change_log.location(store.lake))[0] >= now,
                 120)
            before = truth(url)
            dropped_at = dt.datetime.now(dt.UTC)
            dropped = time.perf_counter()
            psql(url, f"DROP TABLE {TABLE}")
            wait("the restore", lambda: psql(url, f"SELECT to_regclass('{TABLE}') IS NOT NULL") == "t", 300)
            back = time.perf_counter() - dropped
            after = truth(url)
            wait("the restore run's end", lambda: any(r["status"] in ("SUCCESS", "FAILURE") for r in server.runs(
                {"aegis/trigger": "source_table_watch"})), 60, 0.2)
            (run,) = server.runs({"aegis/trigger": "source_table_watch"})[:1]
            stats = server.run(run["runId"])
        audit = store.audit_log(TABLE, 1)[0]
    finally:
        if capture is not None:
            capture.kill()
        cluster.close()
    created = dt.datetime.fromtimestamp(stats["creationTime"], dt.UTC)
    started = dt.datetime.fromtimestamp(stats["startTime"], dt.UTC)
    replayed = audit.get("replayed") or {}
    ok = after == before and run["status"] == "SUCCESS" and audit["checkpoint_id"] == base["id"]
    lines = [
        "# The DROP drill on PostgreSQL, with continuous protection", "",
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores; PostgreSQL "
        f"cluster of the drill's own (wal_level=logical), the lake on the local disk, the real webserver and "
        f"daemon on the embedded defaults (source_table_watch as shipped; capture_watch held off after the first base, "
        f"so that the changes are not folded into a new base before the DROP). `make drill-postgres "
        f"PG_DRILL_ROWS={args.rows} "
        f"CHANGES={args.changes}`.", "",
        "| measure | value |", "|---|---|",
        f"| table | {TABLE}, {int(before.split('|')[0]):,} rows |",
        f"| changes since its base checkpoint ({base['id']}) | {replayed.get('changes', 0):,} replayed, in "
        f"{args.transactions} transactions |",
        f"| DROP → back, verified by the restore | **{back:.1f} s** |",
        f"| detection (DROP → run created) | {(created - dropped_at).total_seconds():.1f} s |",
        f"| queue and launch (created → started) | {(started - created).total_seconds():.1f} s |",
        f"| inside the run | {', '.join(f'{k} {v:.2f} s' for k, v in audit['seconds'].items())} |",
        f"| verified by the restore | {replayed.get('verified', '?')} |",
        f"| equal to the table just before the DROP (count, sum of hashtextextended(t::text)) | "
        f"{'yes' if after == before else 'NO'} |", "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

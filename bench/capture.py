"""Continuous protection, measured (`make bench-capture`, also part of `make bench`): on a PostgreSQL cluster of
its own with wal_level=logical, pgbench (SCALE, CLIENTS) writes for SECONDS with the capture off, then on:

- the source's tps with the capture off and on (pgbench's own figure; target: at most 10 % lower),
- the capture's throughput against the write rate (changes landed per second / changes committed per second),
- the RPO at steady load: for every captured change, commit time → the flush that made it durable (p50, p99),
- a table restored after a DROP: checkpoint + the change log replayed, against a full restore of a checkpoint
  taken just before the DROP (the same rows), both verified.

Writes bench/RESULTS-capture.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from platform_assets.protection.point_in_time import cut_for
from platform_assets.protection.restoring import plan_restore, restore
from resources import CheckpointStore, Lake, SourceDatabase
from resources.capture import change_log
from resources.databases.table_refs import TableRef
from tests.pg_cluster import PgCluster, server_bindir

ROOT = Path(__file__).resolve().parent.parent
PGBENCH = ["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"]


def pgbench(url: str, clients: int, seconds: int) -> float:
    done = subprocess.run(["pgbench", "-n", "-c", str(clients), "-j", str(clients), "-T", str(seconds), url],
                          capture_output=True, text=True, check=True)
    return float(re.search(r"tps = ([0-9.]+)", done.stdout).group(1))


def psql(url: str, sql: str) -> str:
    return subprocess.run(["psql", "-X", "-At", "-d", url, "-c", sql], capture_output=True, text=True,
                          check=True).stdout.strip()


def rpo_samples(store: CheckpointStore, since: dt.datetime) -> list[float]:
    """Seconds from each change's commit to the start of the flush that landed it (the position row written in
    the same Delta commit)."""
    table = change_log.read(change_log.location(store.lake), "public.pgbench_history")
    positions = change_log.positions(change_log.location(store.lake))
    lsns, times = positions["lsn"].to_pylist(), positions["commit_time"].to_pylist()
    samples, at = [], 0
    for lsn, committed in zip(table["lsn"].to_pylist(), table["commit_time"].to_pylist(), strict=True):
        if committed < since:
            continue
        while at < len(lsns) and lsns[at] < lsn:
            at += 1
        if at < len(lsns):
            samples.append((times[at] - committed).total_seconds())
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=5)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS-capture.md")
    args = parser.parse_args(argv)
    cluster = PgCluster(server_bindir(), {"wal_level": "logical", "max_replication_slots": "4",
                                          "max_wal_senders": "4", "fsync": "on"})
    work = Path(tempfile.mkdtemp(prefix="aegis-bench-capture-"))
    capture = None
    try:
        cluster.start()
        url = cluster.create_database("bench")
        subprocess.run(["pgbench", "-i", "-s", str(args.scale), "-q", url], check=True, capture_output=True)
        off = pgbench(url, args.clients, args.seconds)
        env = {**os.environ, "AEGIS_SOURCE_URL": url, "AEGIS_LAKE_URL": f"file://{work}/lake",
               "AEGIS_PROTECTED_TABLES": "pgbench_*"}
        log = open(work / "capture.log", "w")  # noqa: SIM115 - the capture writes it while it lives
        capture = subprocess.Popen([sys.executable, "-m", "platform_assets.protection.capture_process"], env=env,
                                   cwd=work, stdout=log, stderr=subprocess.STDOUT)
        while "capturing" not in (work / "capture.log").read_text():
            time.sleep(0.1)
        db, store = SourceDatabase(url=url), CheckpointStore(lake=Lake(url=f"file://{work}/lake"))
        store.write(db, "pgbench_accounts")
        since = dt.datetime.now(dt.UTC)
        before = int(psql(url, "SELECT count(*) FROM pgbench_history"))
        on = pgbench(url, args.clients, args.seconds)
        ended = time.monotonic()
        cut = cut_for(store, db, [TableRef("public", "pgbench_accounts")], wait_seconds=600)
        caught_up = time.monotonic() - ended
        committed = (int(psql(url, "SELECT count(*) FROM pgbench_history")) - before) * 4  # 3 updates + 1 insert
        landed = change_log.activity(change_log.location(store.lake),
                                     [f"public.{t}" for t in PGBENCH], since).num_rows
        samples = sorted(rpo_samples(store, since))
        truth = psql(url, "SELECT sum(hashtext(t::text)::bigint), count(*) FROM pgbench_accounts t")
        psql(url, "DROP TABLE pgbench_accounts")
        started = time.perf_counter()
        replayed = restore(store, db, plan_restore(store, "pgbench_accounts"), cut=cut)
        replay_s = time.perf_counter() - started
        assert psql(url, "SELECT sum(hashtext(t::text)::bigint), count(*) FROM pgbench_accounts t") == truth
        store.write(db, "pgbench_accounts")
        psql(url, "DROP TABLE pgbench_accounts")
        started = time.perf_counter()
        restore(store, db, plan_restore(store, "pgbench_accounts"))
        full_s = time.perf_counter() - started
        assert psql(url, "SELECT sum(hashtext(t::text)::bigint), count(*) FROM pgbench_accounts t") == truth
        # bounded recovery: a tenth of the table changed since its base, then the DROP
        psql(url, "UPDATE pgbench_accounts SET abalance = abalance + 1, filler = md5(aid::text) WHERE aid % 10 = 0")
        tenth = int(psql(url, "SELECT count(*) FROM pgbench_accounts WHERE aid % 10 = 0"))
        truth = psql(url, "SELECT sum(hashtext(t::text)::bigint), count(*) FROM pgbench_accounts t")
        dropped = time.perf_counter()
        psql(url, "DROP TABLE pgbench_accounts")
        cut = cut_for(store, db, [TableRef("public", "pgbench_accounts")], wait_seconds=600)
        folded = restore(store, db, plan_restore(store, "pgbench_accounts"), cut=cut)
        bounded_s = time.perf_counter() - dropped
        assert psql(url, "SELECT sum(hashtext(t::text)::bigint), count(*) FROM pgbench_accounts t") == truth
    finally:
        if capture is not None:
            capture.kill()
        cluster.close()
    p50 = statistics.median(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    lines = [
        "# Continuous protection, measured", "",
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores; PostgreSQL "
        f"cluster of the bench's own (wal_level=logical, fsync on), pgbench scale {args.scale}, {args.clients} "
        f"clients, {args.seconds} s per run, the lake on the local disk. `python -m bench.capture`.", "",
        "| measure | value |", "|---|---|",
        f"| pgbench tps, capture off | {off:,.0f} |",
        f"| pgbench tps, capture on | {on:,.0f} ({(on / off - 1) * 100:+.1f} %) |",
        f"| changes committed during the run | {committed:,} ({committed / args.seconds:,.0f}/s) |",
        f"| changes landed in the lake | {landed:,} ({landed / (args.seconds + caught_up):,.0f}/s over the run "
        f"and its catch-up) |",
        f"| catch-up after the load stopped | {caught_up:.1f} s |",
        f"| RPO, commit → flush that made it durable: p50 / p99 | {p50:.2f} s / {p99:.2f} s |",
        f"| restore of pgbench_accounts ({int(truth.split('|')[1]):,} rows) after a DROP: checkpoint + "
        f"{replayed.replayed['changes']:,} changes replayed | {replay_s:.1f} s |",
        f"| the same rows from a checkpoint taken just before the DROP (no replay) | {full_s:.1f} s |",
        f"| DROP → back and verified, {folded.rows:,} rows with {folded.replayed['changes']:,} changes ({tenth:,} "
        f"rows updated) since the base: waiting for the capture, verify, load, replay, compare, swap | "
        f"{bounded_s:.1f} s ({', '.join(f'{k} {v:.1f}' for k, v in folded.seconds.items())}) |", "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Aegis against pg_dump / pg_restore on a multi-table schema no one here wrote (`make bench-schemas`):
pgbench's four tables (`pgbench -i --foreign-keys`, SCALE × 100,000 accounts), one consistency group through
their foreign keys. Timed as a user pays it — the group's checkpoint and its restore materialised through Dagster
(`dg.materialize` of checkpoints/* and recovery/*, the code already imported) — against `pg_dump -Fc`,
`pg_dump -Fd -j2`, `pg_restore` and `pg_restore -j2` in the same run, each restore checked equal to the original
by the server (count and sum of hashtextextended(t::text) of every table).

    make bench-schemas                    # SCALE=10: 1M accounts
    make bench-schemas SCALE=50           # 5M accounts, as issue "Faster than pg_dump" asks

Writes bench/RESULTS-schemas.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import dagster as dg

from bench.pg_tools import psql, timed
from platform_assets.protection.checkpoints import checkpoint_assets
from platform_assets.protection.protected import resolve
from platform_assets.protection.recovery import recovery_assets
from resources import CheckpointStore, Lake, RecoveryPolicy, SourceDatabase
from tests.pg_cluster import PgCluster, server_bindir

ROOT = Path(__file__).resolve().parent.parent
TABLES = ["pgbench_branches", "pgbench_tellers", "pgbench_accounts", "pgbench_history"]



def truth(url: str) -> str:
    return psql(url, " UNION ALL ".join(f"SELECT '{t}', count(*), sum(hashtextextended(t::text, 0)) FROM {t} t"
                                        for t in TABLES))


def drop(url: str) -> None:
    psql(url, f"DROP TABLE IF EXISTS {', '.join(TABLES)} CASCADE")



def run(command: list[str]) -> None:
    subprocess.run(command, check=True, capture_output=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS-schemas.md")
    args = parser.parse_args(argv)
    cluster = PgCluster(server_bindir())
    work = Path(tempfile.mkdtemp(prefix="aegis-bench-schemas-"))
    try:
        cluster.start()
        url = cluster.create_database("schemas")
        run(["pgbench", "-i", "-s", str(args.scale), "--foreign-keys", "-q", url])
        s = args.scale
        psql(url, f"INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) SELECT 1 + i % {10 * s}, "
                  f"1 + i % {s}, 1 + i % {100_000 * s}, i % 5000 - 2500, now() - i * interval '1 second' "
                  "FROM generate_series(1, 100000) i; ANALYZE")
        before = truth(url)
        db = SourceDatabase(url=url)
        store = CheckpointStore(lake=Lake(url=f"file://{work}/lake"), encryption_key="")
        _, groups = resolve(url, ",".join(TABLES), lake_url=store.lake.url)
        (group,) = [g for g in groups if len(g.members) == len(TABLES)]
        resources = {"source_db": db, "checkpoints": store, "recovery_policy": RecoveryPolicy()}
        keys = [dg.AssetKey(["recovery", t]) for t in TABLES]
        rows = int(psql(url, "SELECT count(*) FROM pgbench_accounts"))
        seconds: dict[str, float] = {}
        with dg.DagsterInstance.ephemeral() as instance:
            seconds["Aegis checkpoint (the group, one snapshot)"] = timed(lambda: dg.materialize(
                [checkpoint_assets(group)], instance=instance, resources=resources).success or sys.exit(1))
            seconds["pg_dump -Fc"] = timed(lambda: run(["pg_dump", "-Fc", *[f"-t{t}" for t in TABLES],
                                                        "-f", str(work / "dump.fc"), url]))
            seconds["pg_dump -Fd -j2"] = timed(lambda: run(["pg_dump", "-Fd", "-j2", *[f"-t{t}" for t in TABLES],
                                                            "-f", str(work / "dump.d"), url]))
            drop(url)
            seconds["Aegis restore (verified, one transaction)"] = timed(lambda: dg.materialize(
                [recovery_assets(group)], instance=instance, resources=resources, selection=keys).success
                or sys.exit(1))
            ours = truth(url)
        for name, command in (("pg_restore", ["pg_restore", "-d", url, str(work / "dump.fc")]),
                              ("pg_restore -j2", ["pg_restore", "-j2", "-d", url, str(work / "dump.d")])):
            drop(url)
            seconds[name] = timed(lambda command=command: run(command))
            if truth(url) != before:
                raise AssertionError(f"{name} gave back different tables")
        if ours != before:
            raise AssertionError("Aegis's restore gave back different tables")
        checkpoint_bytes = sum(f["bytes"] for t in TABLES for f in store.newest_manifest(t)["files"])
        dump_bytes = (work / "dump.fc").stat().st_size
    finally:
        cluster.close()
        shutil.rmtree(work, ignore_errors=True)
    ours_ck, ours_rs = seconds["Aegis checkpoint (the group, one snapshot)"], seconds[
        "Aegis restore (verified, one transaction)"]
    lines = [
        "# Aegis against pg_dump / pg_restore: pgbench's schema", "",
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores; a PostgreSQL "
        f"cluster of the bench's own; `pgbench -i -s {args.scale} --foreign-keys` ({rows:,} accounts, 100,000 "
        "history rows), one consistency group of four tables. `make bench-schemas`. Every restore checked equal "
        "to the original by the server.", "",
        "| what | seconds | Aegis is |", "|---|---:|---:|",
        f"| Aegis checkpoint (the group, one snapshot, through Dagster) | {ours_ck:.2f} | |",
        *(f"| {name} | {seconds[name]:.2f} | {seconds[name] / ours_ck:.2f}× as fast |"
          for name in ("pg_dump -Fc", "pg_dump -Fd -j2")),
        f"| Aegis restore (verified: checksums, counts, fingerprints, schema; one transaction; through Dagster) | "
        f"{ours_rs:.2f} | |",
        *(f"| {name} | {seconds[name]:.2f} | {seconds[name] / ours_rs:.2f}× as fast |"
          for name in ("pg_restore", "pg_restore -j2")),
        f"| bytes: checkpoint / `pg_dump -Fc` | {checkpoint_bytes / dump_bytes:.2f} | |", "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

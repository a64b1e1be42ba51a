"""Aegis against pg_dump / pg_restore on a multi-table schema no one here wrote (`make bench-schemas`):
pgbench's four tables (`pgbench -i --foreign-keys`, SCALE × 100,000 accounts), one consistency group through
their foreign keys. Timed as a user pays it — the group's checkpoint and its restore materialised through Dagster
(`dg.materialize` of checkpoints/* and recovery/*, the code already imported) — against `pg_dump -Fc`,
`pg_dump -Fd -j2`, `pg_restore` and `pg_restore -j2` in the same run, each restore checked equal to the original
by the server (count and sum of hashtextextended(t::text) of every table). Beside them, what the server alone
needs with no client at all — every row written again (`INSERT … SELECT`), read out (`COPY … TO '/dev/null'`), and
turned into text for the fingerprint — the floor under any restore, dump or verification on this machine; and the
peak memory of each side (the bench process's own high-water mark, reset before each step; pg_dump's and
pg_restore's sampled from /proc, with their worker processes).

    make bench-schemas                    # SCALE=50: 5M accounts, as issue "Faster than pg_dump" asks
    make bench-schemas SCALE=10           # 1M accounts, quicker

Writes bench/RESULTS-schemas.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
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



def truth_sql() -> str:
    return " UNION ALL ".join(f"SELECT '{t}', count(*), sum(hashtextextended(t::text, 0)) FROM {t} t" for t in TABLES)


def truth(url: str) -> str:
    return psql(url, truth_sql())


def drop(url: str) -> None:
    psql(url, f"DROP TABLE IF EXISTS {', '.join(TABLES)} CASCADE")



def run(command: list[str]) -> int:
    """Run `command`; returns the peak, over its run, of the summed RSS of it and its children in KiB (sampled
    every 10 ms from /proc: wait4's ru_maxrss would not do, Linux carries a parent's peak across fork and exec)."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    highest = 0
    while proc.poll() is None:
        highest = max(highest, _tree_rss(proc.pid))
        time.sleep(0.01)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, command, stderr=proc.stderr.read())
    proc.stderr.close()
    return highest


def _tree_rss(root: int) -> int:
    total, pending = 0, [root]
    while pending:
        pid = pending.pop()
        try:
            total += int(re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text()).group(1))
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except (OSError, AttributeError):
            continue
        pending.extend(int(c) for c in children)
    return total


def own_peak(step) -> int:
    """Run `step` in this process; returns the process's peak RSS in KiB during it (VmHWM, reset first)."""
    Path("/proc/self/clear_refs").write_text("5")
    step()
    return int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


def floors(url: str, work: Path) -> dict[str, float]:
    """What the server alone needs for every table, no client involved: the same COPY a restore's load and
    pg_restore's data section run, from a file the server reads itself; the primary keys and foreign keys
    built on the copies; every row read out; every row as text and hashed."""
    found = {}
    shared = work / "floor"  # the server runs as its own user: a directory it may write into
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    work.chmod(0o711)
    files = {t: shared / f"floor_{t}.bin" for t in TABLES}
    found["server alone: read every row out (COPY … TO a file, binary)"] = timed(lambda: psql(url, "; ".join(
        f"COPY {t} TO '{files[t]}' (FORMAT binary)" for t in TABLES)))
    psql(url, "; ".join(f"CREATE TABLE floor_{t} (LIKE {t})" for t in TABLES) + "; CHECKPOINT")
    found["server alone: write every row (COPY … FROM a file, binary)"] = timed(lambda: psql(url, "; ".join(
        f"COPY floor_{t} FROM '{files[t]}' (FORMAT binary)" for t in TABLES)))
    found["server alone: primary and foreign keys on those rows"] = timed(lambda: psql(url, """
        ALTER TABLE floor_pgbench_branches ADD PRIMARY KEY (bid);
        ALTER TABLE floor_pgbench_tellers ADD PRIMARY KEY (tid);
        ALTER TABLE floor_pgbench_accounts ADD PRIMARY KEY (aid);
        ALTER TABLE floor_pgbench_tellers ADD FOREIGN KEY (bid) REFERENCES floor_pgbench_branches;
        ALTER TABLE floor_pgbench_accounts ADD FOREIGN KEY (bid) REFERENCES floor_pgbench_branches;
        ALTER TABLE floor_pgbench_history ADD FOREIGN KEY (bid) REFERENCES floor_pgbench_branches;
        ALTER TABLE floor_pgbench_history ADD FOREIGN KEY (tid) REFERENCES floor_pgbench_tellers;
        ALTER TABLE floor_pgbench_history ADD FOREIGN KEY (aid) REFERENCES floor_pgbench_accounts"""))
    psql(url, "DROP TABLE " + ", ".join(f"floor_{t}" for t in TABLES) + " CASCADE; CHECKPOINT")
    for file in files.values():
        file.unlink()
    found["server alone: every row as text and hashed (the fingerprint's scan)"] = timed(lambda: psql(url, truth_sql()))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=50)
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
        seconds, peak = floors(url, work), {}

        def measured(name: str, step) -> None:
            def counted() -> None:
                peak[name] = step()
            seconds[name] = timed(counted)

        def ours(name: str, step) -> None:
            measured(name, lambda: own_peak(step))

        with dg.DagsterInstance.ephemeral() as instance:
            ours("Aegis checkpoint (the group, one snapshot)", lambda: dg.materialize(
                [checkpoint_assets(group)], instance=instance, resources=resources).success or sys.exit(1))
            measured("pg_dump -Fc", lambda: run(["pg_dump", "-Fc", *[f"-t{t}" for t in TABLES],
                                                 "-f", str(work / "dump.fc"), url]))
            measured("pg_dump -Fd -j2", lambda: run(["pg_dump", "-Fd", "-j2", *[f"-t{t}" for t in TABLES],
                                                     "-f", str(work / "dump.d"), url]))
            drop(url)
            psql(url, "CHECKPOINT")
            ours("Aegis restore (verified, one transaction)", lambda: dg.materialize(
                [recovery_assets(group)], instance=instance, resources=resources, selection=keys).success
                or sys.exit(1))
            restored = truth(url)
        for name, command in (("pg_restore", ["pg_restore", "-d", url, str(work / "dump.fc")]),
                              ("pg_restore -j2", ["pg_restore", "-j2", "-d", url, str(work / "dump.d")])):
            drop(url)
            psql(url, "CHECKPOINT")  # each restore starts without the last one's dirty pages to write
            measured(name, lambda command=command: run(command))
            if truth(url) != before:
                raise AssertionError(f"{name} gave back different tables")
        if restored != before:
            raise AssertionError("Aegis's restore gave back different tables")
        checkpoint_bytes = sum(f["bytes"] for t in TABLES for f in store.newest_manifest(t)["files"])
        dump_bytes = (work / "dump.fc").stat().st_size
    finally:
        cluster.close()
        shutil.rmtree(work, ignore_errors=True)
    ours_ck, ours_rs = seconds["Aegis checkpoint (the group, one snapshot)"], seconds[
        "Aegis restore (verified, one transaction)"]
    def row(name: str, label: str | None = None, against: float | None = None) -> str:
        ratio = f"{seconds[name] / against:.2f}× as fast" if against else ""
        memory = f"{peak[name] / 1024:.0f}" if name in peak else ""
        return f"| {label or name} | {seconds[name]:.2f} | {ratio} | {memory} |"

    lines = [
        "# Aegis against pg_dump / pg_restore: pgbench's schema", "",
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores; a PostgreSQL "
        f"cluster of the bench's own; `pgbench -i -s {args.scale} --foreign-keys` ({rows:,} accounts, 100,000 "
        "history rows), one consistency group of four tables. `make bench-schemas`. Every restore checked equal "
        "to the original by the server.", "",
        "| what | seconds | Aegis is | peak RSS MiB |", "|---|---:|---:|---:|",
        row("Aegis checkpoint (the group, one snapshot)",
            "Aegis checkpoint (the group, one snapshot, through Dagster)"),
        *(row(name, against=ours_ck) for name in ("pg_dump -Fc", "pg_dump -Fd -j2")),
        row("Aegis restore (verified, one transaction)", "Aegis restore (verified: checksums, counts, fingerprints, "
            "schema; one transaction; through Dagster)"),
        *(row(name, against=ours_rs) for name in ("pg_restore", "pg_restore -j2")),
        f"| bytes: checkpoint / `pg_dump -Fc` | {checkpoint_bytes / dump_bytes:.2f} | | |", "",
        "The server alone, no client (the floor under any of the above on this machine):", "",
        "| what | seconds |", "|---|---:|",
        *(f"| {name} | {value:.2f} |" for name, value in seconds.items() if name.startswith("server alone")), "",
        "Aegis's peak RSS is the bench process's (interpreter, dagster, duckdb, pyarrow included).", "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

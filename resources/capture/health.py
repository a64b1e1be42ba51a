"""How the change capture is doing, as the source and the lake see it: the slot (present, streaming, how many WAL
bytes it has not confirmed, whether the server still keeps what it needs), the last durable commit in the lake,
and the RPO now — how much committed work a loss at this moment would take with it, in seconds. `make doctor`,
`make metrics` and the capture watch sensor read it."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from resources.capture import change_log, litestream
from resources.capture.pgoutput import lsn_text, parse_lsn
from resources.capture.postgres_capture import SLOT_VAR, slot_name
from resources.databases.source_database import SourceDatabase
from resources.lake.lake import Lake

CHANGE_LOG = dg.AssetKey(["changes", "log"])  # the change log as an asset: observed, and checked for its RPO
RPO_CHECK = "rpo_within_target"
RPO_VAR = "AEGIS_RPO_SECONDS"
SHIP_GRACE_SECONDS = 10  # a new SQLite database has this long to reach its replica before it counts as unreplicated
DEFAULT_RPO_SECONDS = 5.0


def rpo_target() -> float:
    text = os.environ.get(RPO_VAR) or str(DEFAULT_RPO_SECONDS)
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{RPO_VAR}={text!r}: expected a number of seconds "
                         f"(default {DEFAULT_RPO_SECONDS:g})") from None
    if value <= 0:
        raise ValueError(f"{RPO_VAR}={text!r}: must be more than 0 seconds")
    return value


@dataclass(frozen=True)
class CaptureHealth:
    slot: str
    slot_exists: bool
    streaming: bool  # a capture process is connected to the slot now
    wal_status: str | None  # reserved / extended / unreserved / lost (PostgreSQL's own words)
    lag_bytes: int | None  # WAL written on the server that the lake does not hold yet
    durable_lsn: int | None
    durable_at: dt.datetime | None  # when the capture last landed changes (or its position) in the lake
    rpo_seconds: float | None  # 0 when the lake holds everything committed; else the age of what it holds
    target_seconds: float
    kind: str = "postgres"  # or "sqlite": `slot` names the Litestream replica, `durable_at` its newest state
    lake_error: str | None = None  # the change log could not be read (the lake is unreachable)

    @property
    def problems(self) -> list[str]:
        if self.kind == "sqlite":
            if not self.slot_exists:
                return [f"the Litestream replica {self.slot} holds nothing: the source is not replicated (start "
                        "make capture)"]
            if self.rpo_seconds is not None and self.rpo_seconds > self.target_seconds:
                return [f"RPO {self.rpo_seconds:.1f} s is above its target {self.target_seconds:g} s ({RPO_VAR}): "
                        f"the database was written after the replica's newest state ({self.durable_at:%H:%M:%S}); "
                        "is Litestream running (make capture)?"]
            return []
        found = []
        if self.lake_error:
            found.append(f"the change log cannot be read from the lake ({self.lake_error}): nothing committed since "
                         "is durable; the capture keeps what it received and does not confirm the slot until the lake "
                         "is back")
        if not self.slot_exists:
            found.append(f"there is no replication slot {self.slot}: nothing is being captured (start make capture)")
        elif self.wal_status == "lost":
            found.append(f"slot {self.slot} lost WAL the capture had not read: a gap in the change log; a fresh "
                         "checkpoint is the only base after it")
        if self.slot_exists and not self.streaming:
            found.append(f"no capture process is streaming slot {self.slot} (start make capture)")
        if self.rpo_seconds is not None and self.rpo_seconds > self.target_seconds:
            found.append(f"RPO {self.rpo_seconds:.1f} s is above its target {self.target_seconds:g} s ({RPO_VAR}): "
                         f"{self.lag_bytes} byte(s) of WAL not in the lake yet")
        return found

    def summary(self) -> str:
        if self.kind == "sqlite":
            newest = f"{self.durable_at.isoformat()}" if self.durable_at else "none"
            return (f"Litestream replica {self.slot}: newest state {newest}, RPO {self.rpo_seconds or 0:.1f} s "
                    f"(target {self.target_seconds:g} s)")
        held = f"durable up to {lsn_text(self.durable_lsn)}" if self.durable_lsn is not None else "nothing durable yet"
        rpo = f", RPO {self.rpo_seconds:.1f} s" if self.rpo_seconds is not None else ""
        return (f"slot {self.slot} {'streaming' if self.streaming else 'idle'}, lag {self.lag_bytes} byte(s), "
                f"{held}{rpo} (target {self.target_seconds:g} s)")


def capture_health(source_db: SourceDatabase, lake: Lake, now: dt.datetime | None = None) -> CaptureHealth:
    """The capture's health: the slot for PostgreSQL, the Litestream replica for SQLite."""
    if source_db.kind == "sqlite":
        return _replica_health(source_db, lake, now or dt.datetime.now(dt.UTC))
    now = now or dt.datetime.now(dt.UTC)
    slot = os.environ.get(SLOT_VAR) or slot_name(source_db.parsed.location)
    with source_db.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_current_wal_lsn()::text, s.active, s.wal_status, s.confirmed_flush_lsn::text "
                    "FROM (SELECT 1) AS one LEFT JOIN pg_catalog.pg_replication_slots s ON s.slot_name = $1",
                    parameters=[slot])
        current, active, wal_status, confirmed = cur.fetchone()
    try:
        held, lake_error = change_log.position(change_log.location(lake)), None
    except Exception as exc:  # noqa: BLE001 - any storage error: the lake is away, which is a health problem
        held, lake_error = None, type(exc).__name__
    durable_lsn = held[0] if held else None
    durable_at = dt.datetime.fromisoformat(held[1]) if held else None
    lag = parse_lsn(current) - durable_lsn if durable_lsn is not None else None
    if durable_lsn is None:
        rpo = None
    else:
        rpo = 0.0 if lag is not None and lag <= 0 else max(0.0, (now - durable_at).total_seconds())
    return CaptureHealth(slot, confirmed is not None or active is not None, bool(active), wal_status,
                         max(lag, 0) if lag is not None else None, durable_lsn, durable_at, rpo, rpo_target(),
                         lake_error=lake_error)


def _replica_health(source_db: SourceDatabase, lake: Lake, now: dt.datetime) -> CaptureHealth:
    """SQLite: the newest state Litestream shipped against the last write to the database file (and its WAL)."""
    work = Path(tempfile.mkdtemp(prefix="aegis-health-"))
    try:
        replica = litestream.replica_for(source_db.parsed.location, lake, work)
        try:
            syncs = litestream.syncs(replica)
        except litestream.LitestreamError:
            syncs = []
    finally:
        shutil.rmtree(work, ignore_errors=True)
    files = [replica.database, replica.database.with_name(replica.database.name + "-wal")]
    written = max((dt.datetime.fromtimestamp(f.stat().st_mtime, dt.UTC) for f in files if f.exists()), default=None)
    newest = syncs[-1].at if syncs else None
    # a write after the newest shipped state is not in the replica yet; Litestream gives whole seconds and syncs
    # every second, so only a write more than 2 s after it is surely unshipped
    behind = written is not None and newest is not None and written > newest + dt.timedelta(seconds=2)
    rpo = None if newest is None else ((now - newest).total_seconds() if behind else 0.0)
    # nothing to replicate yet (a fresh install: no database file, or one written a moment ago) is not a problem
    waiting = written is None or (not syncs and (now - written).total_seconds() < SHIP_GRACE_SECONDS)
    return CaptureHealth(replica.database.name, bool(syncs) or waiting, not behind, None, None, None, newest, rpo,
                         rpo_target(), kind="sqlite")

"""Restore SQLite tables to a moment from the Litestream replica (resources/capture/litestream.py): the whole
database restored by Litestream into a temporary file — as of a second, or, after a loss, as of the newest
state in which every lost table still existed — and the tables copied out of it the way checkpoints read them
(values with their storage classes, every schema object), loaded in one transaction and compared with the
fingerprint SQLite computes over the copy. Used where a replica exists; elsewhere restores use checkpoints."""

from __future__ import annotations

import datetime as dt
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from platform_assets.protection.point_in_time import CaptureBehindError
from platform_assets.protection.restoring import Part, RestoreError, RestoreOutcome, set_aside
from resources.capture import litestream
from resources.capture.litestream import LitestreamError, Replica
from resources.checkpoints.store import CheckpointStore
from resources.databases.source_database import SourceDatabase
from resources.databases.table_capture import capture
from resources.databases.table_refs import TableRef
from resources.urls import ParsedUrl

CATCH_UP_SECONDS = 30.0


def replica_of(store: CheckpointStore, source_db: SourceDatabase) -> Replica | None:
    """The source's Litestream replica, when the source is SQLite and the replica holds anything."""
    if source_db.kind != "sqlite":
        return None
    replica = litestream.replica_for(source_db.parsed.location, store.lake,
                                     Path(tempfile.mkdtemp(prefix="aegis-litestream-")))
    try:
        return replica if litestream.syncs(replica) else None
    except LitestreamError:
        return None


def _present(path: Path, refs: list[TableRef]) -> bool:
    with sqlite3.connect(path) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return all(ref.name in names for ref in refs)


def _before_loss(replica: Replica, refs: list[TableRef], out: Path, wait_seconds: float) -> litestream.Sync:
    """The newest shipped state in which every table of `refs` exists, once the replica has shipped the loss
    (never a state that may be missing changes committed before it)."""
    deadline = time.monotonic() + wait_seconds
    while True:
        syncs = litestream.syncs(replica)
        litestream.restore(replica, out, txid=syncs[-1].txid)
        if not _present(out, refs):
            break
        if time.monotonic() > deadline:
            raise CaptureBehindError(f"the Litestream replica has not shipped the loss of "
                                     f"{', '.join(r.label for r in refs)} within {wait_seconds:g} s: restoring now "
                                     "could lose committed changes, so nothing was restored (is make capture running?)")
        time.sleep(0.5)
    missing, step, present = len(syncs) - 1, 1, None
    while present is None:  # back in growing steps to a state that has the tables, then bisect
        candidate = max(missing - step, 0)
        litestream.restore(replica, out, txid=syncs[candidate].txid)
        if _present(out, refs):
            present = candidate
        elif candidate == 0:
            raise RestoreError(f"no state of the Litestream replica holds {', '.join(r.label for r in refs)}")
        else:
            missing, step = candidate, step * 2
    while missing - present > 1:
        middle = (missing + present) // 2
        litestream.restore(replica, out, txid=syncs[middle].txid)
        present, missing = (middle, missing) if _present(out, refs) else (present, middle)
    litestream.restore(replica, out, txid=syncs[present].txid)
    return syncs[present]


def restore_from_replica(replica: Replica, source_db: SourceDatabase, parts: list[Part], refs: list[TableRef],
                         as_of: dt.datetime | None, log: Callable[[str], None] = print,
                         wait_seconds: float = CATCH_UP_SECONDS) -> list[RestoreOutcome]:
    """Every part from one state of the replica (one moment for a whole group), in one transaction."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="aegis-replica-") as tmp:
        out = Path(tmp) / "state.db"
        if as_of is not None:
            litestream.restore(replica, out, timestamp=as_of)
            state = f"litestream:as-of-{as_of.astimezone(dt.UTC):%Y-%m-%dT%H:%M:%S}Z"
        else:
            sync = _before_loss(replica, refs, out, wait_seconds)
            state = f"litestream:txid-{sync.txid:016x}"
            log(f"the newest shipped state with {', '.join(r.label for r in refs)}: {sync.at.isoformat()}")
        fetched = round(time.perf_counter() - started, 3)
        copy = ParsedUrl("sqlite", str(out), "the Litestream replica")
        outcomes = []
        with capture(copy, "the Litestream replica", refs) as captured, source_db.restoring() as restorer:
            places = {}
            for part, ref in zip(parts, refs, strict=True):
                took = time.perf_counter()
                table = captured[ref.id]
                place = places[ref.id] = ref.in_schema("main").renamed(part.target)
                kept = set_aside(restorer, place, part.aside)
                in_place = part.target == ref.name
                restorer.create(table.definition, place, in_place)
                restorer.load(table.definition, place, pa.RecordBatchReader.from_batches(table.schema,
                                                                                          table.batches()))
                rows, fingerprint = restorer.fingerprint(table.definition, place)
                if (rows, fingerprint) != (table.rows, table.fingerprint):
                    raise RestoreError(f"{place.label}: loaded {rows} rows with fingerprint {fingerprint}; the "
                                       f"replica's state holds {table.rows} rows, fingerprint {table.fingerprint}")
                seconds = {"replica": fetched, "load": round(time.perf_counter() - took, 3)}
                outcomes.append(RestoreOutcome(ref.id, part.target, state, rows, fingerprint, seconds, kept_aside=kept))
            for part, ref, outcome in zip(parts, refs, outcomes, strict=True):
                first = len(restorer.warnings)
                others = [places[r.id] for r in refs if r is not ref]
                restorer.complete(captured[ref.id].definition, places[ref.id], part.target == ref.name, others)
                outcome.warnings += restorer.warnings[first:]
            restorer.commit()
    return outcomes


def from_replica(store: CheckpointStore, source_db: SourceDatabase, parts: list[Part], refs: list[TableRef],
                 as_of: dt.datetime | None, replay: bool, log: Callable[[str], None] = print
                 ) -> list[RestoreOutcome] | None:
    """The restore from the replica when the source is SQLite, replicated, and the run did not ask for a
    checkpoint (`replay: false` or a `checkpoint_id`); None: restore from checkpoints instead."""
    replica = replica_of(store, source_db) if replay else None
    return None if replica is None else restore_from_replica(replica, source_db, parts, refs, as_of, log)

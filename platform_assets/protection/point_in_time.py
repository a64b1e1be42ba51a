"""Restore to a commit: a checkpoint plus the change log's changes after it (resources/capture), cut at one
commit for a whole group — the newest durable one (a loss: every committed change) or the last at or before a
chosen second. Used only where the capture runs (a PostgreSQL source whose log exists); elsewhere restores stay
checkpoint restores."""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass

import pyarrow as pa

from resources.capture import change_log, postgres_replay
from resources.capture.change_log import ChangeLogLocation, relation_name
from resources.capture.pgoutput import lsn_text, parse_lsn
from resources.capture.postgres_capture import PUBLICATION, RESTORE_PREFIX
from resources.capture.replay import ReplayError, ReplayPlan, Snapshot, after_checkpoint, plan, seen_beyond
from resources.capture.replay_arrow import plan_columnwise
from resources.checkpoints.store import CheckpointStore
from resources.databases.source_database import SourceDatabase
from resources.databases.table_refs import TableRef, quote_name
from resources.databases.table_restorer import Restorer
from resources.identifiers import quote_literal

CATCH_UP_SECONDS = 60.0  # how long a restore waits for the capture to pass the moment it started


class CaptureBehindError(RuntimeError):
    """The change log has not caught up with the moment of the loss: restoring now would lose changes."""


@dataclass(frozen=True)
class Cut:
    """Where a restore stops replaying: every commit at or before `lsn`."""

    lsn: int
    why: str
    latest: bool = False  # a loss: every durable commit (a gap cuts it short, with a warning, instead of failing)
    as_of: dt.datetime | None = None  # the checkpoints a restore may start from were taken before this


def change_log_of(store: CheckpointStore) -> ChangeLogLocation:
    return change_log.location(store.lake)


def cut_for(store: CheckpointStore, source_db: SourceDatabase, refs: list[TableRef],
            as_of: dt.datetime | None = None, wait_seconds: float = CATCH_UP_SECONDS) -> Cut | None:
    """The commit to restore to, or None where no change log is kept (the restore is a checkpoint restore).
    Without `as_of`: the newest durable commit, once the capture has passed the source's WAL position of now."""
    if source_db.kind != "postgres":
        return None
    log = change_log_of(store)
    held = change_log.position(log)
    if held is None:
        return None
    if as_of is not None:
        default = source_db.default_schema()
        relations = [relation_name(r.in_schema(default).schema, r.name) for r in refs]
        found = change_log.commit_lsn_at(log, relations, as_of)
        return Cut(found if found is not None else 0, f"the last commit at or before {as_of.isoformat()}")
    with source_db.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_current_wal_lsn()::text")
        now = parse_lsn(cur.fetchone()[0])
    deadline = time.monotonic() + wait_seconds
    while held[0] < now:
        if time.monotonic() > deadline:
            raise CaptureBehindError(
                f"the change capture holds the source's changes up to {lsn_text(held[0])} (last flushed "
                f"{held[1]}), short of {lsn_text(now)} where this restore began: restoring now could lose "
                "committed changes, so nothing was restored. Is the capture running (make capture; make doctor)?")
        time.sleep(0.2)
        held = change_log.position(log)
    return Cut(held[0], f"every change committed up to {lsn_text(held[0])}", latest=True)


def before_transaction(store: CheckpointStore, source_db: SourceDatabase, refs: list[TableRef], xid: int) -> Cut:
    """The cut just before transaction `xid` (as the change log and the timeline show it) touched these tables."""
    default = source_db.default_schema()
    relations = [relation_name(r.in_schema(default).schema, r.name) for r in refs]
    found = change_log.transaction(change_log_of(store), relations, xid & 0xFFFFFFFF)  # pgoutput's 32 bits
    if found is None:
        raise ReplayError(f"the change log has no transaction {xid} touching {', '.join(relations)} (see the "
                          "largest transactions on changes/log)")
    lsn, committed = found
    return Cut(lsn - 1, f"just before transaction {xid} (committed {committed.isoformat()})",
               as_of=committed - dt.timedelta(microseconds=1))


def replay_plan(store: CheckpointStore, manifest: dict, cut: Cut) -> ReplayPlan:
    """What the change log says must happen to this checkpoint's rows to reach the cut."""
    source = manifest["source"]
    wal = source.get("wal")
    if wal is None:
        raise ReplayError(f"checkpoint {manifest['id']} records no WAL position (taken before change capture): it "
                          "cannot be a base for a restore to a commit")
    ref = TableRef.from_json(source["table"])
    where = change_log_of(store)
    snapshot = Snapshot.parse(wal["snapshot"], parse_lsn(wal["lsn_before"]))
    notes = []
    for gap in change_log.gaps(where):
        if gap["to_lsn"] > snapshot.lsn_before and gap["from_lsn"] < cut.lsn:
            said = (f"the change log has a gap from {lsn_text(gap['from_lsn'])} to {lsn_text(gap['to_lsn'])} "
                    f"(recorded {gap['at']}: {gap['why']}) after checkpoint {manifest['id']}")
            if not cut.latest:
                raise ReplayError(f"{said}: a restore to {cut.why} would cross it; restore to a moment before it, "
                                  "or from a checkpoint taken after it")
            notes.append(f"{said}: restored to the last commit before the gap; changes after it are not in the "
                         "log (a fresh checkpoint is taken on its own)")
            cut = Cut(min(cut.lsn, gap["from_lsn"]), f"the last commit before the gap at {lsn_text(gap['from_lsn'])}")
            break
    table = change_log.read(where, relation_name(ref.schema, ref.name), keyring=store.keyring())
    columns = [c["name"] for c in source["columns"] if c["travel"] != "generated"]
    columnwise = plan_columnwise(table, snapshot, cut.lsn, columns)
    if columnwise is not None:  # the common case, without a Python object per value
        steps, changes = columnwise
        change_log.check(changes)
        steps.notes = notes
        return steps
    log = change_log.replayable(table)

    def committed(row: dict) -> str:
        return table["commit_time"][row["at"]].as_py().isoformat()

    if (later := seen_beyond(log, snapshot, cut.lsn)) is not None:
        raise ReplayError(f"checkpoint {manifest['id']} already holds transaction {later['xid']} (committed "
                          f"{committed(later)}), after {cut.why}: an older checkpoint is the base")
    changes = after_checkpoint(log, snapshot, cut.lsn)
    restores = [c for c in changes if c["op"] == "R"]
    if restores:  # restored by Aegis since: the state it put in place, then what followed it
        last = restores[-1]
        note = json.loads(last["note"])
        if note.get("checkpoint") != manifest["id"]:
            raise ReplayError(f"the table was restored by Aegis at {committed(last)} from checkpoint "
                              f"{note.get('checkpoint')}: restore to this moment from that checkpoint")
        through = note.get("through_lsn")
        earlier = after_checkpoint(log, snapshot, int(through)) if through is not None else []
        changes = [c for c in earlier if c["op"] != "R"] + [
            c for c in changes if c["lsn"] > last["lsn"] and c["xid"] != last["xid"]]
    change_log.check(table.take(pa.array([c["at"] for c in changes], pa.int64())))
    steps = plan(changes, columns)
    steps.notes = notes
    return steps


def replay(store: CheckpointStore, restorer: Restorer, manifest: dict, place: TableRef, cut: Cut,
           base_fingerprint: str | None = None) -> dict:
    """Apply the log to the freshly loaded checkpoint (whose database fingerprint is `base_fingerprint`); the row
    count and the database's fingerprint of the result must be what the log says the table held at the cut."""
    steps = replay_plan(store, manifest, cut)
    done = postgres_replay.apply(restorer.conn, place, manifest["source"]["columns"], steps, base_fingerprint)
    expected = (0 if steps.truncated else manifest["rows"]) + steps.count_delta
    rows = restorer.count(place)
    if rows != expected:
        raise ReplayError(f"{place.label}: after replaying {steps.changes} change(s) the table holds {rows} rows; the "
                          f"change log says {expected} (checkpoint {manifest['rows']}, "
                          f"{steps.count_delta:+d} since)")
    if "unproven" in done:
        restorer.warnings.append(f"{place.label}: after the replay only the row count was checked, not the "
                                 f"database's fingerprint: {done['unproven']}")
    elif done["fingerprint"] != done["expected_fingerprint"]:
        raise ReplayError(f"{place.label}: after replaying {steps.changes} change(s) the database's fingerprint of "
                          f"the table is {done['fingerprint']}; the checkpoint and the change log say "
                          f"{done['expected_fingerprint']}: a value did not come back as the log holds it")
    restorer.warnings += steps.notes
    return {"changes": steps.changes, "rows": rows, "through_lsn": lsn_text(steps.last_lsn or cut.lsn),
            "verified": "count and fingerprint" if "unproven" not in done else "count", **done}


def mark_restored(restorer: Restorer, manifest: dict, place: TableRef, cut: Cut | None) -> None:
    """In the restore's transaction: the table is in the capture's publication again, and the change log gets a
    note of what was put in place (changes before it no longer apply to the table)."""
    with restorer.conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_publication WHERE pubname = $1", parameters=[PUBLICATION])
        if not cur.fetchone()[0]:
            return
        cur.execute("SELECT count(*) FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid "
                    "WHERE p.pubname = $1 AND r.prrelid = to_regclass($2)", parameters=[PUBLICATION, place.sql])
        if not cur.fetchone()[0]:
            cur.execute(f"ALTER PUBLICATION {quote_name(PUBLICATION)} ADD TABLE {place.sql}")
        note = {"relation": relation_name(place.schema, place.name), "checkpoint": manifest["id"],
                "through_lsn": cut.lsn if cut else None}
        cur.execute(f"SELECT pg_logical_emit_message(true, {quote_literal(RESTORE_PREFIX)}, "
                    f"{quote_literal(json.dumps(note))})")

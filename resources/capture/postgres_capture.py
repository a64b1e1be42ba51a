"""The PostgreSQL capture: a long-running process (like Litestream or Debezium, not a Dagster run) that streams
every committed change of the protected tables from one logical replication slot (`pgoutput`, a publication of
those tables) into the change log, and confirms the slot's position only once the lake holds it durably.

What it sets on the server, and says so: the publication `aegis` (the protected tables that exist), the slot
`aegis` (created once; the log starts there), and REPLICA IDENTITY FULL on a protected table that has neither a
primary key nor a replica identity index — without it PostgreSQL refuses the application's UPDATE and DELETE on a
published table.
"""

from __future__ import annotations

import datetime as dt
import json
import select
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import psycopg2
import psycopg2.extras

from resources.capture import change_log
from resources.capture.change_log import POSITION, ChangeLogLocation, columns_json, relation_name
from resources.capture.pgoutput import UNCHANGED, Begin, Change, Commit, Message, Relation, Truncate, decode
from resources.databases.table_refs import TableRef, quote_name

PUBLICATION = "aegis"
SLOT = "aegis"
RESTORE_PREFIX = "aegis.restore"  # the logical message a restore writes in its own transaction
# the walsender formats values with these, as checkpoints read them (postgres_tables.SESSION)
SETTINGS = ("-c DateStyle=ISO,MDY -c IntervalStyle=postgres -c TimeZone=UTC -c extra_float_digits=1 "
            "-c bytea_output=hex -c lc_monetary=C")


class CaptureError(RuntimeError):
    """The capture cannot start or go on (and says why)."""


def prepare(dsn: str, refs: Sequence[TableRef], publication: str = PUBLICATION, slot: str = SLOT) -> list[str]:
    """The publication holds every protected table that exists; the slot exists. Returns what was changed."""
    notes = []
    with psycopg2.connect(dsn, connect_timeout=10) as conn, conn.cursor() as cur:
        cur.execute("SHOW wal_level")
        if cur.fetchone()[0] != "logical":
            raise CaptureError("the source database runs with wal_level below logical: set wal_level = logical "
                               "(postgresql.conf or -c wal_level=logical) and restart it; nothing was captured")
        cur.execute("SELECT count(*) FROM pg_publication WHERE pubname = %s", (publication,))
        if not cur.fetchone()[0]:
            cur.execute(f"CREATE PUBLICATION {quote_name(publication)}")
            notes.append(f"created publication {publication}")
        for ref in refs:
            cur.execute("SELECT to_regclass(%s)::oid", (ref.sql,))
            (oid,) = cur.fetchone()
            if oid is None:
                continue
            notes += _replica_identity(cur, ref, oid)
            cur.execute("SELECT count(*) FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid "
                        "WHERE p.pubname = %s AND r.prrelid = %s", (publication, oid))
            if not cur.fetchone()[0]:
                cur.execute(f"ALTER PUBLICATION {quote_name(publication)} ADD TABLE {ref.sql}")
                notes.append(f"added {ref.label} to publication {publication}")
        cur.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (slot,))
        if not cur.fetchone()[0]:
            conn.commit()
            cur.execute("SELECT lsn::text FROM pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
            notes.append(f"created replication slot {slot} at {cur.fetchone()[0]}: changes are captured from "
                         "here on (the next checkpoint is the first base a restore can replay onto)")
    return notes


def _replica_identity(cur, ref: TableRef, oid: int) -> list[str]:
    cur.execute("SELECT c.relreplident, EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND "
                "(i.indisprimary OR i.indisreplident)) FROM pg_class c WHERE c.oid = %s", (oid,))
    identity, keyed = cur.fetchone()
    if identity == "n" or (identity == "d" and not keyed):
        cur.execute(f"ALTER TABLE {ref.sql} REPLICA IDENTITY FULL")
        return [f"set REPLICA IDENTITY FULL on {ref.label}: it has no primary key, and PostgreSQL refuses UPDATE "
                "and DELETE on a published table without a replica identity"]
    return []


@dataclass
class _Transaction:
    begin: Begin
    rows: list[dict] = field(default_factory=list)


@dataclass
class Capture:
    """Streams the slot into the change log until `stop()` says so (or the process is killed: nothing is
    confirmed that the lake does not hold, so a restart loses nothing and applies nothing twice)."""

    dsn: str
    log: ChangeLogLocation
    slot: str = SLOT
    publication: str = PUBLICATION
    flush_seconds: float = 1.0
    say: Callable[[str], None] = print
    _relations: dict[int, Relation] = field(default_factory=dict)
    _pending: list[dict] = field(default_factory=list)
    _open: _Transaction | None = None
    _received: int = 0  # every transaction that ended at or before this LSN is in _pending or the lake
    _durable: int = 0
    _stopping: bool = False

    def stop(self) -> None:
        self._stopping = True

    def run(self) -> None:
        conn = psycopg2.connect(self.dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection,
                                options=SETTINGS, connect_timeout=10)
        try:
            cur = conn.cursor()
            cur.start_replication(slot_name=self.slot, decode=False, status_interval=5,
                                  options={"proto_version": "1", "publication_names": self.publication,
                                           "messages": "true"})
            last_flush = time.monotonic()
            while not self._stopping:
                message = cur.read_message()
                if message is not None:
                    self._take(message.payload, message.data_start)
                    if len(self._pending) < 50_000:
                        continue
                else:
                    if self._open is None and cur.wal_end > self._received:
                        self._received = cur.wal_end  # keepalive: nothing committed before it is left unread
                    select.select([cur], [], [], max(0.05, self.flush_seconds - (time.monotonic() - last_flush)))
                if time.monotonic() - last_flush >= self.flush_seconds or len(self._pending) >= 50_000:
                    self._flush(cur)
                    last_flush = time.monotonic()
            self._flush(cur)
        finally:
            conn.close()

    def _take(self, payload: bytes, data_start: int) -> None:
        message = decode(payload)
        if isinstance(message, Begin):
            self._open = _Transaction(message)
        elif isinstance(message, Relation):
            self._relations[message.oid] = message
        elif isinstance(message, Change):
            self._row(message.relation, message.op, new=message.new, old=message.old, old_kind=message.old_kind)
        elif isinstance(message, Truncate):
            for oid in message.relations:
                self._row(oid, "T")
        elif isinstance(message, Message) and message.prefix == RESTORE_PREFIX and message.transactional:
            note = json.loads(message.content)
            self._open.rows.append({"relation": note["relation"], "op": "R", "note": message.content.decode()})
        elif isinstance(message, Commit):
            txn, self._open = self._open, None
            for seq, row in enumerate(txn.rows):
                row.update(lsn=message.commit_lsn, commit_time=message.commit_time, xid=txn.begin.xid, seq=seq)
                self._pending.append(row)
            self._received = max(self._received, message.end_lsn)

    def _row(self, oid: int, op: str, new=None, old=None, old_kind=None) -> None:
        relation = self._relations[oid]
        unchanged = [i for i, v in enumerate(new or ()) if v is UNCHANGED]
        self._open.rows.append({
            "relation": relation_name(relation.schema, relation.name), "op": op, "columns": columns_json(relation),
            "new": None if new is None else [None if v is UNCHANGED else v for v in new],
            "unchanged": unchanged or None,
            "old": None if old is None else [None if v is UNCHANGED else v for v in old], "old_kind": old_kind})

    def _flush(self, cur) -> None:
        """One Delta commit with the pending changes and the new position; then, only then, confirm the slot."""
        if self._received <= self._durable:
            return
        position = {"relation": POSITION, "lsn": self._received, "commit_time": dt.datetime.now(dt.UTC),
                    "xid": 0, "seq": 0, "op": "P", "note": self.slot}
        change_log.append(self.log, [*self._pending, position])
        cur.send_feedback(flush_lsn=self._received, reply=True)
        if self._pending:
            self.say(f"{len(self._pending)} change(s) durable up to {self._received:X}")
        self._pending, self._durable = [], self._received

"""The PostgreSQL capture: a long-running process (like Litestream or Debezium, not a Dagster run) that streams
every committed change of the protected tables from one logical replication slot (`pgoutput`, a publication of
those tables) into the change log, and confirms the slot's position only once the lake holds it durably.

What it sets on the server, and says so: the publication `aegis` (the protected tables that exist), the
slot `aegis_<database>` (created once; the log starts there), and REPLICA IDENTITY FULL on a protected table that
has neither a primary key nor a replica identity index — without it PostgreSQL refuses the application's UPDATE
and DELETE on a published table.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import select
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import psycopg2
import psycopg2.extras

from resources.capture import change_log
from resources.capture.change_log import ALTERED, GAP, POSITION, ChangeLogLocation, columns_json, relation_name
from resources.capture.pgoutput import (
    UNCHANGED,
    Begin,
    Change,
    Column,
    Commit,
    Message,
    Relation,
    Truncate,
    decode,
    lsn_text,
    parse_lsn,
)
from resources.checkpoints.keys import Keyring
from resources.databases.table_refs import TableRef, quote_name

PUBLICATION = "aegis"
RETRY_SECONDS = 2.0
MAX_PENDING = 50_000  # changes held before a flush is forced
SLOT_VAR = "AEGIS_CAPTURE_SLOT"  # default: aegis_<database> (slot names are the whole cluster's)
RESTORE_PREFIX = "aegis.restore"  # the logical message a restore writes in its own transaction
# the walsender formats values with these, as checkpoints read them (postgres_tables.SESSION)
SETTINGS = ("-c DateStyle=ISO,MDY -c IntervalStyle=postgres -c TimeZone=UTC -c extra_float_digits=1 "
            "-c bytea_output=hex -c lc_monetary=C")


class CaptureError(RuntimeError):
    """The capture cannot start or go on (and says why)."""


def slot_name(dsn: str) -> str:
    """`aegis_<database>`: one slot per source database, whose name no other database of the cluster takes."""
    database = urlsplit(dsn).path.lstrip("/") or "postgres"
    return ("aegis_" + re.sub(r"[^a-z0-9_]", "_", database.lower()))[:63]


def check_slot_name(name: str) -> str:
    if not re.fullmatch(r"[a-z0-9_]{1,63}", name):
        raise CaptureError(f"{SLOT_VAR}={name!r}: a replication slot name is 1-63 of a-z, 0-9 and _")
    return name


def prepare(dsn: str, refs: Sequence[TableRef], publication: str = PUBLICATION) -> list[str]:
    """The publication holds every protected table that exists (each with a replica identity). Returns what was
    changed."""
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


def shapes_now(dsn: str, refs: Sequence[TableRef]) -> dict[str, str]:
    """Each existing table's columns and replica identity as the catalog has them now, in the form the log keeps
    a Relation message's (columns_json): the shape an ALTER is told apart from before the table's first change
    reaches the capture. Dropped and generated columns are left out, as pgoutput leaves them out."""
    found = {}
    with psycopg2.connect(dsn, connect_timeout=10) as conn, conn.cursor() as cur:
        for ref in refs:
            cur.execute(
                "SELECT n.nspname, c.relname, c.relreplident, a.attname, a.atttypid, a.atttypmod, "
                "c.relreplident = 'f' OR a.attnum = ANY(coalesce((SELECT i.indkey::int2[] FROM pg_index i "
                "WHERE i.indrelid = c.oid AND CASE c.relreplident WHEN 'd' THEN i.indisprimary "
                "WHEN 'i' THEN i.indisreplident ELSE false END), '{}')) "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attribute a ON "
                "a.attrelid = c.oid WHERE c.oid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped "
                "AND a.attgenerated = '' ORDER BY a.attnum", (ref.sql,))
            rows = cur.fetchall()
            if rows:
                columns = tuple(Column(name, int(oid), int(typmod), bool(key)) for *_, name, oid, typmod, key in rows)
                relation = Relation(0, rows[0][0], rows[0][1], rows[0][2], columns)
                found[relation_name(relation.schema, relation.name)] = columns_json(relation)
    return found


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
    slot: str
    publication: str = PUBLICATION
    flush_seconds: float = 1.0
    say: Callable[[str], None] = print
    keyring: Keyring | None = None  # the checkpoint keyring: with a current key, every change's values are sealed
    tables: Sequence[TableRef] = ()  # the protected tables (their shapes now: an ALTER before their first change)
    _relations: dict[int, tuple[str, str]] = field(default_factory=dict)  # oid: schema.name, shape as announced
    _shapes: dict[str, str] = field(default_factory=dict)  # schema.name -> the columns last announced
    _pending: list[dict] = field(default_factory=list)
    _open: _Transaction | None = None
    _received: int = 0  # every transaction that ended at or before this LSN is in _pending or the lake
    _durable: int = 0
    _stopping: bool = False
    _started: bool = False

    def stop(self) -> None:
        self._stopping = True

    def run(self) -> None:
        """Stream until stopped, through outages: a source that restarts or cannot be reached is reconnected to
        (the slot re-sends what was not confirmed; what the lake already holds is recognised and skipped), and a
        lake that cannot be written keeps the changes in memory and the slot unconfirmed until it can."""
        if not self._started:
            self.begin()
        while not self._stopping:
            try:
                self.ensure_slot()
                self._stream()
            except psycopg2.Error as exc:
                self.say(f"the source connection failed ({str(exc).strip().splitlines()[0][:200]}); "
                         f"reconnecting in {RETRY_SECONDS:g} s (nothing unconfirmed is lost)")
                self._open, self._pending, self._received = None, [], self._durable
                time.sleep(RETRY_SECONDS)

    def ensure_slot(self) -> None:
        """The slot exists and still has every change the lake does not hold. A slot that is missing, or that lost
        WAL it had not delivered (max_slot_wal_keep_size, or the capture down past what the server kept), is made
        again, and the changes between the lake's position and the new slot are recorded as a gap: a restore will
        not replay across it, and capture_watch takes a fresh checkpoint."""
        with psycopg2.connect(self.dsn, connect_timeout=10) as conn, conn.cursor() as cur:
            cur.execute("SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s", (self.slot,))
            found = cur.fetchone()
            if found is not None and found[0] != "lost":
                return
            if found is not None:
                cur.execute("SELECT pg_drop_replication_slot(%s)", (self.slot,))
            conn.commit()
            cur.execute("SELECT lsn::text FROM pg_create_logical_replication_slot(%s, 'pgoutput')", (self.slot,))
            start = parse_lsn(cur.fetchone()[0])
        why = ("the slot had lost WAL it had not delivered" if found is not None else
               "there was no slot" + (" (dropped?)" if self._durable else " yet: the first start"))
        gap = {"relation": GAP, "lsn": start, "commit_time": dt.datetime.now(dt.UTC), "xid": 0, "seq": 0,
               "op": "G", "note": json.dumps({"from_lsn": self._durable, "to_lsn": start, "why": why})}
        change_log.append(self.log, [gap, {**gap, "relation": POSITION, "op": "P", "note": self.slot}])
        self._durable = self._received = max(self._durable, start)
        self.say(f"created replication slot {self.slot} at {lsn_text(start)} ({why}): changes are captured from "
                 "here on" + (f"; the changes after {lsn_text(gap_from)} are not in the log (a gap)"
                              if (gap_from := json.loads(gap['note'])['from_lsn']) else ""))

    def begin(self) -> None:
        """Where the lake stands, and a slot that continues from there (or a recorded gap)."""
        self._durable = self._received = self._lake_position()
        # an ALTER while the capture was away is still an ALTER; so is one before a table's first change
        self._shapes = {**shapes_now(self.dsn, self.tables), **change_log.last_shapes(self.log)}
        self.ensure_slot()
        self._started = True

    def _lake_position(self) -> int:
        while True:
            try:
                held = change_log.position(self.log)
                return held[0] if held else 0
            except Exception as exc:  # noqa: BLE001 - any storage error: the lake is away; try again
                self.say(f"cannot read the change log's position ({type(exc).__name__}); retrying in "
                         f"{RETRY_SECONDS:g} s")
                time.sleep(RETRY_SECONDS)

    def _stream(self) -> None:
        conn = psycopg2.connect(self.dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection,
                                options=SETTINGS, connect_timeout=10)
        try:
            cur = conn.cursor()
            cur.start_replication(slot_name=self.slot, decode=False, status_interval=5,
                                  options={"proto_version": "1", "publication_names": self.publication,
                                           "messages": "true"})
            last_flush = last_ask = time.monotonic()
            while not self._stopping:
                message = cur.read_message()
                if message is not None:
                    self._take(message.payload)
                    if len(self._pending) < MAX_PENDING:
                        continue
                else:
                    if self._open is None and cur.wal_end > self._received:
                        self._received = cur.wal_end  # keepalive: nothing committed before it is left unread
                    if time.monotonic() - last_ask >= self.flush_seconds:
                        cur.send_feedback(reply=True)  # the server answers with how far it has decoded
                        last_ask = time.monotonic()
                    select.select([cur], [], [], max(0.05, self.flush_seconds - (time.monotonic() - last_flush)))
                if time.monotonic() - last_flush >= self.flush_seconds or len(self._pending) >= MAX_PENDING:
                    self._flush(cur)
                    last_flush = time.monotonic()
            self._flush(cur)
        finally:
            conn.close()

    def _take(self, payload: bytes) -> None:
        message = decode(payload)
        if isinstance(message, Begin):
            self._open = _Transaction(message)
        elif isinstance(message, Relation):
            name, shape = relation_name(message.schema, message.name), columns_json(message)
            self._relations[message.oid] = (name, shape)
            if self._shapes.get(name, shape) != shape and self._open is not None:
                self._open.rows.append({"relation": ALTERED, "op": "S", "columns": shape, "note": json.dumps(
                    {"relation": name, "before": json.loads(self._shapes[name])})})
                self.say(f"{name}: its columns or replica identity changed (ALTER TABLE): a restore does not "
                         "replay across it; capture_watch takes a fresh checkpoint")
            self._shapes[name] = shape
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
            if message.end_lsn <= self._durable:
                return  # re-sent after a reconnect, and already in the lake: applied once
            for seq, row in enumerate(txn.rows):
                row.update(lsn=message.commit_lsn, commit_time=message.commit_time, xid=txn.begin.xid, seq=seq)
                self._pending.append(row)
            self._received = max(self._received, message.end_lsn)

    def _row(self, oid: int, op: str, new=None, old=None, old_kind=None) -> None:
        name, shape = self._relations[oid]  # serialised once per Relation message, not once per change
        unchanged = [i for i, v in enumerate(new) if v is UNCHANGED] if new is not None and UNCHANGED in new else None
        self._open.rows.append({
            "relation": name, "op": op, "columns": shape,
            "new": None if new is None else [None if v is UNCHANGED else v for v in new] if unchanged else list(new),
            "unchanged": unchanged,
            "old": None if old is None else [None if v is UNCHANGED else v for v in old], "old_kind": old_kind})

    def _flush(self, cur) -> None:
        """One Delta commit with the pending changes and the new position; then, only then, confirm the slot. A
        lake that cannot be written keeps everything pending (and the slot where it was) for the next try."""
        if self._received <= self._durable:
            return
        position = {"relation": POSITION, "lsn": self._received, "commit_time": dt.datetime.now(dt.UTC),
                    "xid": 0, "seq": 0, "op": "P", "note": self.slot}
        try:
            if self.keyring is not None:
                change_log.seal(self._pending, self.keyring)
            change_log.append(self.log, [*self._pending, position])
        except Exception as exc:  # noqa: BLE001 - any storage error: keep the changes, confirm nothing
            self.say(f"cannot write the change log ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                     f"{len(self._pending)} change(s) kept, the slot not confirmed, trying again in "
                     f"{RETRY_SECONDS:g} s")
            time.sleep(RETRY_SECONDS)
            return
        # durable first: should confirming fail (the connection went away while the lake was slow), the
        # changes the slot re-sends are recognised as held, never written twice
        landed, self._pending, self._durable = len(self._pending), [], self._received
        cur.send_feedback(flush_lsn=self._received, reply=True)
        if landed:
            self.say(f"{landed} change(s) durable up to {lsn_text(self._received)}")

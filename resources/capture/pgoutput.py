"""PostgreSQL's built-in logical decoding output (`pgoutput`, protocol version 1 plus logical messages) read
into plain values: which transaction began and committed where and when, the relations it touched (with their
columns, types and replica identity) and every row it inserted, updated, deleted or truncated.

Values arrive as the server's own text form (the walsender's session settings decide DateStyle, TimeZone,
extra_float_digits, bytea_output…: `capture_settings` fixes them the way checkpoints read values), so a value
restored with `text::type` is exactly the value that was committed. A value the UPDATE did not touch and that is
stored out of line arrives as UNCHANGED, never as a guess.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

POSTGRES_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
UNCHANGED = object()  # an out-of-line value the UPDATE left as it was (pgoutput's 'u')


class DecodingError(ValueError):
    """A message that is not what pgoutput sends (a different plugin, protocol or a damaged stream)."""


@dataclass(frozen=True)
class Column:
    name: str
    type_oid: int
    typmod: int
    key: bool


@dataclass(frozen=True)
class Relation:
    oid: int
    schema: str
    name: str
    replica_identity: str  # d(efault: primary key), n(othing), f(ull), i(ndex)
    columns: tuple[Column, ...]


@dataclass(frozen=True)
class Begin:
    final_lsn: int
    commit_time: datetime
    xid: int


@dataclass(frozen=True)
class Commit:
    commit_lsn: int
    end_lsn: int
    commit_time: datetime


@dataclass(frozen=True)
class Change:
    """One row change. `old` is the replica identity's columns ('K', others None) or the whole old row ('O');
    None when the server sent no old row (an UPDATE that kept its key)."""

    op: str  # I, U, D
    relation: int
    new: tuple | None = None
    old: tuple | None = None
    old_kind: str | None = None  # 'K' key only, 'O' the whole old row


@dataclass(frozen=True)
class Truncate:
    relations: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@dataclass(frozen=True)
class Message:
    """A logical decoding message (`pg_logical_emit_message`), transactional or not."""

    transactional: bool
    lsn: int
    prefix: str
    content: bytes


_STRUCTS: dict[str, struct.Struct] = {}


@dataclass
class _Reader:
    data: bytes
    at: int = field(default=0)

    def take(self, fmt: str):
        layout = _STRUCTS.get(fmt) or _STRUCTS.setdefault(fmt, struct.Struct(fmt))
        if self.at + layout.size > len(self.data):
            raise DecodingError("message ends before its fields do")
        values = layout.unpack_from(self.data, self.at)
        self.at += layout.size
        return values[0] if len(values) == 1 else values

    def string(self) -> str:
        end = self.data.find(b"\0", self.at)
        if end < 0:
            raise DecodingError("unterminated string")
        text = self.data[self.at:end].decode("utf-8")
        self.at = end + 1
        return text

    def raw(self, size: int) -> bytes:
        if size < 0 or self.at + size > len(self.data):
            raise DecodingError("value longer than its message")
        chunk = self.data[self.at:self.at + size]
        self.at += size
        return chunk


def _time(micros: int) -> datetime:
    return POSTGRES_EPOCH + timedelta(microseconds=micros)


_LENGTH = struct.Struct("!i")


def _tuple(reader: _Reader) -> tuple:
    """A row's values (the hot path: one call per change, so it reads the buffer directly)."""
    data, at = reader.data, reader.at
    if at + 2 > len(data):
        raise DecodingError("message ends before its fields do")
    count = int.from_bytes(data[at:at + 2], "big", signed=True)
    at += 2
    values = []
    for _ in range(count):
        kind = data[at:at + 1]
        at += 1
        if kind == b"t":
            if at + 4 > len(data):
                raise DecodingError("message ends before its fields do")
            size = _LENGTH.unpack_from(data, at)[0]
            at += 4
            if size < 0 or at + size > len(data):
                raise DecodingError("value longer than its message")
            values.append(data[at:at + size].decode("utf-8"))
            at += size
        elif kind == b"n":
            values.append(None)
        elif kind == b"u":
            values.append(UNCHANGED)
        elif not kind:
            raise DecodingError("message ends before its fields do")
        else:
            raise DecodingError(f"a column value of kind {kind!r} (binary values are not asked for)")
    reader.at = at
    return tuple(values)


def decode(payload: bytes):
    """One pgoutput message as a Begin, Commit, Relation, Change, Truncate or Message; None for the kinds that
    carry nothing a change log keeps (origin, type)."""
    reader = _Reader(payload if isinstance(payload, bytes) else bytes(payload))
    kind = payload[:1]
    reader.at = 1
    if kind == b"I":  # the most frequent first
        relation = reader.take("!I")
        if reader.take("!c") != b"N":
            raise DecodingError("an insert without its new row")
        return Change("I", relation, new=_tuple(reader))
    if kind == b"B":
        final_lsn, micros, xid = reader.take("!qqI")
        return Begin(final_lsn, _time(micros), xid)
    if kind == b"C":
        _flags, commit_lsn, end_lsn, micros = reader.take("!bqqq")
        return Commit(commit_lsn, end_lsn, _time(micros))
    if kind == b"R":
        oid = reader.take("!I")
        schema, name = reader.string(), reader.string()
        identity = chr(reader.take("!B"))
        columns = []
        for _ in range(reader.take("!h")):
            flags = reader.take("!b")
            column_name = reader.string()
            type_oid, typmod = reader.take("!Ii")
            columns.append(Column(column_name, type_oid, typmod, bool(flags & 1)))
        return Relation(oid, schema, name, identity, tuple(columns))
    if kind == b"U":
        relation = reader.take("!I")
        marker = reader.take("!c")
        old = old_kind = None
        if marker in (b"K", b"O"):
            old, old_kind = _tuple(reader), marker.decode()
            marker = reader.take("!c")
        if marker != b"N":
            raise DecodingError("an update without its new row")
        return Change("U", relation, new=_tuple(reader), old=old, old_kind=old_kind)
    if kind == b"D":
        relation = reader.take("!I")
        marker = reader.take("!c")
        if marker not in (b"K", b"O"):
            raise DecodingError("a delete without its old row")
        return Change("D", relation, old=_tuple(reader), old_kind=marker.decode())
    if kind == b"T":
        count, options = reader.take("!ib")
        relations = tuple(reader.take("!I") for _ in range(count))
        return Truncate(relations, bool(options & 1), bool(options & 2))
    if kind == b"M":
        transactional = bool(reader.take("!b"))
        lsn = reader.take("!q")
        prefix = reader.string()
        return Message(transactional, lsn, prefix, reader.raw(reader.take("!i")))
    if kind in (b"O", b"Y"):
        return None
    raise DecodingError(f"unknown pgoutput message {kind!r}")


def lsn_text(lsn: int) -> str:
    """An LSN as PostgreSQL writes it (`16/B374D848`)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    high, _, low = text.partition("/")
    try:
        return (int(high, 16) << 32) | int(low, 16)
    except ValueError:
        raise ValueError(f"not an LSN: {text!r}") from None

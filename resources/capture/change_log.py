"""The change log: every committed change of the protected tables, append-only, in one Delta table of the lake
(`<lake>/changes/log`, partitioned by the table's `schema.name`).

One row per change: the transaction's commit LSN, commit time and id, the change's place in it, the operation
(I insert, U update, D delete, T truncate, R a restore by Aegis, S the table's columns changed, P the capture's
position, G a gap: changes the log does not hold), the relation's
columns as the server described them, and the values as the server's own text: `new` (with the columns an
UPDATE left untouched out of line listed in `unchanged`), `old` (the key, or the whole old row). A batch of
transactions lands in one Delta commit, the capture's position row with it, so what the lake holds and where the
capture stands can never disagree; the replication slot is confirmed only after that commit.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError

from resources.capture.pgoutput import Relation
from resources.checkpoints.format import decrypt, encrypt
from resources.checkpoints.keys import Keyring
from resources.lake.lake import Lake

POSITION = "_position"  # the relation under which the capture records how far the lake holds the stream
GAP = "_gap"  # changes the log does not hold (a slot made again): from_lsn, to_lsn and why, in the note
ALTERED = "_altered"  # a protected table's columns changed (its relation, the columns before, in the note)
SCHEMA = pa.schema([
    pa.field("relation", pa.string(), nullable=False),  # schema.name, the partition
    pa.field("lsn", pa.int64(), nullable=False),  # the transaction's commit LSN
    pa.field("commit_time", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("xid", pa.int64(), nullable=False),
    pa.field("seq", pa.int32(), nullable=False),  # the change's place in its transaction
    pa.field("op", pa.string(), nullable=False),
    pa.field("columns", pa.string()),  # JSON: replica identity and columns, as the Relation message said
    pa.field("new", pa.list_(pa.large_string())),
    pa.field("unchanged", pa.list_(pa.int16())),
    pa.field("old", pa.list_(pa.large_string())),
    pa.field("old_kind", pa.string()),
    pa.field("note", pa.string()),  # R: what the restore put in place (JSON); P: the slot
    pa.field("sealed", pa.binary()),  # with a checkpoint key: new, old and unchanged, AES-256-GCM (then null above)
    pa.field("key_id", pa.string()),  # the key's public id (never the key)
    pa.field("digest", pa.string()),  # unsealed: a checksum of everything the change says (digest()); sealed: null
])
VALUES = ("new", "unchanged", "old")


class ChangeLogError(RuntimeError):
    """The change log cannot be read or written, or does not cover what was asked."""


@dataclass(frozen=True)
class ChangeLogLocation:
    uri: str
    storage_options: dict[str, str]


def location(lake: Lake) -> ChangeLogLocation:
    uri, options = lake.changes_uri()
    return ChangeLogLocation(uri, options)


def relation_name(schema: str, name: str) -> str:
    return f"{schema}.{name}"


def columns_json(relation: Relation) -> str:
    """The relation's shape as the log keeps it: replica identity and [name, type oid, typmod, key] per column."""
    return json.dumps({"identity": relation.replica_identity,
                       "columns": [[c.name, c.type_oid, c.typmod, c.key] for c in relation.columns]},
                      separators=(",", ":"))


NONE = "\x00"  # how a missing value or list is written in a change's canonical text
DIGESTED = ("relation", "lsn", "commit_time", "xid", "seq", "op", "columns", "new", "unchanged", "old", "old_kind",
            "note")


def _as_text(column: pa.ChunkedArray) -> pa.Array:
    """Each value as text, NONE where null; a list's values joined by RS, each marked so that a null and an empty
    text differ."""
    text = pa.large_string()
    column = column.combine_chunks()
    if pa.types.is_timestamp(column.type):
        column = column.cast(pa.int64())
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        values = pc.list_flatten(column).cast(text)
        marked = pc.fill_null(pc.binary_join_element_wise(pa.scalar("=", text), values, pa.scalar("", text)),
                              pa.scalar(NONE, text))
        lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False)
        offsets = pa.array([0, *lengths.cumsum()], pa.int64())
        joined = pc.binary_join(pa.LargeListArray.from_arrays(offsets, marked), pa.scalar("\x1e", text))
        return pc.if_else(pc.is_null(column), pa.scalar(NONE, text), joined)
    return pc.fill_null(column.cast(text), pa.scalar(NONE, text))


def digests(table: pa.Table) -> list[str]:
    """The checksum of each change (rows of SCHEMA): where, when, which transaction, what and its values."""
    if not table.num_rows:
        return []
    canonical = pc.binary_join_element_wise(*(_as_text(table[name]) for name in DIGESTED),
                                            pa.scalar("\x1f", pa.large_string()))
    return [hashlib.blake2b(text.encode(), digest_size=8).hexdigest() for text in canonical.to_pylist()]


def digest(row: dict) -> str:
    """The checksum of one change (a dict of SCHEMA's fields)."""
    return digests(pa.Table.from_pylist([row], schema=SCHEMA))[0]


def stamped(table: pa.Table) -> pa.Table:
    """Every unsealed change with its checksum; a sealed one is authenticated by its key instead."""
    found = pa.array(digests(table), pa.string())
    stamps = pc.if_else(pc.is_null(table["sealed"]), found, pa.scalar(None, pa.string())) if table.num_rows else found
    return table.set_column(SCHEMA.get_field_index("digest"), "digest", stamps)


def check(table: pa.Table) -> None:
    """Every change that carries a checksum still matches it (rows of SCHEMA, opened): else nothing is replayed."""
    if not table.num_rows:
        return
    found = pa.array(digests(table), pa.string())
    wrong = pc.fill_null(pc.not_equal(found, table["digest"]), False)
    if pc.any(wrong).as_py():
        row = table.filter(wrong).slice(0, 1).to_pylist()[0]
        raise ChangeLogError(f"the change of {row['relation']} at LSN {row['lsn']} (transaction {row['xid']}, "
                             f"change {row['seq']}) does not match its checksum: the change log was altered or "
                             "damaged, so nothing was replayed")


def append(loc: ChangeLogLocation, rows: list[dict]) -> None:
    """Land `rows` (dicts with SCHEMA's fields) in one Delta commit, each with its checksum; durable when this
    returns."""
    if not rows:
        return
    table = stamped(pa.Table.from_pylist(rows, schema=SCHEMA))
    try:
        target = DeltaTable(loc.uri, storage_options=loc.storage_options)
    except TableNotFoundError:
        target = loc.uri
    write_deltalake(target, table, mode="append", partition_by=["relation"], storage_options=loc.storage_options,
                    schema_mode="merge")


def _associated(row: dict) -> bytes:
    """What a sealed change is bound to: moving it to another table, transaction or place fails to open it."""
    return f"aegis-change|{row['relation']}|{row['lsn']}|{row['xid']}|{row['seq']}".encode()


def seal(rows: list[dict], keyring: Keyring) -> None:
    """Encrypt every change's values with the ring's current key (in place); nothing when there is none."""
    key = keyring.current_key
    if key is None:
        return
    for row in rows:
        if any(row.get(name) is not None for name in VALUES):
            payload = json.dumps({name: row.get(name) for name in VALUES}, separators=(",", ":")).encode()
            row.update(sealed=encrypt(key, payload, _associated(row)), key_id=keyring.current,
                       **dict.fromkeys(VALUES))


def _opened(table: pa.Table, keyring: Keyring | None) -> pa.Table:
    if not table.num_rows or table["sealed"].null_count == table.num_rows:
        return table
    rows = table.to_pylist()
    for row in rows:
        if row["sealed"] is None:
            continue
        key = keyring.key(row["key_id"]) if keyring is not None else None
        if key is None:
            raise ChangeLogError(f"the change log of {row['relation']} is encrypted with key {row['key_id']}, which "
                                 f"{'no key is configured' if keyring is None else 'the keyring does not hold'} "
                                 "(AEGIS_CHECKPOINT_KEYS / AEGIS_CHECKPOINT_KEY): nothing was replayed")
        row.update(json.loads(decrypt(key, row["sealed"], _associated(row))), sealed=None)
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def delta_table(loc: ChangeLogLocation) -> DeltaTable | None:
    try:
        return DeltaTable(loc.uri, storage_options=loc.storage_options)
    except TableNotFoundError:
        return None


def scan(loc: ChangeLogLocation, columns: list[str] | None, filters: list[tuple]) -> pa.Table:
    """The log's rows that pass `filters` (only `columns`); empty before the capture wrote anything."""
    log = delta_table(loc)
    if log is None:
        return SCHEMA.empty_table() if columns is None else SCHEMA.empty_table().select(columns)
    return log.to_pyarrow_table(columns=columns, filters=filters)


def _newest(found: pa.Table) -> tuple[int, dt.datetime] | None:
    """(lsn, commit_time) of the row with the highest LSN."""
    if not found.num_rows:
        return None
    at = pc.index(found["lsn"], pc.max(found["lsn"])).as_py()
    return int(found["lsn"][at].as_py()), found["commit_time"][at].as_py()


REPLAYED = ("lsn", "xid", "seq", "op", "columns", "new", "unchanged", "old", "note")


def replayable(table: pa.Table) -> list[dict]:
    """A relation's changes (as read()) as the replay folds them: only what it needs, each with its place `at` in
    `table` (commit time, checksum and the rest stay there)."""
    rows = table.select(list(REPLAYED)).to_pylist()
    for at, row in enumerate(rows):
        row["at"] = at
    return rows


def read(loc: ChangeLogLocation, relation: str, after_lsn: int | None = None,
         through_lsn: int | None = None, keyring: Keyring | None = None) -> pa.Table:
    """A relation's changes in commit order (LSN, then place in the transaction), opened with `keyring`."""
    filters = [("relation", "=", relation)]
    if after_lsn is not None:
        filters.append(("lsn", ">", after_lsn))
    if through_lsn is not None:
        filters.append(("lsn", "<=", through_lsn))
    table = scan(loc, None, filters)
    table = _conformed(table) if table.num_rows else SCHEMA.empty_table()
    return _opened(table, keyring).sort_by([("lsn", "ascending"), ("seq", "ascending")])


def _conformed(table: pa.Table) -> pa.Table:
    """The stored rows in SCHEMA's shape (a log written before a column existed lacks it: nulls)."""
    columns = [table[name] if name in table.column_names else pa.nulls(table.num_rows, field.type)
               for name, field in zip(SCHEMA.names, SCHEMA, strict=True)]
    return pa.Table.from_arrays(columns, schema=SCHEMA)


def position(loc: ChangeLogLocation) -> tuple[int, str] | None:
    """(LSN, when) up to which every committed transaction is in the lake, or None before the first flush."""
    newest = _newest(scan(loc, ["lsn", "commit_time"], [("relation", "=", POSITION)]))
    return None if newest is None else (newest[0], newest[1].isoformat())


def transaction(loc: ChangeLogLocation, relations: list[str], xid: int) -> tuple[int, dt.datetime] | None:
    """(commit LSN, commit time) of the newest transaction `xid` that touched any of `relations`."""
    return _newest(scan(loc, ["lsn", "commit_time"], [("relation", "in", relations), ("xid", "=", xid)]))


def commit_lsn_at(loc: ChangeLogLocation, relations: list[str], as_of) -> int | None:
    """The LSN of the last commit at or before `as_of` that touched any of `relations` (None: none did)."""
    newest = _newest(scan(loc, ["lsn", "commit_time"], [("relation", "in", relations),
                                                          ("commit_time", "<=", as_of)]))
    return None if newest is None else newest[0]


def events(loc: ChangeLogLocation, after_lsn: int = 0) -> list[dict]:
    """Gaps and ALTERs after `after_lsn`, oldest first: {kind: gap|altered, lsn, at, relation (None: every
    table), why}."""
    found = scan(loc, ["relation", "lsn", "commit_time", "note"],
                  [("relation", "in", [GAP, ALTERED]), ("lsn", ">", after_lsn)]).to_pylist()
    said = []
    for row in found:
        note = json.loads(row["note"])
        said.append({"kind": "gap" if row["relation"] == GAP else "altered", "lsn": row["lsn"],
                     "at": row["commit_time"], "relation": note.get("relation"),
                     "why": note.get("why") or "its columns changed (ALTER TABLE)"})
    return sorted(said, key=lambda e: e["lsn"])


def gaps(loc: ChangeLogLocation) -> list[dict]:
    """Every stretch of WAL the log does not hold: {from_lsn, to_lsn, at, why}, oldest first."""
    found = scan(loc, ["commit_time", "note"], [("relation", "=", GAP)]).to_pylist()
    return sorted(({**json.loads(r["note"]), "at": r["commit_time"]} for r in found), key=lambda g: g["to_lsn"])


def activity(loc: ChangeLogLocation, relations: list[str], since: dt.datetime) -> pa.Table:
    """The changes of `relations` committed since `since`: relation, lsn, commit_time, xid and op, one row per
    change (what the timeline and the shrink alert summarise)."""
    return scan(loc, ["relation", "lsn", "commit_time", "xid", "op"],
                 [("relation", "in", relations), ("commit_time", ">=", since)])


def last_shapes(loc: ChangeLogLocation) -> dict[str, str]:
    """Each relation's columns as the log last recorded them (what an ALTER is told apart from after a restart)."""
    found = scan(loc, ["relation", "lsn", "columns"], [("columns", "!=", "")]).sort_by("lsn")
    found = found.filter(pc.invert(pc.starts_with(found["relation"], "_")))
    last = found.group_by("relation", use_threads=False).aggregate([("columns", "last")])
    return dict(zip(last["relation"].to_pylist(), last["columns_last"].to_pylist(), strict=True))


def positions(loc: ChangeLogLocation) -> pa.Table:
    """Every flush the capture recorded (lsn, the time it began), in LSN order (make bench-capture's RPO)."""
    return scan(loc, ["lsn", "commit_time"], [("relation", "=", POSITION)]).sort_by("lsn")


def largest_transactions(changes: pa.Table, limit: int = 10) -> list[dict]:
    """The transactions that touched the most rows, newest first among equals: xid, commit time, rows per op."""
    if not changes.num_rows:
        return []
    counted = changes.group_by(["xid", "lsn", "commit_time", "op"]).aggregate([([], "count_all")]).to_pylist()
    found: dict[tuple, dict] = {}
    for row in counted:
        entry = found.setdefault((row["xid"], row["lsn"]), {"xid": row["xid"], "lsn": row["lsn"],
                                                            "commit_time": row["commit_time"], "I": 0, "U": 0,
                                                            "D": 0, "T": 0})
        if row["op"] in "IUDT":
            entry[row["op"]] += row["count_all"]
    ranked = sorted(found.values(), key=lambda e: (e["I"] + e["U"] + e["D"] + e["T"], e["lsn"]), reverse=True)
    return [e for e in ranked if e["I"] + e["U"] + e["D"] + e["T"]][:limit]

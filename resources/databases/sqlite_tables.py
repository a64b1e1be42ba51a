"""Exact copies of SQLite tables: every value with its storage class and exact bytes, every schema object.

Values are read through Python's own `sqlite3` module, which hands over SQLite's values without guessing
a column type (text stays raw bytes until we decode it). A census of storage classes decides how each
column travels: one class → a plain Arrow column (int64, float64 with all 17 digits, string, binary); a
column that mixes classes → a struct of the four classes, one set per row. The rowid travels too, unless
the table has an INTEGER PRIMARY KEY (which is the rowid) or is WITHOUT ROWID.

Schema: the exact CREATE TABLE (STRICT, WITHOUT ROWID, generated columns), its indexes and triggers as
`sqlite_master` holds them, and the table's `sqlite_sequence` entry (AUTOINCREMENT).

Fingerprint: SQLite writes every row as `quote()` literals (class-exact: 3, 3.0, '3', X'33'), and the
sum of their MD5s (mod 2^64) is taken at checkpoint time and again over the restored rows.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from operator import itemgetter

import duckdb
import pyarrow as pa

from resources.databases.table_refs import TableRef, quote_name

FINGERPRINT_ALGORITHM = "sqlite-quote-md5-sum64"
CLASSES = ("integer", "real", "text", "blob")
MIXED = pa.struct([("integer", pa.int64()), ("real", pa.float64()), ("text", pa.binary()), ("blob", pa.binary())])
ARROW = {"integer": pa.int64(), "real": pa.float64(), "text": pa.string(), "blob": pa.binary(), "mixed": MIXED}
ROWID = "_rowid_"
BATCH_ROWS = 65_536
_MAX = 1 << 64


def connect(path: str) -> sqlite3.Connection:
    """A connection that returns SQLite's values untouched (text as bytes) and leaves transactions to us."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=60, check_same_thread=False)
    conn.text_factory = bytes
    return conn


def as_text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value  # catalogue text read with text_factory=bytes


def schema_objects(conn: sqlite3.Connection, ref: TableRef) -> dict:
    """The table's CREATE TABLE, indexes and triggers as sqlite_master holds them, and its AUTOINCREMENT seq."""
    master = f"{quote_name(ref.schema)}.sqlite_master"
    rows = conn.execute(f"SELECT type, name, sql FROM {master} WHERE tbl_name = ? AND sql IS NOT NULL "
                        "ORDER BY type, name", (ref.name,)).fetchall()
    objects = {"table": None, "indexes": [], "triggers": []}
    for kind, _, sql in rows:
        kind, sql = as_text(kind), as_text(sql)
        if kind == "table":
            objects["table"] = sql
        elif kind in ("index", "trigger"):
            objects[f"{kind}es" if kind == "index" else "triggers"].append(sql)
    has_sequence = conn.execute(f"SELECT count(*) FROM {master} WHERE name = 'sqlite_sequence'").fetchone()[0]
    seq = conn.execute(f"SELECT seq FROM {quote_name(ref.schema)}.sqlite_sequence WHERE name = ?",
                       (ref.name,)).fetchone() if has_sequence else None
    objects["sequence"] = seq[0] if seq else None
    return objects


def columns(conn: sqlite3.Connection, ref: TableRef, table_sql: str) -> list[dict]:
    """Each column in order with how it travels, decided by a census of the storage classes it holds."""
    info = conn.execute(f"SELECT name, type, pk, hidden FROM {quote_name(ref.schema)}.pragma_table_xinfo(?)",
                        (ref.name,)).fetchall()
    cols = [{"name": as_text(n), "type": as_text(t), "pk": pk, "generated": hidden in (2, 3)}
            for n, t, pk, hidden in info]
    carried = [c for c in cols if not c["generated"]]
    if carried:  # one pass, one CASE per value: the classes present in a column as a bit mask
        bits = " ".join(f"WHEN '{k}' THEN {1 << i}" for i, k in enumerate(CLASSES))
        masks = ", ".join(f"coalesce(sum(DISTINCT CASE typeof({quote_name(c['name'])}) {bits} END), 0)"
                          for c in carried)
        census = conn.execute(f"SELECT {masks} FROM {ref.sql}").fetchone()
        for column, mask in zip(carried, census, strict=True):
            column["classes"] = [k for i, k in enumerate(CLASSES) if int(mask) & (1 << i)]
    for column in cols:
        column["travel"] = ("generated" if column["generated"] else "mixed" if len(column["classes"]) > 1
                            else (column["classes"] or ["integer"])[0])
    if _carries_rowid(cols, table_sql):
        cols.append({"name": ROWID, "type": "ROWID", "pk": 0, "generated": False, "travel": "integer",
                     "rowid": True})
    return cols


def _carries_rowid(cols: list[dict], table_sql: str) -> bool:
    if re.search(r"\bWITHOUT\s+ROWID\s*[,;]?\s*(STRICT)?\s*$", table_sql, re.IGNORECASE | re.DOTALL):
        return False
    keys = [c for c in cols if c["pk"]]
    integer_key = len(keys) == 1 and keys[0]["type"].upper() == "INTEGER"
    return not integer_key and all(c["name"].lower() != ROWID for c in cols)


def arrow_schema(cols: list[dict]) -> pa.Schema:
    return pa.schema([pa.field(c["name"], ARROW[c["travel"]]) for c in cols if c["travel"] != "generated"])


def read_batches(conn: sqlite3.Connection, ref: TableRef, cols: list[dict]) -> Iterator[pa.RecordBatch]:
    """The carried columns as Arrow batches; mixed columns read with their storage class."""
    carried = [c for c in cols if c["travel"] != "generated"]
    parts = []
    for column in carried:
        name = quote_name(column["name"])
        parts.extend([f"typeof({name})", name] if column["travel"] == "mixed" else [name])
    schema = arrow_schema(cols)
    cursor = conn.execute(f"SELECT {', '.join(parts) or 'NULL'} FROM {ref.sql}")
    width = len(parts)
    while rows := cursor.fetchmany(BATCH_ROWS):  # columns by itemgetter: three times faster than zip(*rows)
        values, position, arrays = [list(map(itemgetter(i), rows)) for i in range(width)], 0, []
        for column in carried:
            if column["travel"] == "mixed":
                arrays.append(_mixed(values[position], values[position + 1]))
                position += 2
            else:
                arrays.append(_plain(column, values[position]))
                position += 1
        yield pa.RecordBatch.from_arrays(arrays, schema=schema)


def _plain(column: dict, values: tuple) -> pa.Array:
    if column["travel"] != "text":
        return pa.array(values, ARROW[column["travel"]])
    try:
        return pa.array(values, pa.binary()).cast(pa.string())
    except pa.ArrowInvalid:
        raise ValueError(f"column {column['name']!r} holds text that is not valid UTF-8; it cannot be "
                         "checkpointed as text") from None


def _mixed(classes: tuple, values: tuple) -> pa.StructArray:
    children = {kind: [v if c == kind.encode() else None for c, v in zip(classes, values, strict=True)]
                for kind in CLASSES}
    return pa.StructArray.from_arrays([pa.array(children[k], MIXED.field(k).type) for k in CLASSES],
                                      fields=list(MIXED))


def fingerprint(conn: sqlite3.Connection, table_sql: str, cols: list[dict]) -> tuple[int, str]:
    """Row count and the fingerprint of SQLite's own `quote()` of every value of every row."""
    row = " || char(31) || ".join(f"quote({quote_name(c['name'])})" for c in cols) or "''"
    cursor = conn.execute(f"SELECT {row} FROM {table_sql}")
    con, total, count = duckdb.connect(), 0, 0
    while rows := cursor.fetchmany(BATCH_ROWS):
        con.register("quoted_rows", pa.table({"s": pa.array([r[0] for r in rows], pa.binary())}))
        total += int(con.sql("SELECT sum(md5_number_lower(s)::HUGEINT) FROM quoted_rows").fetchall()[0][0])
        count += len(rows)
    return count, f"{total % _MAX:016x}"


# ------------------------------------------------------------------ restore steps (inside one transaction)


def insert_rows(conn: sqlite3.Connection, target_sql: str, cols: list[dict], reader: pa.RecordBatchReader) -> None:
    """Insert every row with the storage class it had (text bound as text, mixed columns by their class)."""
    carried = [c for c in cols if c["travel"] != "generated"]
    names, params, number = [], [], 1
    for column in carried:
        names.append(quote_name(column["name"]))
        if column["travel"] == "mixed":
            params.append(f"CASE ?{number} WHEN 'text' THEN CAST(?{number + 1} AS TEXT) ELSE ?{number + 1} END")
            number += 2
        else:
            params.append(f"?{number}")
            number += 1
    sql = f"INSERT INTO {target_sql} ({', '.join(names)}) VALUES ({', '.join(params)})"
    for batch in reader:
        lists = []
        for column, array in zip(carried, batch.columns, strict=True):
            if column["travel"] == "mixed":
                lists.extend(_tagged(array))
            else:
                lists.append(_python_values(array))
        conn.executemany(sql, zip(*lists, strict=True))


def _python_values(array: pa.Array) -> list:
    """The values as Python objects, the fast way where it is exact: through NumPy for numbers without nulls and
    for text and blobs (None stays None); Arrow's own conversion otherwise (numbers with nulls)."""
    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind) \
            or pa.types.is_large_binary(kind):
        return array.to_numpy(zero_copy_only=False).tolist()
    if (pa.types.is_integer(kind) or pa.types.is_floating(kind)) and array.null_count == 0:
        return array.to_numpy().tolist()
    return array.to_pylist()


def _tagged(array: pa.StructArray) -> tuple[list, list]:
    """(class, value) per row from a mixed column."""
    children = {k: array.field(k).to_pylist() for k in CLASSES}
    tags, values = [], []
    for i in range(len(array)):
        kind = next((k for k in CLASSES if children[k][i] is not None), None)
        tags.append(kind)
        values.append(children[kind][i] if kind else None)
    return tags, values


def restore_sequence(conn: sqlite3.Connection, ref: TableRef, seq: int | None) -> None:
    """The AUTOINCREMENT counter at least where it stood (inserting the rows may already have moved it up)."""
    if seq is None:
        return
    table = f"{quote_name(ref.schema)}.sqlite_sequence"
    if conn.execute(f"UPDATE {table} SET seq = max(seq, ?) WHERE name = ?", (seq, ref.name)).rowcount == 0:
        conn.execute(f"INSERT INTO {table} (name, seq) VALUES (?, ?)", (ref.name, seq))

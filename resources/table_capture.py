"""Reading tables for a checkpoint: one consistent snapshot for a group of tables, exact values, the schema
objects, and a fingerprint computed by the database itself. Which types travel how: `postgres_tables.py`
and `sqlite_tables.py`."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import pyarrow as pa

from resources import postgres_tables as pg
from resources import sqlite_tables as lite
from resources.adbc import adbc_connection
from resources.table_refs import TableRef
from resources.urls import ParsedUrl, absolute

STREAM_BATCH_ROWS = 65_536


class UnknownTableError(LookupError):
    """The named table is not in the source database."""


@dataclass
class Captured:
    """One table as the snapshot holds it. `batches()` streams its rows while the snapshot is open."""

    ref: TableRef
    definition: dict  # the manifest's "source": kind, table, columns and how each travels, schema objects
    schema: pa.Schema
    rows: int
    fingerprint: str
    batches: Callable[[], Iterator[pa.RecordBatch]]


@contextmanager
def capture(parsed: ParsedUrl, variable: str, refs: Sequence[TableRef]) -> Iterator[dict[str, Captured]]:
    """Every table of `refs` from one snapshot, keyed by table id. Types that cannot travel exactly, and
    tables that do not exist, fail here, before a caller writes anything."""
    if parsed.scheme == "sqlite":
        with _capture_sqlite(parsed, refs) as captured:
            yield captured
    else:
        with _capture_postgres(parsed, variable, refs) as captured:
            yield captured


@contextmanager
def _capture_sqlite(parsed: ParsedUrl, refs: Sequence[TableRef]) -> Iterator[dict[str, Captured]]:
    conn = lite.connect(absolute(parsed.location))
    try:
        conn.execute("BEGIN")  # one read transaction: every table from the same state of the file
        captured = {}
        for ref in (r.in_schema("main") for r in refs):
            objects = lite.schema_objects(conn, ref)
            if objects["table"] is None:
                raise UnknownTableError(f"table {ref.label!r} does not exist in the source database")
            cols = lite.columns(conn, ref, objects["table"])
            rows, fingerprint = lite.fingerprint(conn, ref.sql, cols)
            definition = {"kind": "sqlite", "table": ref.to_json(), "columns": cols, "objects": objects,
                          "fingerprint_algorithm": lite.FINGERPRINT_ALGORITHM}
            captured[ref.id] = Captured(ref, definition, lite.arrow_schema(cols), rows, fingerprint,
                                        lambda ref=ref, cols=cols: lite.read_batches(conn, ref, cols))
        yield captured
    finally:
        conn.rollback()
        conn.close()


@contextmanager
def _capture_postgres(parsed: ParsedUrl, variable: str, refs: Sequence[TableRef]) -> Iterator[dict[str, Captured]]:
    with adbc_connection(parsed, variable) as conn:
        default = pg.open_session(conn)
        refs = [r.in_schema(default) for r in refs]
        with pg.snapshot(conn) as snapshot_name:
            plans = {}
            for ref in refs:
                with conn.cursor() as cur:
                    if pg.to_regclass_missing(cur, ref.sql):
                        raise UnknownTableError(f"table {ref.label!r} does not exist in the source database")
                plans[ref.id] = pg.columns(conn, ref)  # refuses a type that cannot travel, before any writing
            captured = {}
            for ref in refs:
                cols = plans[ref.id]
                rows, fingerprint = pg.fingerprint(conn, ref.sql)
                definition = {"kind": "postgres", "table": ref.to_json(), "columns": cols,
                              "objects": pg.dump_schema(parsed.location, ref, snapshot_name),
                              "sequences": pg.owned_sequences(conn, ref),
                              "referenced_by": pg.referenced_by(conn, ref),
                              "fingerprint_algorithm": pg.FINGERPRINT_ALGORITHM}
                schema = _postgres_schema(conn, ref, cols)
                captured[ref.id] = Captured(ref, definition, schema, rows, fingerprint,
                                            lambda ref=ref, cols=cols: _stream_postgres(conn, ref, cols))
            yield captured


def _postgres_schema(conn, ref: TableRef, cols: list[dict]) -> pa.Schema:
    with conn.cursor() as cur:
        cur.execute(pg.select_sql(ref, cols) + " LIMIT 0")
        schema = cur.fetch_arrow_table().schema
    return pa.schema([pa.field(f.name, f.type) for f in schema])  # without the driver's field metadata


def _stream_postgres(conn, ref: TableRef, cols: list[dict]) -> Iterator[pa.RecordBatch]:
    with conn.cursor() as cur:
        cur.execute(pg.select_sql(ref, cols))
        yield from cur.fetch_record_batch()

"""Reading tables for a checkpoint: one consistent snapshot for a group of tables, exact values, the schema
objects, and a fingerprint computed by the database itself. Which types travel how: `postgres_tables.py`
and `sqlite_tables.py`."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import pyarrow as pa

from resources.databases import postgres_tables as pg
from resources.databases import sqlite_tables as lite
from resources.databases.adbc import adbc_connection
from resources.databases.table_refs import TableRef
from resources.subjects import sealing_for
from resources.urls import ParsedUrl, absolute

STREAM_BATCH_ROWS = 65_536


class UnknownTableError(LookupError):
    """The named table is not in the source database."""


@dataclass
class Captured:
    """One table as the snapshot holds it. `batches()` streams its rows while the snapshot is open; its row
    count, fingerprint and schema objects may still be being computed beside the stream (futures)."""

    ref: TableRef
    partial: dict  # the manifest's "source" (kind, table, columns and how each travels, …) but its objects
    schema: pa.Schema
    counted: Future  # (rows, fingerprint), computed by the database on the same snapshot
    batches: Callable[[], Iterator[pa.RecordBatch]]
    objects: Future | None = None  # the schema objects, when they are still being dumped
    counted_without: Future | None = None  # a subject table's (rows, fingerprint) without its personal columns

    @property
    def fingerprint_without_personal(self) -> str | None:
        return self.counted_without.result()[1] if self.counted_without is not None else None

    @property
    def rows(self) -> int:
        return self.counted.result()[0]

    @property
    def fingerprint(self) -> str:
        return self.counted.result()[1]

    @property
    def definition(self) -> dict:
        if self.objects is not None:
            self.partial["objects"], self.objects = self.objects.result(), None
        return self.partial


def _done(value) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


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
            counted = _done(lite.fingerprint(conn, ref.sql, cols))
            sealing = sealing_for(ref.id, lite.arrow_schema(cols))
            without = _done(lite.fingerprint(conn, ref.sql, [c for c in cols if c["name"] not in sealing.columns])
                            ) if sealing else None
            definition = {"kind": "sqlite", "table": ref.to_json(), "columns": cols, "objects": objects,
                          "fingerprint_algorithm": lite.FINGERPRINT_ALGORITHM}
            captured[ref.id] = Captured(ref, definition, lite.arrow_schema(cols), counted,
                                        lambda ref=ref, cols=cols: lite.read_batches(conn, ref, cols),
                                        counted_without=without)
        yield captured
    finally:
        conn.rollback()
        conn.close()


@contextmanager
def _capture_postgres(parsed: ParsedUrl, variable: str, refs: Sequence[TableRef]) -> Iterator[dict[str, Captured]]:
    """The rows stream on this connection while other connections importing the same exported snapshot count
    and fingerprint them and `pg_dump` describes their schema: one consistent state, read in parallel."""
    with adbc_connection(parsed, variable) as conn:
        default = pg.open_session(conn)
        refs = [r.in_schema(default) for r in refs]
        pg.pg_dump_binary()  # its absence fails here, before anything is written
        lsn_before = pg.wal_position(conn)  # read before the snapshot: where the change log meets it
        with pg.snapshot(conn) as snapshot_name, ThreadPoolExecutor(max_workers=2) as helpers:
            wal = {"lsn_before": lsn_before, "snapshot": pg.snapshot_xids(conn)} if lsn_before else None
            plans = {}
            for ref in refs:
                with conn.cursor() as cur:
                    if pg.to_regclass_missing(cur, ref.sql):
                        raise UnknownTableError(f"table {ref.label!r} does not exist in the source database")
                plans[ref.id] = pg.columns(conn, ref)  # refuses a type that cannot travel, before any writing
            captured = {}
            for ref in refs:
                cols = plans[ref.id]
                counted = helpers.submit(_fingerprint_in_snapshot, parsed, variable, snapshot_name, ref)
                schema = _postgres_schema(conn, ref, cols)
                sealing = sealing_for(ref.id, schema)
                without = helpers.submit(_fingerprint_in_snapshot, parsed, variable, snapshot_name, ref,
                                         [c["name"] for c in cols if c["name"] not in sealing.columns]
                                         ) if sealing else None
                objects = helpers.submit(pg.dump_schema, parsed.location, ref, snapshot_name)
                definition = {"kind": "postgres", "table": ref.to_json(), "columns": cols,
                              "sequences": pg.owned_sequences(conn, ref),
                              "referenced_by": pg.referenced_by(conn, ref),
                              "fingerprint_algorithm": pg.FINGERPRINT_ALGORITHM, **({"wal": wal} if wal else {})}
                captured[ref.id] = Captured(ref, definition, schema, counted,
                                            lambda ref=ref, cols=cols: _stream_postgres(conn, ref, cols), objects,
                                            without)
            try:
                yield captured
            finally:
                for entry in captured.values():  # the snapshot must outlive every reader of it
                    for future in (entry.counted, entry.objects, entry.counted_without):
                        if future is not None and not future.cancel():
                            future.exception()


def _fingerprint_in_snapshot(parsed: ParsedUrl, variable: str, snapshot_name: str, ref: TableRef,
                             columns: list[str] | None = None) -> tuple[int, str]:
    with adbc_connection(parsed, variable) as conn:
        pg.open_session(conn)
        with conn.cursor() as cur:
            cur.execute(f"SET lock_timeout = '{pg.LOCK_WAIT}'")  # never wait forever behind a queued DROP
        conn.commit()
        with pg.snapshot(conn, imported=snapshot_name):
            return pg.fingerprint(conn, ref.sql, columns)


def fingerprint(parsed: ParsedUrl, variable: str, ref: TableRef) -> tuple[int, str]:
    """Row count and fingerprint of a table as it is now, computed as a checkpoint computes them."""
    if parsed.scheme == "sqlite":
        conn = lite.connect(absolute(parsed.location))
        try:
            ref = ref.in_schema("main")
            objects = lite.schema_objects(conn, ref)
            if objects["table"] is None:
                raise UnknownTableError(f"table {ref.label!r} does not exist in the source database")
            return lite.fingerprint(conn, ref.sql, lite.columns(conn, ref, objects["table"]))
        finally:
            conn.close()
    with adbc_connection(parsed, variable) as conn:
        ref = ref.in_schema(pg.open_session(conn))
        with conn.cursor() as cur:
            if pg.to_regclass_missing(cur, ref.sql):
                raise UnknownTableError(f"table {ref.label!r} does not exist in the source database")
        return pg.fingerprint(conn, ref.sql)


def _postgres_schema(conn, ref: TableRef, cols: list[dict]) -> pa.Schema:
    with conn.cursor() as cur:
        cur.execute(pg.select_sql(ref, cols) + " LIMIT 0")
        schema = cur.fetch_arrow_table().schema
    return pa.schema([pa.field(f.name, f.type) for f in schema])  # without the driver's field metadata


def _stream_postgres(conn, ref: TableRef, cols: list[dict]) -> Iterator[pa.RecordBatch]:
    with conn.cursor() as cur:
        cur.execute(pg.select_sql(ref, cols))
        yield from cur.fetch_record_batch()

"""The operational database the platform reads from and protects: SQLite or PostgreSQL, through ADBC."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import ClassVar

import adbc_driver_manager.dbapi as dbapi
import dagster as dg
import pyarrow as pa

from resources.databases.adbc import adbc_connection
from resources.databases.table_capture import Captured, UnknownTableError, capture, fingerprint
from resources.databases.table_refs import Resolution, TableRef, quote_name, resolve_protected
from resources.databases.table_restorer import Restorer, restoring
from resources.identifiers import check_identifier, day_range_sql, quote
from resources.urls import ParsedUrl, parse_url

SCHEMES = {
    "sqlite": "sqlite:///path/to/source.db",
    "postgresql": "postgresql://user@host:5432/dbname",
    "postgres": "postgres://user@host:5432/dbname",
}


STREAM_BATCH_ROWS = 65_536  # SQLite's driver defaults to 1,024-row batches: too small to write Parquet well


class SourceDatabase(dg.ConfigurableResource):
    """The source tables (sales, customers, infra_logs, video_events); Arrow in, Arrow out."""

    url: str
    ENV_VAR: ClassVar[str] = "AEGIS_SOURCE_URL"

    @property
    def parsed(self) -> ParsedUrl:
        return parse_url(self.url, self.ENV_VAR, SCHEMES)

    @property
    def kind(self) -> str:
        return "sqlite" if self.parsed.scheme == "sqlite" else "postgres"

    @property
    def display_url(self) -> str:
        return self.parsed.display

    @contextmanager
    def connect(self) -> Iterator[dbapi.Connection]:
        with adbc_connection(self.parsed, self.ENV_VAR) as conn:
            yield conn

    def tables(self) -> set[str]:
        """Names of the tables that exist now (one query: the watch sensor asks every few seconds)."""
        with self.connect() as conn, conn.cursor() as cur:
            if self.kind == "sqlite":
                cur.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            else:
                cur.execute("SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = current_schema()")
            return {row[0] for row in cur.fetchall()}

    def table_exists(self, table: str | TableRef) -> bool:
        with self.connect() as conn:
            return _table_exists(conn, self.kind, _ref(table))

    def replace_day(
        self, table: str, day_column: str, day: str, data: pa.Table, index_columns: Sequence[str] = ()
    ) -> int:
        """Make `data` the whole content of `table` for `day`, in one transaction (re-runs never duplicate)."""
        name = quote(table, "table name")
        with self.connect() as conn, conn.cursor() as cur:
            cur.adbc_ingest(table, data.slice(0, 0), mode="create_append")  # creates the table if absent
            cur.execute(f"DELETE FROM {name} WHERE {day_range_sql(day_column, day)}")
            cur.adbc_ingest(table, data, mode="append")
            for column in (day_column, *index_columns):
                index = quote(f"ix_{table}_{column}", "index name")
                cur.execute(f"CREATE INDEX IF NOT EXISTS {index} ON {name} ({quote(column, 'column')})")
            conn.commit()
        return data.num_rows

    @contextmanager
    def read_day(self, table: str, day_column: str, day: str) -> Iterator[pa.RecordBatchReader]:
        """Stream one day's rows as Arrow record batches; memory stays bounded by the batch size."""
        with self.connect() as conn, conn.cursor() as cur:
            self._require(conn, table)
            where = day_range_sql(day_column, day)
            yield self._stream(cur, f"SELECT * FROM {quote(table, 'table name')} WHERE {where}")

    @contextmanager
    def read_table(self, table: str | TableRef) -> Iterator[pa.RecordBatchReader]:
        """Stream a whole table as Arrow record batches, as the driver converts them (for comparisons; exact
        copies go through `capture`); memory stays bounded."""
        with self.connect() as conn, conn.cursor() as cur:
            self._require(conn, table)
            yield self._stream(cur, f"SELECT * FROM {_ref(table).sql}")

    def count(self, table: str | TableRef) -> int:
        with self.connect() as conn, conn.cursor() as cur:
            self._require(conn, table)
            cur.execute(f"SELECT COUNT(*) FROM {_ref(table).sql}")
            return int(cur.fetchone()[0])

    # ------------------------------------------------------------ protected tables: exact copies

    def default_schema(self) -> str:
        """The schema unqualified names resolve to (SQLite: main; PostgreSQL: current_schema())."""
        if self.kind == "sqlite":
            return "main"
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT current_schema()")
            return cur.fetchone()[0]

    def catalogue(self) -> tuple[set[tuple[str, str]], str]:
        """Every user table as (schema, name), and the schema unqualified names resolve to."""
        with self.connect() as conn, conn.cursor() as cur:
            if self.kind == "sqlite":
                cur.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%'")
                return {("main", r[0]) for r in cur.fetchall()}, "main"
            cur.execute("SELECT schemaname, tablename FROM pg_catalog.pg_tables WHERE schemaname NOT IN "
                        "('pg_catalog', 'information_schema') AND schemaname NOT LIKE 'pg\\_%'")
            found = {(r[0], r[1]) for r in cur.fetchall()}
            cur.execute("SELECT current_schema()")  # on the same connection: the watch asks every few seconds
            return found, cur.fetchone()[0]

    def foreign_links(self) -> set[tuple[tuple[str, str], tuple[str, str]]]:
        """Every foreign key between two different tables, as ((schema, table), (schema, referenced table))."""
        with self.connect() as conn, conn.cursor() as cur:
            if self.kind == "sqlite":
                cur.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                names = {r[0].lower(): r[0] for r in cur.fetchall()}  # SQLite matches names case-insensitively
                cur.execute("SELECT m.name, f.\"table\" FROM sqlite_master m, pragma_foreign_key_list(m.name) f "
                            "WHERE m.type = 'table'")
                return {(("main", child), ("main", names.get(parent.lower(), parent)))
                        for child, parent in cur.fetchall() if child != names.get(parent.lower(), parent)}
            cur.execute("SELECT cn.nspname, c.relname, pn.nspname, p.relname FROM pg_catalog.pg_constraint k "
                        "JOIN pg_catalog.pg_class c ON c.oid = k.conrelid "
                        "JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace "
                        "JOIN pg_catalog.pg_class p ON p.oid = k.confrelid "
                        "JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace "
                        "WHERE k.contype = 'f' AND k.conrelid <> k.confrelid")
            return {((a, b), (c, d)) for a, b, c, d in cur.fetchall()}

    def protected(self, spec: str | None) -> Resolution:
        """The tables AEGIS_PROTECTED_TABLES names (see `resources/table_refs.py`)."""
        existing, default = self.catalogue()
        return resolve_protected(spec, existing, default)

    @contextmanager
    def capture(self, refs: Sequence[TableRef]) -> Iterator[dict[str, Captured]]:
        """Tables for a checkpoint, from one snapshot (see `resources/table_capture.py`)."""
        with capture(self.parsed, self.ENV_VAR, refs) as captured:
            yield captured

    def fingerprint(self, ref: TableRef) -> tuple[int, str]:
        """Row count and the database's fingerprint of a table now (as a checkpoint records them)."""
        return fingerprint(self.parsed, self.ENV_VAR, ref)

    @contextmanager
    def restoring(self) -> Iterator[Restorer]:
        """The one transaction of a restore (see `resources/table_restorer.py`)."""
        with restoring(self.parsed, self.ENV_VAR) as restorer:
            yield restorer

    def drop_table(self, table: str | TableRef) -> None:
        """Drop one table (retention of tables a restore set aside; restores themselves never drop)."""
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(f"DROP TABLE {_ref(table).sql}")
            conn.commit()

    def newest_commit_time(self, table: str | TableRef) -> str | None:
        """When the newest row of `table` was committed, where the database records it (PostgreSQL with
        `track_commit_timestamp = on`); None when it is not known."""
        if self.kind != "postgres":
            return None
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT current_setting('track_commit_timestamp')")
            if cur.fetchone()[0] != "on":
                return None
            cur.execute(f"SELECT max(pg_xact_commit_timestamp(xmin))::text FROM {_ref(table).sql}")
            return cur.fetchone()[0]

    def _stream(self, cur: dbapi.Cursor, sql: str) -> pa.RecordBatchReader:
        if self.kind == "sqlite":
            cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(STREAM_BATCH_ROWS)})
        cur.execute(sql)
        return cur.fetch_record_batch()

    def count_day(self, table: str, day_column: str, day: str) -> int:
        with self.connect() as conn, conn.cursor() as cur:
            self._require(conn, table)
            cur.execute(
                f"SELECT COUNT(*) FROM {quote(table, 'table name')} WHERE {day_range_sql(day_column, day)}"
            )
            return int(cur.fetchone()[0])

    def _require(self, conn: dbapi.Connection, table: str | TableRef) -> None:
        if not _table_exists(conn, self.kind, _ref(table)):
            label = table.label if isinstance(table, TableRef) else table
            raise UnknownTableError(f"table {label!r} does not exist in {self.ENV_VAR}={self.display_url}")


def _ref(table: str | TableRef) -> TableRef:
    """A platform table's plain name (checked) or a protected table's reference."""
    return table if isinstance(table, TableRef) else TableRef(None, check_identifier(table, "table name"))


def _table_exists(conn: dbapi.Connection, kind: str, ref: TableRef) -> bool:
    with conn.cursor() as cur:
        if kind == "sqlite":
            master = f"{quote_name(ref.schema or 'main')}.sqlite_master"
            cur.execute(f"SELECT COUNT(*) FROM {master} WHERE type = 'table' AND name = ?", parameters=[ref.name])
        else:
            cur.execute("SELECT to_regclass($1) IS NOT NULL", parameters=[ref.sql])
        return bool(cur.fetchone()[0])

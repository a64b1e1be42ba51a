"""The operational database the platform reads from and protects: SQLite or PostgreSQL, through ADBC."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import ClassVar

import adbc_driver_manager.dbapi as dbapi
import dagster as dg
import pyarrow as pa

from resources.adbc import adbc_connection
from resources.identifiers import check_identifier, day_range_sql, quote
from resources.urls import ParsedUrl, parse_url

SCHEMES = {
    "sqlite": "sqlite:///path/to/source.db",
    "postgresql": "postgresql://user@host:5432/dbname",
    "postgres": "postgres://user@host:5432/dbname",
}


class UnknownTableError(LookupError):
    """The named table is not in the source database."""


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

    def table_exists(self, table: str) -> bool:
        check_identifier(table, "table name")
        with self.connect() as conn:
            return _table_exists(conn, self.kind, table)

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
            cur.execute(f"SELECT * FROM {quote(table, 'table name')} WHERE {day_range_sql(day_column, day)}")
            yield cur.fetch_record_batch()

    def count_day(self, table: str, day_column: str, day: str) -> int:
        with self.connect() as conn, conn.cursor() as cur:
            self._require(conn, table)
            cur.execute(
                f"SELECT COUNT(*) FROM {quote(table, 'table name')} WHERE {day_range_sql(day_column, day)}"
            )
            return int(cur.fetchone()[0])

    def _require(self, conn: dbapi.Connection, table: str) -> None:
        if not _table_exists(conn, self.kind, check_identifier(table, "table name")):
            raise UnknownTableError(f"table {table!r} does not exist in {self.ENV_VAR}={self.display_url}")


def _table_exists(conn: dbapi.Connection, kind: str, table: str) -> bool:
    with conn.cursor() as cur:
        if kind == "sqlite":
            cur.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?", parameters=[table])
        else:
            cur.execute("SELECT COUNT(*) FROM pg_catalog.pg_tables WHERE schemaname = current_schema() "
                        "AND tablename = $1", parameters=[table])
        return int(cur.fetchone()[0]) > 0

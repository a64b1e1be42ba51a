"""The operational database the platform reads from and protects: SQLite or PostgreSQL, through ADBC."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
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


STREAM_BATCH_ROWS = 65_536  # SQLite's driver defaults to 1,024-row batches: too small to write Parquet well
_CREATE_TABLE = re.compile(
    r'^\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(?:"[^"]+"|\[[^\]]+\]|`[^`]+`|[A-Za-z_][A-Za-z0-9_]*)',
    re.IGNORECASE,
)
_CREATE_INDEX = re.compile(
    r'^\s*CREATE\s+(UNIQUE\s+)?INDEX\s+(?:IF\s+NOT\s+EXISTS\s+)?("[^"]+"|\S+)\s+ON\s+(?:ONLY\s+)?("[^"]+"|\S+)(.*)$',
    re.IGNORECASE | re.DOTALL,
)


class UnknownTableError(LookupError):
    """The named table is not in the source database."""


@dataclass(frozen=True)
class TableDefinition:
    """What it takes to recreate a table: its CREATE TABLE and CREATE INDEX statements."""

    ddl: str
    indexes: tuple[str, ...]

    def create_as(self, name: str) -> str:
        """The CREATE TABLE statement for the same columns under another (checked) name."""
        ddl, count = _CREATE_TABLE.subn(f"CREATE TABLE {quote(name, 'table name')}", self.ddl, count=1)
        if count != 1:
            raise ValueError(f"cannot read the table name in DDL: {self.ddl[:80]!r}")
        return ddl

    def indexes_on(self, table: str, target: str) -> list[str]:
        """The index statements for `target`; renamed (prefixed) when `target` is not `table`."""
        statements = []
        for ddl in self.indexes:
            index = _index_name(ddl)
            name = index if target == table else f"{target}__{index}"[:63]
            statements.append(_index_ddl(ddl, name, target))
        return statements


def _index_name(ddl: str) -> str:
    match = _CREATE_INDEX.match(ddl)
    if not match:
        raise ValueError(f"cannot read index DDL: {ddl[:80]!r}")
    return match.group(2).strip('"').split(".")[-1]


def _index_ddl(ddl: str, name: str, table: str) -> str:
    """`ddl` (a CREATE INDEX statement) for index `name` on `table`. No IF NOT EXISTS: an index whose name is
    taken must fail the restore, never be silently skipped."""
    unique, _, _, rest = _CREATE_INDEX.match(ddl).groups()
    return f"CREATE {unique or ''}INDEX {quote(name, 'index name')} ON {quote(table, 'table name')}{rest}"


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
            where = day_range_sql(day_column, day)
            yield self._stream(cur, f"SELECT * FROM {quote(table, 'table name')} WHERE {where}")

    @contextmanager
    def read_table(self, table: str) -> Iterator[pa.RecordBatchReader]:
        """Stream a whole table as Arrow record batches (for checkpoints); memory stays bounded."""
        with self.connect() as conn, conn.cursor() as cur:
            self._require(conn, table)
            yield self._stream(cur, f"SELECT * FROM {quote(table, 'table name')}")

    def count(self, table: str) -> int:
        with self.connect() as conn, conn.cursor() as cur:
            self._require(conn, table)
            cur.execute(f"SELECT COUNT(*) FROM {quote(table, 'table name')}")
            return int(cur.fetchone()[0])

    def describe(self, table: str) -> TableDefinition:
        """The table's DDL and index DDL, read from the catalogue, to recreate it on restore."""
        with self.connect() as conn, conn.cursor() as cur:
            self._require(conn, table)
            if self.kind == "sqlite":
                cur.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", parameters=[table])
                ddl = cur.fetchone()[0]
                cur.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
                            "AND sql IS NOT NULL ORDER BY name", parameters=[table])
                return TableDefinition(ddl=ddl, indexes=tuple(r[0] for r in cur.fetchall()))
            cur.execute(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull FROM pg_attribute a "
                "JOIN pg_class c ON a.attrelid = c.oid JOIN pg_namespace n ON c.relnamespace = n.oid "
                "WHERE n.nspname = current_schema() AND c.relname = $1 AND a.attnum > 0 AND NOT a.attisdropped "
                "ORDER BY a.attnum", parameters=[table])
            columns = ", ".join(f"{_quote_catalog(name)} {kind}{' NOT NULL' if not_null else ''}"
                                for name, kind, not_null in cur.fetchall())
            cur.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename = $1 "
                        "ORDER BY indexname", parameters=[table])
            return TableDefinition(ddl=f"CREATE TABLE {quote(table)} ({columns})",
                                   indexes=tuple(r[0] for r in cur.fetchall()))

    # ------------------------------------------------------------ restore steps, inside one transaction

    @contextmanager
    def transaction(self) -> Iterator[dbapi.Connection]:
        """One transaction for a whole restore: nothing is visible, or kept, until `commit()`."""
        with self.connect() as conn:
            yield conn

    def load_into_temporary(self, conn: dbapi.Connection, definition: TableDefinition, temporary: str,
                            batches: pa.RecordBatchReader) -> None:
        with conn.cursor() as cur:
            if _table_exists(conn, self.kind, temporary):
                cur.execute(f"DROP TABLE {quote(temporary, 'table name')}")
            cur.execute(definition.create_as(temporary))
            cur.adbc_ingest(temporary, batches, mode="append")

    @contextmanager
    def read_in(self, conn: dbapi.Connection, table: str) -> Iterator[pa.RecordBatchReader]:
        """Stream a table as this transaction sees it (uncommitted rows included)."""
        with conn.cursor() as cur:
            yield self._stream(cur, f"SELECT * FROM {quote(table, 'table name')}")

    def swap(self, conn: dbapi.Connection, temporary: str, target: str, indexes: Sequence[str]) -> None:
        """Put `temporary` in the place of `target` and recreate the indexes; atomic at commit. Nothing is
        dropped: `target` must not exist (a table in the way is set aside first), else this fails."""
        with conn.cursor() as cur:
            cur.execute(f"ALTER TABLE {quote(temporary, 'table name')} RENAME TO {quote(target, 'table name')}")
            for statement in indexes:
                cur.execute(statement)

    def set_aside(self, conn: dbapi.Connection, table: str, aside: str, suffix: str) -> int:
        """Rename `table` to `aside` inside the restore's transaction, with its indexes and owned sequences
        renamed `<name>_<suffix>` so the restored table can take the original names; returns its row count."""
        if not re.fullmatch(r"[A-Za-z0-9_]{1,20}", suffix):
            raise ValueError(f"invalid suffix {suffix!r} for renamed indexes: letters, digits and _ only")
        with conn.cursor() as cur:
            cur.execute(f"SELECT COUNT(*) FROM {quote(table, 'table name')}")
            rows = int(cur.fetchone()[0])
            cur.execute(f"ALTER TABLE {quote(table, 'table name')} RENAME TO {quote(aside, 'table name')}")
            if self.kind == "postgres":
                for kind, name in _owned_relations(conn, aside):
                    cur.execute(f"ALTER {kind} {_quote_catalog(name)} RENAME TO {quote(_renamed(name, suffix))}")
            else:  # SQLite cannot rename an index: build it again under the new name
                cur.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
                            "AND sql IS NOT NULL", parameters=[aside])
                for name, ddl in cur.fetchall():
                    cur.execute(f"DROP INDEX {_quote_catalog(name)}")
                    cur.execute(_index_ddl(ddl, _renamed(name, suffix), aside))
        return rows

    def drop_table(self, table: str) -> None:
        """Drop one table (retention of tables a restore set aside; restores themselves never drop)."""
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(f"DROP TABLE {quote(table, 'table name')}")
            conn.commit()

    def newest_commit_time(self, table: str) -> str | None:
        """When the newest row of `table` was committed, where the database records it (PostgreSQL with
        `track_commit_timestamp = on`); None when it is not known."""
        if self.kind != "postgres":
            return None
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT current_setting('track_commit_timestamp')")
            if cur.fetchone()[0] != "on":
                return None
            cur.execute(f"SELECT max(pg_xact_commit_timestamp(xmin))::text FROM {quote(table, 'table name')}")
            return cur.fetchone()[0]

    def exists_in(self, conn: dbapi.Connection, table: str) -> bool:
        return _table_exists(conn, self.kind, check_identifier(table, "table name"))

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

    def _require(self, conn: dbapi.Connection, table: str) -> None:
        if not _table_exists(conn, self.kind, check_identifier(table, "table name")):
            raise UnknownTableError(f"table {table!r} does not exist in {self.ENV_VAR}={self.display_url}")


def _quote_catalog(name: str) -> str:
    """Quote a column name read from the database's own catalogue (may hold any character)."""
    return '"' + name.replace('"', '""') + '"'


def _renamed(name: str, suffix: str) -> str:
    return f"{name[:62 - len(suffix)]}_{suffix}"


def _owned_relations(conn: dbapi.Connection, table: str) -> list[tuple[str, str]]:
    """PostgreSQL objects named in the schema's namespace that belong to `table`: its indexes (including
    those behind PRIMARY KEY and UNIQUE constraints) and the sequences its columns own (serial, identity)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT 'INDEX', i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
            "JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
            "WHERE n.nspname = current_schema() AND t.relname = $1 "
            "UNION ALL SELECT 'SEQUENCE', s.relname FROM pg_depend d JOIN pg_class s ON s.oid = d.objid "
            "JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace n ON n.oid = t.relnamespace "
            "WHERE s.relkind = 'S' AND d.deptype IN ('a', 'i') AND n.nspname = current_schema() AND t.relname = $1",
            parameters=[table])
        return [(kind, name) for kind, name in cur.fetchall()]


def _table_exists(conn: dbapi.Connection, kind: str, table: str) -> bool:
    with conn.cursor() as cur:
        if kind == "sqlite":
            cur.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?", parameters=[table])
        else:
            cur.execute("SELECT COUNT(*) FROM pg_catalog.pg_tables WHERE schemaname = current_schema() "
                        "AND tablename = $1", parameters=[table])
        return int(cur.fetchone()[0]) > 0

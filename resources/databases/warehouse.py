"""Where gold is served: a DuckDB file (through dagster-duckdb) or PostgreSQL, one schema of tables.

Writes are idempotent per partition (delete + insert in one transaction) and serialised: a file lock
for DuckDB, whose file admits one writing process at a time, and a transaction-scoped advisory lock
for PostgreSQL, so that two runs publishing the same partition can never interleave into duplicates.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import adbc_driver_manager
import dagster as dg
import duckdb
import pyarrow as pa
from dagster_duckdb import DuckDBResource

from resources.databases.adbc import adbc_connection
from resources.databases.warehouse_access import Grant, role, setup_statements
from resources.identifiers import check_day, check_identifier, quote, quote_literal
from resources.urls import ParsedUrl, absolute, parse_url

SCHEMES = {
    "duckdb": "duckdb:///path/to/warehouse.duckdb",
    "postgresql": "postgresql://user@host:5432/dbname",
    "postgres": "postgres://user@host:5432/dbname",
}
_PG_WRITER_LOCK = 0x4AE615  # any constant: the advisory lock all warehouse writers queue on


class WarehousePermissionError(PermissionError):
    """The warehouse database refused a publish; the message names the role, the database and what to run."""


class Warehouse(dg.ConfigurableResource):
    """Serving tables for BI and reports: `serving.<table>`, published per daily partition."""

    url: str
    schema_name: str = "serving"
    writer_role: str = "aegis_writer"  # PostgreSQL: publish as this role where it owns the schema (warehouse_access)
    ENV_VAR: ClassVar[str] = "AEGIS_WAREHOUSE_URL"

    @property
    def parsed(self) -> ParsedUrl:
        return parse_url(self.url, self.ENV_VAR, SCHEMES)

    @property
    def kind(self) -> str:
        return "duckdb" if self.parsed.scheme == "duckdb" else "postgres"

    def qualified(self, table: str) -> str:
        return f"{quote(self.schema_name, 'schema name')}.{quote(table, 'table name')}"

    def publish_partition(self, table: str, data: pa.Table, day_column: str, day: str) -> int:
        """Replace the rows of `day` in `table` with `data`; re-running never duplicates rows."""
        where = f"{quote(day_column, 'column')} = DATE '{check_day(day)}'"
        return self._replace(table, data, where)

    def upsert(self, table: str, data: pa.Table, key_columns: Sequence[str]) -> int:
        """Replace the rows whose key appears in `data` (for dimensions shared by many days)."""
        match = " AND ".join(f"s.{quote(k, 'column')} = t.{quote(k, 'column')}" for k in key_columns)
        return self._replace(table, data, f"EXISTS (SELECT 1 FROM {{staged}} s WHERE {match})", alias="t")

    def read(self, table: str, day_column: str, first_day: str, last_day: str) -> pa.Table:
        """Rows of `table` whose day is within [first_day, last_day]."""
        sql = (f"SELECT * FROM {self.qualified(table)} WHERE {quote(day_column, 'column')} "
               f"BETWEEN DATE '{check_day(first_day)}' AND DATE '{check_day(last_day)}'")
        return self.query(sql)

    def erase(self, table: str, column: str, value: int) -> int:
        """Delete the rows whose `column` equals the integer `value` (a person's, on request); returns how many."""
        target, where = self.qualified(table), f"{quote(column, 'column')} = {int(value)}"
        if self.kind == "duckdb":
            with self._duckdb() as con:
                found = con.execute(f"DELETE FROM {target} WHERE {where} RETURNING 1").fetchall()
            return len(found)
        with adbc_connection(self.parsed, self.ENV_VAR) as conn, conn.cursor() as cur:
            cur.execute(f"SELECT pg_advisory_xact_lock({_PG_WRITER_LOCK})")
            self._as_writer(cur)
            cur.execute(f"DELETE FROM {target} WHERE {where} RETURNING 1")
            found = cur.fetchall()
            conn.commit()
        return len(found)

    def has_table(self, table: str) -> bool:
        found = self.query("SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = "
                           f"'{check_identifier(self.schema_name, 'schema name')}' AND table_name = "
                           f"'{check_identifier(table, 'table name')}'")
        return int(found["n"][0].as_py()) > 0

    def query(self, sql: str) -> pa.Table:
        """Run a read-only query written by the platform itself (never user text)."""
        if self.kind == "duckdb":
            with self._duckdb() as con:
                return con.sql(sql).to_arrow_table()
        with adbc_connection(self.parsed, self.ENV_VAR) as conn, conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetch_arrow_table()

    def _replace(self, table: str, data: pa.Table, where: str, alias: str | None = None) -> int:
        target = self.qualified(table)
        staged = quote(f"staged_{check_identifier(table, 'table name')}")
        delete = f"DELETE FROM {target}{' AS ' + alias if alias else ''} WHERE {where.format(staged=staged)}"
        if self.kind == "duckdb":
            with self._duckdb() as con:
                con.register(staged.strip('"'), data)
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(self.schema_name)}")
                con.execute(f"CREATE TABLE IF NOT EXISTS {target} AS SELECT * FROM {staged} LIMIT 0")
                con.execute("BEGIN TRANSACTION")
                try:
                    con.execute(delete)
                    con.execute(f"INSERT INTO {target} BY NAME SELECT * FROM {staged}")
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
                con.unregister(staged.strip('"'))
            return data.num_rows
        with adbc_connection(self.parsed, self.ENV_VAR) as conn, conn.cursor() as cur:
            cur.execute(f"SELECT pg_advisory_xact_lock({_PG_WRITER_LOCK})")
            cur.execute(f"SELECT 1 FROM pg_namespace WHERE nspname = {quote_literal(self.schema_name)}")
            if not cur.fetchall():
                cur.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(self.schema_name)}")
            as_role = self._as_writer(cur)
            try:
                cur.adbc_ingest(table, data.slice(0, 0), mode="create_append", db_schema_name=self.schema_name)
                cur.execute(f"SELECT relrowsecurity FROM pg_class WHERE oid = '{target}'::regclass")
                if not cur.fetchone()[0]:  # a new table shows non-owners (BI) nothing until its policy is applied
                    cur.execute(f"ALTER TABLE {target} ENABLE ROW LEVEL SECURITY")
                if "{staged}" in where:
                    cur.adbc_ingest(staged.strip('"'), data, mode="replace", temporary=True)
                cur.execute(delete)
                cur.adbc_ingest(table, data, mode="append", db_schema_name=self.schema_name)
            except adbc_driver_manager.Error as exc:
                if "permission denied" not in str(exc):
                    raise
                raise WarehousePermissionError(
                    f"{self.ENV_VAR}={self.parsed.display}: publishing {self.schema_name}.{table} as role {as_role} "
                    f"in database {self.parsed.location.rsplit('/', 1)[-1].split('?')[0]} was refused "
                    f"({str(exc).splitlines()[0][:200]}). Materialise security/warehouse_access against this "
                    f"warehouse (it gives the writer role {self.writer_role} the {self.schema_name} schema), or run "
                    f"GRANT USAGE, CREATE ON SCHEMA {self.schema_name} TO {as_role} and make it the owner of the "
                    f"schema's tables") from None
            conn.commit()
        return data.num_rows

    def _as_writer(self, cur: Any) -> str:
        """Publish as the writer role (the owner of the serving tables) when this database says so: the role may
        create in its serving schema (security/warehouse_access set it up here) and the login is a member. Roles
        are server-wide, so a writer role made for another database of the server changes nothing here. Returns
        the role the rows are written as."""
        cur.execute("SELECT pg_has_role(current_user, r.oid, 'MEMBER') AND has_schema_privilege(r.oid, n.oid, "
                    "'CREATE') FROM "
                    f"pg_roles r JOIN pg_namespace n ON n.nspname = {quote_literal(self.schema_name)} "
                    f"WHERE r.rolname = {quote_literal(role(self.writer_role, 'AEGIS_WRITER_ROLE'))}")
        found = cur.fetchone()
        if found and found[0]:
            cur.execute(f"SET LOCAL ROLE {quote(self.writer_role)}")
            return self.writer_role
        cur.execute("SELECT current_user")
        return cur.fetchone()[0]

    def role_privileges(self, name: str) -> dict[str, object] | None:
        """What role `name` may do in this warehouse database (None for DuckDB): the BI posture check."""
        if self.kind != "postgres":
            return None
        user = role(name, "AEGIS_BI_ROLE")
        mine = "n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'"
        sql = f"""SELECT r.rolsuper, r.rolbypassrls, has_database_privilege(r.oid, current_database(), 'TEMPORARY'),
            EXISTS (SELECT 1 FROM pg_namespace n WHERE {mine} AND has_schema_privilege(r.oid, n.oid, 'CREATE')),
            EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {mine}
                    AND c.relkind IN ('r', 'p') AND has_table_privilege(r.oid, c.oid, 'INSERT,UPDATE,DELETE,TRUNCATE')),
            EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {mine}
                    AND n.nspname <> '{check_identifier(self.schema_name, 'schema name')}'
                    AND c.relkind IN ('r', 'p', 'v', 'm') AND has_table_privilege(r.oid, c.oid, 'SELECT'))
            FROM pg_roles r WHERE r.rolname = '{user}'"""
        with adbc_connection(self.parsed, self.ENV_VAR) as conn, conn.cursor() as cur:
            cur.execute(sql)
            found = cur.fetchone()
        if found is None:
            return {"role": user, "exists": False}
        names = ("superuser", "bypassrls", "temporary", "create", "write", "other_schemas")
        return {"role": user, "exists": True, **dict(zip(names, found, strict=True))}

    def secure(self, bi_role: str, grants: list[Grant]) -> dict:
        """Roles, grants, the row-access mapping and a policy on every serving table (PostgreSQL only)."""
        if self.kind != "postgres":
            raise ValueError(f"{self.ENV_VAR}: roles and row-level security need PostgreSQL, not {self.kind}")
        role(bi_role, "AEGIS_BI_ROLE")
        with adbc_connection(self.parsed, self.ENV_VAR) as conn, conn.cursor() as cur:
            cur.execute(f"SELECT pg_advisory_xact_lock({_PG_WRITER_LOCK})")
            cur.execute("SELECT current_database(), current_user, rolsuper FROM pg_roles WHERE rolname = current_user")
            database, user, superuser = cur.fetchone()
            cur.execute("SELECT c.table_name, c.column_name FROM information_schema.columns c JOIN "
                        "information_schema.tables t USING (table_schema, table_name) WHERE t.table_type = "
                        f"'BASE TABLE' AND c.table_schema = '{check_identifier(self.schema_name, 'schema name')}'")
            tables: dict[str, set[str]] = {}
            for table, column in cur.fetchall():
                tables.setdefault(table, set()).add(column)
            for statement in setup_statements(database, self.schema_name, bi_role,
                                              role(self.writer_role, "AEGIS_WRITER_ROLE"), user, superuser, grants,
                                              tables):
                cur.execute(statement)
            conn.commit()
        return {"tables": sorted(tables), "bi_role": bi_role, "writer_role": self.writer_role,
                "grants": len(grants)}

    @contextmanager
    def _duckdb(self) -> Iterator[duckdb.DuckDBPyConnection]:
        path = absolute(self.parsed.location)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with _file_lock(f"{path}.lock"), DuckDBResource(database=path).get_connection() as con:
            yield con


@contextmanager
def _file_lock(path: str) -> Iterator[Any]:
    """Block until this process holds the lock file: one DuckDB writer at a time, across processes."""
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

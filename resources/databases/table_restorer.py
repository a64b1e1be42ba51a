"""Writing a checkpoint back, inside one transaction the caller commits: set a table in the way aside,
create the table (its exact schema in its own place; columns only beside it), load the rows with their
exact types, fingerprint them in the database, then add what follows the rows (constraints, indexes,
triggers, policies, sequences, the foreign keys of other tables). Until `commit()` nothing is visible."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pyarrow as pa

from resources.databases import postgres_tables as pg
from resources.databases import sqlite_tables as lite
from resources.databases.adbc import adbc_connection
from resources.databases.table_refs import TableRef, quote_name
from resources.identifiers import quote_literal
from resources.urls import ParsedUrl, absolute

# statements of pg_dump's pre-data whose failure (e.g. a role that no longer exists) must not keep a lost
# table lost: the restore goes on and reports them
_FORGIVEN_BEFORE = re.compile(r"^(GRANT |REVOKE |COMMENT ON |ALTER (TABLE|SEQUENCE) \S+ OWNER TO )", re.IGNORECASE)
_FOREIGN_KEY = re.compile(r"^ALTER TABLE ONLY .*\bADD CONSTRAINT .*\bFOREIGN KEY\b", re.DOTALL | re.IGNORECASE)
_CREATE_TABLE = re.compile(r'^\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(?:"(?:[^"]|"")+"|\[[^\]]+\]|`[^`]+`|\S+)',
                           re.IGNORECASE)
_INDEX_NAME = re.compile(r'^(\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:IF\s+NOT\s+EXISTS\s+)?)("(?:[^"]|"")+"|\S+)'
                         r'(\s+ON\s+)("(?:[^"]|"")+"|\S+)', re.IGNORECASE)


class Restorer:
    """The restore's transaction on one database; `kind` is 'sqlite' or 'postgres'."""

    def __init__(self, kind: str, conn) -> None:
        self.kind, self.conn = kind, conn
        self.warnings: list[str] = []

    def exists(self, ref: TableRef) -> bool:
        if self.kind == "sqlite":
            return bool(self.conn.execute(f"SELECT count(*) FROM {quote_name(ref.schema)}.sqlite_master "
                                          "WHERE type = 'table' AND name = ?", (ref.name,)).fetchone()[0])
        with self.conn.cursor() as cur:
            return not pg.to_regclass_missing(cur, ref.sql)

    def count(self, ref: TableRef) -> int:
        return self._scalar(f"SELECT count(*) FROM {ref.sql}")

    def set_aside(self, ref: TableRef, aside: str, suffix: str) -> int:
        """Rename `ref` to `aside` with its indexes (and PostgreSQL sequences) renamed `<name>_<suffix>`, so
        the restored table can take the original names; returns its row count. SQLite triggers, whose names
        are global, move to the restored table: the aside copy keeps its rows and indexes."""
        if not re.fullmatch(r"[A-Za-z0-9_]{1,20}", suffix):
            raise ValueError(f"invalid suffix {suffix!r} for renamed indexes: letters, digits and _ only")
        rows = self.count(ref)
        self._execute(f"ALTER TABLE {ref.sql} RENAME TO {quote_name(aside)}")
        moved = ref.renamed(aside)
        if self.kind == "postgres":
            for kind, name in self._owned_relations(moved):
                self._execute(f"ALTER {kind} {quote_name(ref.schema)}.{quote_name(name)} "
                              f"RENAME TO {quote_name(_renamed(name, suffix))}")
            return rows
        master = f"{quote_name(ref.schema)}.sqlite_master"
        for kind, name, sql in self.conn.execute(f"SELECT type, name, sql FROM {master} WHERE tbl_name = ? "
                                                 "AND type IN ('index', 'trigger') AND sql IS NOT NULL",
                                                 (aside,)).fetchall():
            name = lite.as_text(name)
            self._execute(f"DROP {lite.as_text(kind).upper()} {quote_name(ref.schema)}.{quote_name(name)}")
            if lite.as_text(kind) == "index":
                self._execute(index_on(lite.as_text(sql), _renamed(name, suffix), moved))
        return rows

    def create(self, definition: dict, target: TableRef, in_place: bool) -> None:
        if self.kind == "sqlite":
            ddl = definition["objects"]["table"]
            self._execute(ddl if in_place else _CREATE_TABLE.sub(f"CREATE TABLE {target.sql}", ddl, count=1))
        elif in_place:
            if not self._scalar(f"SELECT count(*) FROM pg_catalog.pg_namespace WHERE nspname = "
                                f"{quote_literal(target.schema)}"):  # dropped with CASCADE, say
                self._execute(f"CREATE SCHEMA {quote_name(target.schema)}")
                self.warnings.append(f"schema {target.schema} did not exist any more: created it for {target.label} "
                                     "(owned by the restoring role; its other objects and grants are not restored)")
            statements = definition["objects"]["pre_data"]
            self.warnings += pg.run_statements(self.conn, statements, forgiving=_FORGIVEN_BEFORE)
        else:
            pg.create_columns_only(self.conn, target, definition["columns"])

    def load(self, definition: dict, target: TableRef, reader: pa.RecordBatchReader) -> None:
        if self.kind == "sqlite":
            lite.insert_rows(self.conn, target.sql, definition["columns"], reader)
        else:
            pg.load_rows(self.conn, target, definition["columns"], reader, f"aegis_staging_{secrets.token_hex(4)}")

    def fingerprint(self, definition: dict, target: TableRef, without: Sequence[str] = ()) -> tuple[int, str]:
        """Row count and fingerprint of the loaded rows (of every column but `without`, when given)."""
        kept = [c for c in definition["columns"] if c["name"] not in without]
        if self.kind == "sqlite":
            return lite.fingerprint(self.conn, target.sql, kept)
        return pg.fingerprint(self.conn, target.sql, [c["name"] for c in kept] if without else None)

    def complete(self, definition: dict, target: TableRef, in_place: bool, together: Sequence[TableRef] = ()) -> None:
        """What follows the rows: indexes always; the rest only for the table in its own place. `together`:
        the other tables restored in this transaction (they add their own foreign keys onto this one)."""
        objects = definition["objects"]
        if self.kind == "sqlite":
            for ddl in objects["indexes"]:
                name = lite.as_text(_INDEX_NAME.match(ddl).group(2)).strip('"')
                self._execute(ddl if in_place else index_on(ddl, f"{target.name}__{name}"[:63], target))
            if in_place:
                for ddl in objects["triggers"]:
                    self._execute(ddl)
                lite.restore_sequence(self.conn, target, objects["sequence"])
            return
        if not in_place:
            return
        after = objects["post_data"]
        self.warnings += pg.run_statements(self.conn, [s for s in after if not _FOREIGN_KEY.match(s)])
        with self.conn.cursor() as cur:
            for statement in (s for s in after if _FOREIGN_KEY.match(s)):
                if problem := pg.add_foreign_key(cur, statement):
                    self.warnings.append(f"{statement.splitlines()[0][:120]}: {problem}")
        pg.restore_sequences(self.conn, target, definition["sequences"])
        self.warnings += pg.restore_referencing_keys(self.conn, definition["referenced_by"],
                                                     [t.sql for t in together])

    def commit(self) -> None:
        self.conn.commit()

    # ------------------------------------------------------------ helpers

    def _execute(self, sql: str) -> None:
        if self.kind == "sqlite":
            self.conn.execute(sql)
        else:
            with self.conn.cursor() as cur:
                cur.execute(sql)

    def _scalar(self, sql: str):
        if self.kind == "sqlite":
            return self.conn.execute(sql).fetchone()[0]
        with self.conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()[0]

    def _owned_relations(self, ref: TableRef) -> list[tuple[str, str]]:
        """Indexes of the table (including those behind PRIMARY KEY / UNIQUE) and the sequences it owns."""
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT 'INDEX', i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
                "WHERE x.indrelid = to_regclass($1) UNION ALL SELECT 'SEQUENCE', s.relname FROM pg_depend d "
                "JOIN pg_class s ON s.oid = d.objid WHERE s.relkind = 'S' AND d.deptype IN ('a', 'i') "
                "AND d.refobjid = to_regclass($1) AND d.classid = 'pg_class'::regclass", parameters=[ref.sql])
            return [(kind, name) for kind, name in cur.fetchall()]


def index_on(ddl: str, name: str, table: TableRef) -> str:
    """A SQLite CREATE INDEX statement for index `name` on `table` (SQLite puts the schema on the index, not
    on the table). No IF NOT EXISTS: an index whose name is taken must fail the restore, never be skipped."""
    match = _INDEX_NAME.match(ddl)
    if not match:
        raise ValueError(f"cannot read index DDL: {ddl[:80]!r}")
    index = quote_name(name) if table.schema is None else f"{quote_name(table.schema)}.{quote_name(name)}"
    return f"{match.group(1)}{index}{match.group(3)}{quote_name(table.name)}{ddl[match.end():]}"


def _renamed(name: str, suffix: str) -> str:
    return f"{name[:62 - len(suffix)]}_{suffix}"


@contextmanager
def restoring(parsed: ParsedUrl, variable: str) -> Iterator[Restorer]:
    """One transaction for a whole restore: rolled back unless the caller commits."""
    if parsed.scheme == "sqlite":
        conn = lite.connect(absolute(parsed.location))
        try:
            conn.execute("PRAGMA legacy_alter_table = ON")  # renaming a table never rewrites other tables' SQL
            conn.execute("BEGIN IMMEDIATE")
            yield Restorer("sqlite", conn)
        finally:
            if conn.in_transaction:
                conn.rollback()
            conn.close()
        return
    with adbc_connection(parsed, variable) as conn:
        pg.open_session(conn)
        yield Restorer("postgres", conn)

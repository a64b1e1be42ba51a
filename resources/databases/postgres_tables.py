"""Exact copies of PostgreSQL tables: values, types and every schema object.

Values: columns whose binary form Arrow carries exactly (integers, floats, booleans, text, bytea) travel
natively; every other type travels as the server's own text form (`::text`, exact for numeric, uuid, json,
jsonb, intervals, timestamps incl. infinity, network types, enums, domains, ranges, arrays …) and is cast
back on load. Types whose values are object identifiers of one database (`regclass`, `tid`, `xid` …) are
refused before anything is written, naming the column.

Schema: `pg_dump --schema-only` of the table (pre-data before the rows, post-data after), run on the same
exported snapshot as the rows; plus what pg_dump leaves out of a one-table dump: where the owned sequences
stood, and the foreign keys of other tables that reference this one.

Fingerprint: computed by the server over each row's text (`hashtextextended(ROW(r.*)::text, 0)` summed
mod 2^64) when the checkpoint is taken and again over the restored rows, so no client-side conversion can
pass as verified.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import adbc_driver_manager.dbapi as dbapi
import pyarrow as pa

from resources.databases.sql_script import split_statements
from resources.databases.table_refs import TableRef, quote_name

FINGERPRINT_ALGORITHM = "postgres-hashtextextended-rowtext-sum64"
SESSION = ("SET DateStyle = 'ISO, MDY'", "SET IntervalStyle = 'postgres'", "SET TimeZone = 'UTC'",
           "SET extra_float_digits = 1", "SET bytea_output = 'hex'", "SET search_path = pg_catalog")
NATIVE = {"int2", "int4", "int8", "float4", "float8", "bool", "text", "varchar", "bpchar", "bytea"}
REFUSED = {  # values that name objects of one database, or the server's internal state: no exact copy
    "tid", "xid", "xid8", "cid", "regproc", "regprocedure", "regoper", "regoperator", "regclass", "regtype",
    "regrole", "regnamespace", "regconfig", "regdictionary", "regcollation", "pg_snapshot", "txid_snapshot",
    "aclitem", "refcursor",
}
MAX_INT = 1 << 64
# a checkpoint's helper sessions (pg_dump, fingerprints) read the table its main session already holds: behind a
# DROP or ALTER queued in between they would wait for each other forever, so they give up after this long
LOCK_WAIT = "5s"


class UnsupportedTypeError(TypeError):
    """A column whose values Aegis cannot carry exactly; the checkpoint fails before writing anything."""


class SchemaDumpError(RuntimeError):
    """pg_dump could not describe the table."""


def open_session(conn: dbapi.Connection) -> str:
    """Fix the settings every value's text depends on; returns the default schema (before search_path is
    narrowed to pg_catalog, so that every name we write is qualified)."""
    with conn.cursor() as cur:
        cur.execute("SELECT current_schema()")
        default = cur.fetchone()[0]
        for statement in SESSION:
            cur.execute(statement)
    conn.commit()
    return default


# ------------------------------------------------------------------ capture


def columns(conn: dbapi.Connection, ref: TableRef) -> list[dict]:
    """Each column in order: name, SQL type, how it travels (native, text, money, generated), NOT NULL."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), t.typname, t.typtype, "
            "coalesce(b.typname, e.typname, eb.typname), a.attgenerated = 's', a.attnotnull, "
            "pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
            "LEFT JOIN pg_type b ON b.oid = t.typbasetype AND t.typtype = 'd' "
            "LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A' "
            "LEFT JOIN pg_type eb ON eb.oid = e.typbasetype AND e.typtype = 'd' "
            "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            "WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            parameters=[ref.sql])
        rows = cur.fetchall()
    found = []
    for name, sql_type, typname, typtype, underlying, generated, not_null, expression in rows:
        if typname in REFUSED or underlying in REFUSED or typtype == "p":
            raise UnsupportedTypeError(
                f"column {name!r} of {ref.label} has type {sql_type}, whose values name objects of this one "
                "database (or its internal state) and cannot be restored exactly; nothing was written "
                "(protect the table without it: store the referenced name as text)")
        if generated:
            travel = "generated"
        elif typname in NATIVE and typtype == "b":
            travel = "native"
        elif typname == "money" and typtype == "b":
            travel = "money"  # its text depends on lc_monetary: carried as numeric text instead
        else:
            travel = "text"
        found.append({"name": name, "type": sql_type, "travel": travel, "not_null": bool(not_null),
                      **({"expression": expression} if generated else {})})
    return found


def select_sql(ref: TableRef, cols: list[dict]) -> str:
    """The query that reads the carried columns (generated ones are recomputed, never carried)."""
    parts = []
    for column in cols:
        name = quote_name(column["name"])
        if column["travel"] == "native":
            parts.append(name)
        elif column["travel"] == "money":
            parts.append(f"({name}::numeric)::text AS {name}")
        elif column["travel"] == "text":
            parts.append(f"{name}::text AS {name}")
    return f"SELECT {', '.join(parts) or 'NULL'} FROM {ref.sql}"


def fingerprint(conn: dbapi.Connection, table_sql: str, columns: list[str] | None = None) -> tuple[int, str]:
    """Row count and the server-side content fingerprint of a table (or of only `columns` of each row), as this
    transaction sees it."""
    row = "r.*" if columns is None else ", ".join(f"r.{quote_name(c)}" for c in columns) or "NULL"
    with conn.cursor() as cur:
        cur.execute(f"SELECT count(*), coalesce(sum(hashtextextended(ROW({row})::text, 0)), 0)::text "
                    f"FROM {table_sql} AS r")
        count, total = cur.fetchone()
    return int(count), f"{int(total) % MAX_INT:016x}"


def owned_sequences(conn: dbapi.Connection, ref: TableRef) -> list[dict]:
    """Sequences owned by the table's columns (serial, identity) and where each stands now."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT s.oid::regclass::text, a.attname, q.seqincrement FROM pg_depend d "
            "JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' JOIN pg_sequence q ON q.seqrelid = s.oid "
            "JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
            "WHERE d.refobjid = to_regclass($1) AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') "
            "ORDER BY 1", parameters=[ref.sql])
        found = [{"sequence": s, "column": c, "increment": int(i)} for s, c, i in cur.fetchall()]
        for entry in found:
            cur.execute(f"SELECT last_value::text, is_called FROM {entry['sequence']}")
            last, called = cur.fetchone()
            entry.update(last_value=int(last), is_called=bool(called))
    return found


def referenced_by(conn: dbapi.Connection, ref: TableRef) -> list[dict]:
    """Foreign keys of other tables that point at this one (a DROP … CASCADE removes them)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c "
            "WHERE c.confrelid = to_regclass($1) AND c.contype = 'f' AND c.conrelid <> c.confrelid ORDER BY 1, 2",
            parameters=[ref.sql])
        return [{"table": t, "name": n, "definition": d} for t, n, d in cur.fetchall()]


def pg_dump_binary() -> str:
    binary = shutil.which("pg_dump")
    if binary is None:
        raise SchemaDumpError("pg_dump is not installed: it is needed to capture the table's schema objects "
                              "(install the PostgreSQL client of the server's major version)")
    return binary


def dump_schema(location: str, ref: TableRef, snapshot: str | None) -> dict[str, list[str]]:
    """pg_dump's own description of the table, split into the statements before and after the rows."""
    binary = pg_dump_binary()
    dsn, env = _without_password(location)
    pattern = f"{_pattern_part(ref.schema)}.{_pattern_part(ref.name)}"
    sections = {}
    for section in ("pre-data", "post-data"):
        command = [binary, "--schema-only", f"--section={section}", "--no-password", f"--table={pattern}",
                   f"--lock-wait-timeout={LOCK_WAIT}",
                   *([f"--snapshot={snapshot}"] if snapshot else []), f"--dbname={dsn}"]
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
        if done.returncode != 0:
            waited = " (another session waits for an exclusive lock on it — a DROP, ALTER or TRUNCATE — and this " \
                "checkpoint's own read holds the table: it gives way instead of waiting forever; the next one " \
                "retries)" if "lock" in done.stderr.lower() else ""
            raise SchemaDumpError(f"pg_dump of {ref.label} failed: {done.stderr.strip()[:400]}{waited}")
        sections[section.replace("-", "_")] = split_statements(done.stdout)
    if not any(s.startswith("CREATE TABLE") for s in sections["pre_data"]):
        raise SchemaDumpError(f"pg_dump did not describe {ref.label} (is it a plain table?)")
    return sections


def _pattern_part(name: str) -> str:
    """A name as a pg_dump pattern that matches only itself: in double quotes every character is literal."""
    return quote_name(name)


def _without_password(location: str) -> tuple[str, dict]:
    """The DSN without its password (which goes in PGPASSWORD, never on a command line)."""
    parts = urlsplit(location)
    env = dict(os.environ)
    if parts.password is not None:
        env["PGPASSWORD"] = parts.password
        host = parts.hostname or ""
        netloc = f"{parts.username}@{host}" + (f":{parts.port}" if parts.port else "")
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts), env


def wal_position(conn: dbapi.Connection) -> str | None:
    """The server's current WAL position (None on a standby, which has no change log of its own)."""
    with conn.cursor() as cur:
        cur.execute("SELECT CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END")
        (lsn,) = cur.fetchone()
    conn.commit()
    return lsn


def snapshot_xids(conn: dbapi.Connection) -> str:
    """The open snapshot's xmin:xmax:xip list: which transactions a checkpoint on it holds."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_current_snapshot()::text")
        return cur.fetchone()[0]


@contextmanager
def snapshot(conn: dbapi.Connection, imported: str | None = None) -> Iterator[str]:
    """One REPEATABLE READ transaction, exported so pg_dump and other connections read the same snapshot (or
    reading the `imported` one another connection exported)."""
    with conn.cursor() as cur:
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        if imported is not None:
            if not re.fullmatch(r"[0-9A-F]+-[0-9A-F]+-[0-9]+", imported):
                raise ValueError(f"not a snapshot id: {imported!r}")
            cur.execute(f"SET TRANSACTION SNAPSHOT '{imported}'")
            name = imported
        else:
            cur.execute("SELECT pg_export_snapshot()")
            name = cur.fetchone()[0]
    try:
        yield name
    finally:
        conn.rollback()


# ------------------------------------------------------------------ restore steps (inside one transaction)


def load_rows(conn: dbapi.Connection, target: TableRef, cols: list[dict], reader: pa.RecordBatchReader,
              staging: str) -> None:
    """Stage the carried columns in a temporary table, then cast each back to its type into `target`. When every
    carried column travels natively (its Arrow type is its PostgreSQL type: integers, floats, bool, text,
    bpchar, bytea), the rows are copied straight into `target` instead — one COPY, as pg_restore does.
    (Measured: computing the fingerprint from the INSERT's RETURNING rows is slower than reading the table
    again, because the returned rows are materialised.)"""
    carried = [c for c in cols if c["travel"] != "generated"]
    with conn.cursor() as cur:
        if target.schema and all(c["travel"] == "native" for c in carried):
            cur.adbc_ingest(target.name, reader, mode="append", db_schema_name=target.schema)
            return
        cur.adbc_ingest(staging, reader, mode="create", temporary=True)
        names = ", ".join(quote_name(c["name"]) for c in carried)
        values = ", ".join(_cast_back(c) for c in carried)
        cur.execute(f"INSERT INTO {target.sql} ({names}) OVERRIDING SYSTEM VALUE "
                    f"SELECT {values} FROM pg_temp.{quote_name(staging)} AS s")
        cur.execute(f"DROP TABLE pg_temp.{quote_name(staging)}")


def _cast_back(column: dict) -> str:
    value = f"s.{quote_name(column['name'])}"
    if column["travel"] == "money":
        return f"({value}::numeric)::money"
    return f"{value}::{column['type']}"


def create_columns_only(conn: dbapi.Connection, target: TableRef, cols: list[dict]) -> None:
    """A table beside the live one: the same columns, types, NOT NULLs and generated columns (constraints,
    triggers, grants and policies belong to the table in its own place, not to a copy for inspection)."""
    parts = []
    for column in cols:
        part = f"{quote_name(column['name'])} {column['type']}"
        if column["travel"] == "generated":
            part += f" GENERATED ALWAYS AS ({column['expression']}) STORED"
        parts.append(part + (" NOT NULL" if column["not_null"] else ""))
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {target.sql} ({', '.join(parts)})")


def run_statements(conn: dbapi.Connection, statements: list[str], forgiving: re.Pattern | None = None) -> list[str]:
    """Run schema statements in order; one that `forgiving` matches may fail (undone by itself) and
    becomes a warning; any other failure fails the restore."""
    warnings = []
    with conn.cursor() as cur:
        for statement in statements:
            if forgiving is None or not forgiving.match(statement):
                cur.execute(statement)
                continue
            problem = _try(cur, statement)
            if problem:
                warnings.append(f"{statement.splitlines()[0][:120]}: {problem}")
    return warnings


def _try(cur: dbapi.Cursor, statement: str) -> str | None:
    """Run one statement; when it fails, undo just it and return the database's message. The ADBC driver
    refuses every statement after an error until the whole transaction is rolled back (a client-side SAVEPOINT
    cannot help), so the statement runs inside a PL/pgSQL block whose exception handler is that savepoint."""
    tag, outer = f"aegis_{secrets.token_hex(6)}", f"aegis_{secrets.token_hex(6)}"
    if tag in statement or outer in statement:
        raise ValueError("cannot quote the statement for a guarded run")
    cur.execute("SELECT set_config('aegis.step_error', '', true)")
    cur.execute(f"DO ${outer}$ BEGIN EXECUTE ${tag}${statement}${tag}$; EXCEPTION WHEN OTHERS THEN "
                f"PERFORM set_config('aegis.step_error', SQLERRM, true); END ${outer}$")
    cur.execute("SELECT current_setting('aegis.step_error', true)")
    problem = cur.fetchone()[0]
    return problem[:300] if problem else None


def restore_sequences(conn: dbapi.Connection, target: TableRef, sequences: list[dict]) -> None:
    """Each owned sequence at least where it stood, and past every restored value."""
    with conn.cursor() as cur:
        for entry in sequences:
            column = quote_name(entry["column"])
            extreme = "max" if entry["increment"] > 0 else "min"
            cur.execute(f"SELECT {extreme}({column})::text FROM {target.sql}")
            (restored,) = cur.fetchone()
            value, called = entry["last_value"], entry["is_called"]
            if restored is not None and (int(restored) - value) * entry["increment"] >= 0:
                value, called = int(restored), True
            cur.execute(f"SELECT setval(to_regclass($1), {int(value)}, {'true' if called else 'false'})",
                        parameters=[entry["sequence"]])


def restore_referencing_keys(conn: dbapi.Connection, keys: list[dict], restored: Sequence[str] = ()) -> list[str]:
    """Re-create the foreign keys other tables had onto this one (they now point at what was set aside, or
    were dropped by CASCADE); validated, or kept NOT VALID with a warning when rows there lost their parent.
    Tables in `restored` (restored in the same transaction) bring their own keys back and are skipped."""
    warnings = []
    with conn.cursor() as cur:
        for key in keys:
            if to_regclass_missing(cur, key["table"]):
                warnings.append(f"{key['table']} no longer exists: its foreign key {key['name']} comes back "
                                "when that table is restored")
                continue
            if any(_same_table(cur, key["table"], other) for other in restored):
                continue
            name = quote_name(key["name"])
            cur.execute("SELECT count(*) FROM pg_constraint WHERE conrelid = to_regclass($1) AND conname = $2",
                        parameters=[key["table"], key["name"]])
            if cur.fetchone()[0]:
                cur.execute(f"ALTER TABLE {key['table']} DROP CONSTRAINT {name}")
            statement = f"ALTER TABLE {key['table']} ADD CONSTRAINT {name} {key['definition']}"
            problem = add_foreign_key(cur, statement)
            if problem:
                warnings.append(f"foreign key {key['name']} of {key['table']}: {problem}")
    return warnings


def _same_table(cur: dbapi.Cursor, a: str, b: str) -> bool:
    cur.execute("SELECT to_regclass($1) = to_regclass($2)", parameters=[a, b])
    return bool(cur.fetchone()[0])


def add_foreign_key(cur: dbapi.Cursor, statement: str) -> str | None:
    """Add a foreign key, validated; when rows lost their parent, NOT VALID (new rows are still checked);
    when even that fails (the referenced table is gone too), not at all. Returns what fell short, if anything."""
    problem = _try(cur, statement)
    if problem is None:
        return None
    if _try(cur, statement + " NOT VALID") is None:
        return f"re-created NOT VALID: {problem}"
    return f"not re-created ({problem}); it comes back when the table it references is restored"


def to_regclass_missing(cur: dbapi.Cursor, table_sql: str) -> bool:
    cur.execute("SELECT to_regclass($1) IS NULL", parameters=[table_sql])
    return bool(cur.fetchone()[0])

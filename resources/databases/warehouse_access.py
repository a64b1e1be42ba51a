"""Least privilege and row-level access on a PostgreSQL warehouse, applied idempotently.

- A read-only role for BI (`AEGIS_BI_ROLE`, default `aegis_bi`, NOLOGIN: BI users are its members): USAGE on the
  serving schema and SELECT on its tables (default privileges cover tables created later), nothing else — no
  writes, no CREATE in any schema, no temporary tables, no other schema, no BYPASSRLS.
- A writer role (`AEGIS_WRITER_ROLE`, default `aegis_writer`) that owns the serving tables; the platform
  publishes as it (`SET LOCAL ROLE`, warehouse.py) when its login is a member.
- Row-level security on every serving table: a policy (for everyone but the writer role and its members — the
  platform's own login, reading serving for its reports and checks) lets a user see the rows of
  the institutions, states or categories `AEGIS_ROW_ACCESS` maps it (or a role it belongs to) to; tables with no
  such column are visible to any mapped user; an unmapped user sees nothing. The mapping lives in
  `aegis_security.row_access`, rewritten from the configuration, readable only through a SECURITY DEFINER
  function (a BI user cannot list who sees what). Publishing enables RLS on a table it creates, so a new table
  shows BI nothing until its policy is applied.

`AEGIS_ROW_ACCESS`: `grantee:dimension=value|value,dimension=*;grantee2:…` (dimensions: state, category,
institution; `*` = every value), e.g. `analyst_rj:state=RJ|SP;books_team:category=books;cfo:state=*,category=*`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from resources.identifiers import check_identifier, quote, quote_literal

DIMENSIONS = ("state", "category", "institution")
SECURITY_SCHEMA = "aegis_security"
ACCESS_VAR = "AEGIS_ROW_ACCESS"
_ROLE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class AccessConfigError(ValueError):
    """AEGIS_ROW_ACCESS or a role name cannot be used; the message says where."""


@dataclass(frozen=True)
class Grant:
    grantee: str
    dimension: str
    value: str


def parse_access(text: str | None) -> list[Grant]:
    grants = []
    for entry in (e.strip() for e in (text or "").split(";") if e.strip()):
        grantee, sep, scopes = entry.partition(":")
        role(grantee.strip(), ACCESS_VAR)
        if not sep or not scopes.strip():
            raise AccessConfigError(f"{ACCESS_VAR}: {entry!r} is not `grantee:dimension=value|value`")
        for scope in scopes.split(","):
            dimension, sep, values = scope.strip().partition("=")
            if not sep or dimension not in DIMENSIONS or not values:
                raise AccessConfigError(f"{ACCESS_VAR}: {scope.strip()!r} for {grantee.strip()} is not "
                                        f"`dimension=value|value` with a dimension of {', '.join(DIMENSIONS)}")
            grants += [Grant(grantee.strip(), dimension, v.strip()) for v in values.split("|") if v.strip()]
    return grants


def role(name: str, variable: str) -> str:
    """A role name used in SQL: lower-case identifier letters only (quoted anyway)."""
    if not _ROLE.fullmatch(name or ""):
        raise AccessConfigError(f"{variable}: {name!r} is not a role name (lower-case letters, digits, _)")
    return name


def policy_expression(table: str, columns: set[str], schema: str = "serving") -> str:
    """Which rows of a serving table with these columns a user may see. A fact without its own state or category
    column is judged by its product's category and its customer's state (the dimensions' own rows)."""
    this, s = quote(table), quote(schema)
    allowed = [f"{SECURITY_SCHEMA}.allowed(current_user, '{d}', {this}.{quote(d)}::text)"
               for d in DIMENSIONS if d in columns]
    if "product_key" in columns and "category" not in columns:
        allowed.append(f"{SECURITY_SCHEMA}.allowed(current_user, 'category', (SELECT p.category FROM {s}.dim_product p "
                       f"WHERE p.product_key = {this}.product_key LIMIT 1))")
    if "customer_key" in columns and "state" not in columns:
        allowed.append(f"{SECURITY_SCHEMA}.allowed(current_user, 'state', (SELECT c.state FROM {s}.dim_customer c "
                       f"WHERE c.customer_key = {this}.customer_key LIMIT 1))")
    return " OR ".join(allowed) or f"{SECURITY_SCHEMA}.mapped(current_user)"


def setup_statements(database: str, schema: str, bi: str, writer: str, platform_user: str, superuser: bool,
                     grants: list[Grant], tables: dict[str, set[str]]) -> list[str]:
    """Every statement, in order, for roles, grants, the mapping and the policies (idempotent)."""
    db, s, sec = quote(database), quote(check_identifier(schema, "schema name")), quote(SECURITY_SCHEMA)
    b, w = quote(bi), quote(writer)
    out = [f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{r}') THEN "
           f"CREATE ROLE {quote(r)} NOLOGIN; END IF; END $$" for r in (bi, writer)]
    out += [f"ALTER ROLE {b} NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOREPLICATION",
            f"ALTER ROLE {w} NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOREPLICATION"]
    if not superuser:
        out.append(f"GRANT {w} TO {quote(platform_user)}")
    out += [f"CREATE SCHEMA IF NOT EXISTS {s}", f"CREATE SCHEMA IF NOT EXISTS {sec}",
            f"REVOKE ALL ON SCHEMA {sec} FROM PUBLIC", "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
            f"REVOKE TEMPORARY ON DATABASE {db} FROM PUBLIC", f"GRANT TEMPORARY, CONNECT ON DATABASE {db} TO {w}",
            f"GRANT CONNECT ON DATABASE {db} TO {b}", f"GRANT USAGE, CREATE ON SCHEMA {s} TO {w}",
            f"REVOKE CREATE ON SCHEMA {s} FROM PUBLIC, {b}", f"GRANT USAGE ON SCHEMA {s} TO {b}",
            f"CREATE TABLE IF NOT EXISTS {sec}.row_access (grantee text NOT NULL, dimension text NOT NULL, "
            "value text NOT NULL, PRIMARY KEY (grantee, dimension, value))",
            f"DELETE FROM {sec}.row_access"]
    out += [f"INSERT INTO {sec}.row_access VALUES ({quote_literal(g.grantee)}, {quote_literal(g.dimension)}, "
            f"{quote_literal(g.value)}) ON CONFLICT DO NOTHING" for g in grants]
    member = (f"FROM {sec}.row_access a JOIN pg_catalog.pg_roles r ON r.rolname = a.grantee "
              "WHERE pg_catalog.pg_has_role(who, r.oid, 'MEMBER')")
    out += [f"CREATE OR REPLACE FUNCTION {sec}.allowed(who name, dim text, val text) RETURNS boolean LANGUAGE sql "
            f"STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$ SELECT EXISTS (SELECT 1 {member} "
            "AND a.dimension = dim AND (a.value = val OR a.value = '*')) $$",
            f"CREATE OR REPLACE FUNCTION {sec}.mapped(who name) RETURNS boolean LANGUAGE sql STABLE SECURITY DEFINER "
            f"SET search_path = pg_catalog AS $$ SELECT EXISTS (SELECT 1 {member}) $$",
            f"REVOKE ALL ON FUNCTION {sec}.allowed(name, text, text), {sec}.mapped(name) FROM PUBLIC",
            f"GRANT USAGE ON SCHEMA {sec} TO {b}",
            f"GRANT EXECUTE ON FUNCTION {sec}.allowed(name, text, text), {sec}.mapped(name) TO {b}"]
    for table, columns in sorted(tables.items()):
        t = f"{s}.{quote(check_identifier(table, 'table name'))}"
        out += [f"ALTER TABLE {t} OWNER TO {w}", f"REVOKE ALL ON {t} FROM PUBLIC, {b}", f"GRANT SELECT ON {t} TO {b}",
                f"ALTER TABLE {t} ENABLE ROW LEVEL SECURITY", f"DROP POLICY IF EXISTS aegis_rows ON {t}",
                f"CREATE POLICY aegis_rows ON {t} FOR SELECT TO PUBLIC USING (pg_catalog.pg_has_role(current_user, "
                f"{quote_literal(writer)}, 'MEMBER') OR {policy_expression(table, columns, schema)})"]
    out += [f"ALTER DEFAULT PRIVILEGES FOR ROLE {w} IN SCHEMA {s} GRANT SELECT ON TABLES TO {b}"]
    return out

"""Which tables are protected, and how a table of any name is named safely everywhere else.

A `TableRef` is a table as the database knows it (schema + name, any characters the database allows) with
three derived names: its SQL (always quoted), its id (a path of plain identifiers used for asset keys, lake
paths, partitions and run keys) and its label (what people read). `resolve_protected` turns the
`AEGIS_PROTECTED_TABLES` list into the tables it means, against the tables that exist.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

from resources.identifiers import check_identifier

PLATFORM_TABLES = ("sales", "customers", "infra_logs", "video_events")
PROTECTED_VAR = "AEGIS_PROTECTED_TABLES"
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_PATTERN = re.compile(r"[*?\[]")
ASIDE_SUFFIX = r"__replaced_(?P<stamp>\d{8}_\d{6})"  # tables a restore set aside: never protected themselves


def quote_name(name: str) -> str:
    """Any name the database allows, as a quoted SQL identifier (embedded quotes doubled)."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ValueError(f"invalid SQL name {name!r}")
    return '"' + name.replace('"', '""') + '"'


def safe_component(name: str) -> str:
    """A name as one asset-key component / path segment: itself when it is a plain identifier, else an ASCII
    slug plus a short hash of the real name (so two different names never meet)."""
    if _PLAIN.match(name):
        return name
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^A-Za-z0-9_]+", "_", ascii_name).strip("_")[:40] or "table"
    if not slug[0].isalpha():
        slug = f"t_{slug}"
    return check_identifier(f"{slug}_{hashlib.sha1(name.encode()).hexdigest()[:6]}", "table key")


@dataclass(frozen=True)
class TableRef:
    """A source table: `name` as created, in `schema` (None: the connection's default schema — SQLite's
    main, PostgreSQL's current_schema() — which `in_schema` pins down once a database is at hand)."""

    schema: str | None
    name: str
    default_schema: bool = True  # the schema unqualified names resolve to (ids then omit it)

    @property
    def sql(self) -> str:
        table = quote_name(self.name)
        return table if self.schema is None else f"{quote_name(self.schema)}.{table}"

    def in_schema(self, default: str) -> TableRef:
        return self if self.schema is not None else TableRef(default, self.name, True)

    @property
    def key_path(self) -> list[str]:
        table = safe_component(self.name)
        return [table] if self.default_schema else [safe_component(self.schema), table]

    @property
    def id(self) -> str:
        """`sales`, or `ops/orders` outside the default schema: asset keys, lake paths, cursor entries."""
        return "/".join(self.key_path)

    @property
    def flat_id(self) -> str:
        """The id as one identifier (`ops__orders`): job and partition-set names."""
        return "__".join(self.key_path)

    @property
    def label(self) -> str:
        return self.name if self.default_schema or self.schema is None else f"{self.schema}.{self.name}"

    def renamed(self, name: str) -> TableRef:
        return TableRef(self.schema, name, self.default_schema)

    def to_json(self) -> dict:
        return {"schema": self.schema, "name": self.name, "default_schema": self.default_schema}

    @classmethod
    def from_json(cls, data: dict) -> TableRef:
        return cls(data["schema"], data["name"], bool(data.get("default_schema", True)))


def check_table_id(table_id: str) -> str:
    """A table id (`sales`, `ops/orders`) whose every segment is a plain identifier: safe in a path."""
    parts = table_id.split("/") if isinstance(table_id, str) else [None]
    if not 1 <= len(parts) <= 2:
        raise ValueError(f"invalid table id {table_id!r}")
    for part in parts:
        check_identifier(part, "table id")
    return table_id


@dataclass(frozen=True)
class Resolution:
    """What is protected. `tables`: what AEGIS_PROTECTED_TABLES matches among the tables that exist and the tables
    that have kept checkpoints (a dropped table stays protected: its loss is to be restored); `retired`: tables
    with kept checkpoints that the configuration no longer matches (restorable by hand until their checkpoints
    expire, never restored on their own); `notes`: what could not be resolved, said in the watch sensor's ticks
    and by `make doctor` instead of failing the code location."""

    tables: list[TableRef]
    empty_patterns: list[str]  # patterns that matched nothing (not an error: said in the watch's messages)
    retired: list[TableRef] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def parse_spec(spec: str | None) -> list[str]:
    items = [item.strip() for item in (spec or "").split(",") if item.strip()]
    return items or list(PLATFORM_TABLES)


def split_name(item: str, default: str, variable: str = PROTECTED_VAR) -> tuple[str, str]:
    """`schema.table` → both; a bare name → the default schema. A name holding a dot is written `"a.b"`."""
    match = re.fullmatch(r'(?:("(?:[^"]|"")+"|[^."]+)\.)?("(?:[^"]|"")+"|[^"]+)', item)
    if not match:
        raise ValueError(f"{variable}: cannot read {item!r}: use table, schema.table or a pattern")
    schema, table = match.group(1), match.group(2)
    return (_unquote(schema) if schema else default), _unquote(table)


def _unquote(part: str) -> str:
    return part[1:-1].replace('""', '"') if part.startswith('"') else part


def resolve_protected(spec: str | None, existing: Iterable[tuple[str, str]] | None, default_schema: str,
                      checkpointed: Iterable[tuple[str, str]] = ()) -> Resolution:
    """The tables `spec` names, in the order first named: exact names (protected whether they exist or not: a
    missing one is a loss to restore, or a table not created yet), shell patterns matched against the tables that
    exist and those with kept checkpoints (so a dropped table is never forgotten), and `-pattern` exclusions
    applied after every inclusion. `existing` is None when the database could not be asked. Nothing here raises
    on a table that is not there: it is said in `notes`."""
    def real(tables: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        return {t for t in tables if not re.search(ASIDE_SUFFIX + "$", t[1])}

    live = None if existing is None else real(existing)
    kept = real(checkpointed)
    candidates = sorted((live or set()) | kept)
    chosen: list[tuple[str, str]] = []
    excluded: list[tuple[str, str]] = []
    empty: list[str] = []
    notes: list[str] = []
    for item in parse_spec(spec):
        exclude = item.startswith("-")
        try:
            schema, table = split_name(item[1:] if exclude else item, default_schema)
        except ValueError as exc:
            notes.append(f"{exc} (ignored)")
            continue
        if exclude:
            excluded.append((schema, table))
        elif _PATTERN.search(schema) or _PATTERN.search(table):
            matched = [t for t in candidates
                       if fnmatch.fnmatchcase(t[0], schema) and fnmatch.fnmatchcase(t[1], table)]
            if not matched:
                empty.append(item)
            chosen.extend(t for t in matched if t not in chosen)
        else:
            if (schema, table) not in chosen:
                chosen.append((schema, table))
            if live is not None and (schema, table) not in live and (schema, table) not in kept:
                notes.append(f"{PROTECTED_VAR} names {item!r}, but there is no table {schema}.{table} in the source "
                             "database and no checkpoint of it: it is checkpointed once it exists (names are "
                             "case-sensitive; quote a name that holds a dot: \"a.b\")")
    protected = [t for t in chosen if not any(fnmatch.fnmatchcase(t[0], s) and fnmatch.fnmatchcase(t[1], n)
                                              for s, n in excluded)]
    retired = sorted(kept - set(protected))

    def ref(schema: str, name: str) -> TableRef:
        return TableRef(None if schema == default_schema else schema, name, schema == default_schema)

    return Resolution([ref(*t) for t in protected], empty, [ref(*t) for t in retired], notes)

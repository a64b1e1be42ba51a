"""The tables the checkpoint store knows, as their newest checkpoint recorded them: the table itself (schema and
name as the database had them) and the foreign keys between it and other tables, from the checkpoint's own
snapshot. What is protected, and which tables form a group, must not depend on the table still being there:
a dropped table is known here for as long as it has kept checkpoints."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass

from resources.checkpoints.store import CheckpointStore
from resources.databases.consistency_groups import Link
from resources.databases.table_refs import TableRef

_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_QUALIFIED = re.compile(rf"({_IDENT})\.({_IDENT})")
_REFERENCES = re.compile(rf"\bFOREIGN KEY\s*\([^)]*\)\s*REFERENCES\s+({_IDENT}\.{_IDENT})\s*\(", re.IGNORECASE)


@dataclass(frozen=True)
class CheckpointedTable:
    ref: TableRef  # with its schema, as captured
    kind: str  # "postgres" | "sqlite"
    links: frozenset[Link]  # foreign keys from and to this table, as the newest checkpoint saw them

    @property
    def key(self) -> tuple[str, str]:
        return self.ref.schema or "main", self.ref.name


def checkpointed_tables(store: CheckpointStore) -> tuple[list[CheckpointedTable], list[str]]:
    """Every table with a readable checkpoint, and a note for each table directory that could not be read."""
    found, notes = [], []
    for table_id in store.tables():
        manifest = store.newest_manifest(table_id)
        if manifest is None:
            continue
        try:
            source = manifest["source"]
            ref = TableRef.from_json(source["table"])
            if ref.schema is None:  # written before captures recorded the schema
                ref = ref.in_schema("main" if source["kind"] == "sqlite" else "public")
            if ref.id != table_id:
                raise ValueError(f"its manifest describes {ref.label} (id {ref.id})")
            found.append(CheckpointedTable(ref, source["kind"], frozenset(links_of(source, ref))))
        except (KeyError, TypeError, ValueError) as exc:
            notes.append(f"checkpoints of {table_id} could not be read as a protected table: {exc}")
    return found, notes


def links_of(source: dict, ref: TableRef) -> set[Link]:
    """The foreign keys a checkpoint's schema definition records: this table's own (to its parents) and, on
    PostgreSQL, those of other tables onto it (which a DROP … CASCADE removes)."""
    me = (ref.schema or "main", ref.name)
    if source["kind"] == "sqlite":
        return {(me, parent) for parent in _sqlite_parents(source["objects"]["table"], ref.schema or "main")
                if parent != me}
    objects = source.get("objects") or {}
    links = set()
    for statement in [*objects.get("pre_data", []), *objects.get("post_data", [])]:
        for target in _REFERENCES.findall(statement):
            parent = _qualified(target)
            if parent and parent != me:
                links.add((me, parent))
    for key in source.get("referenced_by", []):
        child = _qualified(key["table"])
        if child and child != me:
            links.add((child, me))
    return links


def _qualified(text: str) -> tuple[str, str] | None:
    """`schema.table` as pg_dump and regclass write it (each part quoted when it has to be)."""
    match = _QUALIFIED.fullmatch(text.strip())
    return (_unquote(match.group(1)), _unquote(match.group(2))) if match else None


def _unquote(part: str) -> str:
    return part[1:-1].replace('""', '"') if part.startswith('"') else part.lower()


def _sqlite_parents(create_table: str, schema: str) -> set[tuple[str, str]]:
    """The tables a SQLite table's foreign keys name, read by SQLite itself from its CREATE TABLE."""
    with sqlite3.connect(":memory:") as conn:
        try:
            conn.execute(create_table)
            name = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchone()[0]
            rows = conn.execute("SELECT DISTINCT \"table\" FROM pragma_foreign_key_list(?)", (name,)).fetchall()
        except sqlite3.Error:
            return set()
    return {(schema, parent) for (parent,) in rows}

"""The protected tables and their consistency groups, as the code location loads them.

What is protected never depends on the victim still being there. Every run the daemon launches loads the code
location afresh — the watch sensor's restore included, after the loss — so the protected set is
AEGIS_PROTECTED_TABLES matched against the tables that exist **and** the tables that have kept checkpoints, and
the foreign keys that make a group come from the live catalogue for tables that exist and from each missing
table's newest checkpoint otherwise. A named table that is missing is a loss to restore (or a table not created
yet), never a load error; a pattern keeps the tables it once matched while they have checkpoints; an unreachable
database or lake costs what could not be read, said in `notes` (the watch sensor's ticks, `make doctor`), never
the code location. Tables with checkpoints that the configuration no longer matches are `retired`: restorable by
hand until the hourly checkpoint run lets their checkpoints expire.
The platform's own four tables count as present even before their first day is generated: the source assets
create them.
"""

from __future__ import annotations

import os

from resources import CheckpointStore, Lake, SourceDatabase
from resources.checkpoints.checkpointed_tables import CheckpointedTable, checkpointed_tables
from resources.databases.consistency_groups import GROUPS_VAR, ConsistencyGroup, Link, build_groups
from resources.databases.table_refs import PLATFORM_TABLES, PROTECTED_VAR, Resolution, resolve_protected
from resources.urls import redact

DEFAULT_URL = "sqlite:///data/source.db"
DEFAULT_LAKE_URL = "file://data/lake"


def resolve(url: str | None = None, spec: str | None = None, groups: str | None = None,
            lake_url: str | None = None) -> tuple[Resolution, list[ConsistencyGroup]]:
    """The protected tables (and the retired ones) with their groups; never raises for a table that is missing
    or a server that cannot be reached, only for a URL that cannot be a source or a lake at all."""
    db = SourceDatabase(url=url or os.environ.get(SourceDatabase.ENV_VAR) or DEFAULT_URL)
    lake = Lake(url=lake_url or os.environ.get(Lake.ENV_VAR) or DEFAULT_LAKE_URL)
    _ = db.parsed, lake.parsed  # a URL that cannot work at all is a configuration error, said at once
    spec = spec if spec is not None else os.environ.get(PROTECTED_VAR)
    groups = groups if groups is not None else os.environ.get(GROUPS_VAR)
    notes: list[str] = []
    existing, default, live_links = _live(db, notes)
    stored = _stored(lake, db.kind, notes)
    default = default or next((t.ref.schema for t in stored if t.ref.default_schema), None) or \
        ("main" if db.kind == "sqlite" else "public")
    present = None if existing is None else existing | {(default, t) for t in PLATFORM_TABLES}
    keys = {t.ref.id: (default if t.ref.default_schema else t.ref.schema, t.ref.name) for t in stored}
    resolution = resolve_protected(spec, present, default, keys.values())
    notes += resolution.notes
    if existing is None and resolution.empty_patterns:
        notes.append(f"{', '.join(resolution.empty_patterns)} matched no checkpointed table, and the source database "
                     "could not be asked: reload the code location once it is back")
    links = _links(live_links, stored, keys, existing, db.kind)
    protected_groups = build_groups(resolution.tables, links, groups, default, problems=notes)
    retired = [ConsistencyGroup((ref,), retired=True) for ref in resolution.retired]
    for ref in resolution.retired:
        notes.append(f"{ref.label} has kept checkpoints but {PROTECTED_VAR} no longer matches it: it is not "
                     "restored on its own any more (recovery/… still restores it by hand) and its checkpoints expire "
                     "with retention")
    return (Resolution(resolution.tables, resolution.empty_patterns, resolution.retired, notes),
            protected_groups + retired)


def _live(db: SourceDatabase, notes: list[str]) -> tuple[set[tuple[str, str]] | None, str | None, set[Link]]:
    try:
        existing, default = db.catalogue()
        return existing, default, db.foreign_links()
    except Exception as exc:  # noqa: BLE001 - whatever the outage, the code location loads and says so
        notes.append(f"the source database could not be asked when the code location loaded "
                     f"({redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)[:300]}): protected "
                     "tables were resolved from the names configured and the tables with kept checkpoints")
        return None, None, set()


def _stored(lake: Lake, kind: str, notes: list[str]) -> list[CheckpointedTable]:
    try:
        stored, problems = checkpointed_tables(CheckpointStore(lake=lake, encryption_key=""))
    except Exception as exc:  # noqa: BLE001 - a lake that cannot be read costs the dropped tables, said
        notes.append(f"the checkpoints in {lake.parsed.display} could not be listed when the code location loaded "
                     f"({redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)[:300]}): a protected "
                     "table that is missing now is not known until it is reloaded")
        return []
    notes += problems
    other = sorted(t.ref.id for t in stored if t.kind != kind)
    if other:
        notes.append(f"checkpoints of {', '.join(other)} come from another kind of source database than "
                     f"{SourceDatabase.ENV_VAR} ({kind}): not protected here")
    return [t for t in stored if t.kind == kind]


def _links(live: set[Link], stored: list[CheckpointedTable], keys: dict[str, tuple[str, str]],
           existing: set[tuple[str, str]] | None, kind: str) -> set[Link]:
    """Foreign keys as the catalogue has them, plus those of missing tables as their newest checkpoint saw them
    (a table dropped with CASCADE took its partners' keys onto it along)."""
    links = set(live)
    for table in stored:
        key = keys[table.ref.id]
        if existing is None or key not in existing:
            links |= table.links
    if kind == "sqlite":  # SQLite matches table names case-insensitively
        names = {name.lower(): (schema, name) for schema, name in [*(existing or ()), *keys.values()]}
        links = {(names.get(child[1].lower(), child), names.get(parent[1].lower(), parent))
                 for child, parent in links}
    return links


"""The protected tables: AEGIS_PROTECTED_TABLES resolved against the source database when the code location
loads (one `checkpoints/…` and one `recovery/…` asset each), and their consistency groups (tables linked by
foreign keys or listed in AEGIS_CONSISTENCY_GROUPS: checkpointed from one snapshot, restorable together).
The platform's own four tables count as present even before their first day is generated: the source
assets create them."""

from __future__ import annotations

import os

from resources.adbc import DatabaseUnreachableError
from resources.consistency_groups import GROUPS_VAR, ConsistencyGroup, build_groups
from resources.source_database import SourceDatabase
from resources.table_refs import PLATFORM_TABLES, PROTECTED_VAR, Resolution, TableRef, resolve_protected

DEFAULT_URL = "sqlite:///data/source.db"


def resolve(url: str | None = None, spec: str | None = None,
            groups: str | None = None) -> tuple[Resolution, list[ConsistencyGroup]]:
    url = url or os.environ.get(SourceDatabase.ENV_VAR) or DEFAULT_URL
    spec = spec if spec is not None else os.environ.get(PROTECTED_VAR)
    groups = groups if groups is not None else os.environ.get(GROUPS_VAR)
    db = SourceDatabase(url=url)
    try:
        existing, default = db.catalogue()
        links = db.foreign_links()
    except DatabaseUnreachableError as exc:
        if (spec and spec.strip()) or (groups and groups.strip()):
            raise DatabaseUnreachableError(f"cannot resolve {PROTECTED_VAR}={spec!r} / {GROUPS_VAR}={groups!r}: "
                                           f"{exc}") from None
        existing, default = set(), "main" if db.kind == "sqlite" else "public"  # the platform's tables only
        links = set()
    resolution = resolve_protected(spec, existing | {(default, t) for t in PLATFORM_TABLES}, default)
    return resolution, build_groups(resolution.tables, links, groups, default)


RESOLUTION, GROUPS = resolve()
PROTECTED: list[TableRef] = RESOLUTION.tables

"""The protected tables: AEGIS_PROTECTED_TABLES resolved against the source database when the code location
loads (one `checkpoints/…` and one `recovery/…` asset each). The platform's own four tables count as present
even before their first day is generated: the source assets create them."""

from __future__ import annotations

import os

from resources.adbc import DatabaseUnreachableError
from resources.source_database import SourceDatabase
from resources.table_refs import PLATFORM_TABLES, PROTECTED_VAR, Resolution, TableRef, resolve_protected

DEFAULT_URL = "sqlite:///data/source.db"


def resolve(url: str | None = None, spec: str | None = None) -> Resolution:
    url = url or os.environ.get(SourceDatabase.ENV_VAR) or DEFAULT_URL
    spec = spec if spec is not None else os.environ.get(PROTECTED_VAR)
    db = SourceDatabase(url=url)
    try:
        existing, default = db.catalogue()
    except DatabaseUnreachableError as exc:
        if spec and spec.strip():
            raise DatabaseUnreachableError(f"cannot resolve {PROTECTED_VAR}={spec!r}: {exc}") from None
        existing, default = set(), "main" if db.kind == "sqlite" else "public"  # the platform's tables only
    return resolve_protected(spec, existing | {(default, t) for t in PLATFORM_TABLES}, default)


RESOLUTION = resolve()
PROTECTED: list[TableRef] = RESOLUTION.tables

"""Opening ADBC connections (SQLite, PostgreSQL) with errors that name the configuring variable."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import adbc_driver_manager
import adbc_driver_manager.dbapi as dbapi

from resources.urls import ParsedUrl, absolute


class DatabaseUnreachableError(ConnectionError):
    """The configured database could not be opened; the message names the variable."""


@contextmanager
def adbc_connection(parsed: ParsedUrl, variable: str) -> Iterator[dbapi.Connection]:
    """A transactional (autocommit off) ADBC connection; closed on exit, rolled back if not committed."""
    try:
        if parsed.scheme == "sqlite":
            import adbc_driver_sqlite.dbapi as sqlite

            path = absolute(parsed.location)
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            conn = sqlite.connect(path)
            cur = conn.cursor()
            # several run processes write the same file: wait for the lock instead of failing
            cur.execute("PRAGMA busy_timeout = 60000")
            cur.close()
        else:
            import adbc_driver_postgresql.dbapi as postgresql

            conn = postgresql.connect(parsed.location)
    except adbc_driver_manager.Error as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DatabaseUnreachableError(f"{variable}={parsed.display}: cannot connect: {reason}") from None
    try:
        yield conn
    finally:
        try:
            conn.rollback()
        except adbc_driver_manager.Error:
            pass
        conn.close()

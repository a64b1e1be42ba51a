"""Opening ADBC connections (SQLite, PostgreSQL) with errors that name the configuring variable."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import adbc_driver_manager
import adbc_driver_manager.dbapi as dbapi

from resources.urls import ParsedUrl, absolute

CONNECT_TIMEOUT_SECONDS = 10  # PostgreSQL: a server that does not answer is an error, not a hang (unless set)


class DatabaseUnreachableError(ConnectionError):
    """The configured database could not be opened; the message names the variable."""


OUTAGE_ERRORS = (ConnectionError, OSError, adbc_driver_manager.Error)  # a server that went away mid-query too


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

            conn = postgresql.connect(with_connect_timeout(parsed.location))
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


def with_connect_timeout(location: str, seconds: int = CONNECT_TIMEOUT_SECONDS) -> str:
    """A PostgreSQL URL that gives up connecting after `seconds` (libpq waits forever by default), unless the URL
    sets its own connect_timeout."""
    if "connect_timeout=" in location:
        return location
    return f"{location}{'&' if '?' in location else '?'}connect_timeout={seconds}"

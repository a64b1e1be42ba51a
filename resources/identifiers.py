"""Names that end up inside SQL or paths are checked here, once, before they get there."""

from __future__ import annotations

import datetime as dt
import re

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class InvalidIdentifierError(ValueError):
    """A table, column or path segment name that is not a plain SQL identifier."""


def check_identifier(name: str, what: str = "identifier") -> str:
    """Return `name` unchanged if it is a plain identifier (letters, digits, underscore; max 63)."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise InvalidIdentifierError(
            f"invalid {what} {name!r}: use letters, digits and underscores, starting with a letter"
        )
    return name


def check_lake_layer(layer: str) -> list[str]:
    """The path segments of a lake layer ("silver/quarantine" -> ["silver", "quarantine"]), each an identifier."""
    return [check_identifier(part, "lake layer") for part in layer.split("/")]


def quote(name: str, what: str = "identifier") -> str:
    """A checked identifier in double quotes, safe to place in SQL for SQLite, PostgreSQL and DuckDB."""
    return f'"{check_identifier(name, what)}"'


def check_day(day: str | dt.date) -> str:
    """A calendar day as 'YYYY-MM-DD'; anything else (paths, SQL, impossible dates) is refused."""
    text = day.isoformat() if isinstance(day, dt.date) else day
    if not isinstance(text, str) or not _DAY.match(text):
        raise ValueError(f"invalid day {day!r}: expected YYYY-MM-DD")
    try:
        dt.date.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"invalid day {day!r}: {exc}") from None
    return text


def next_day(day: str) -> str:
    return (dt.date.fromisoformat(check_day(day)) + dt.timedelta(days=1)).isoformat()


def day_range_sql(column: str, day: str) -> str:
    """`"col" >= 'D' AND "col" < 'D+1'`: the day is validated, so inlining it as a literal is safe.

    A literal (not a bound parameter) lets the same text compare against SQLite's ISO strings and
    PostgreSQL's DATE/TIMESTAMP columns alike.
    """
    start = check_day(day)
    return f"{quote(column, 'column')} >= '{start}' AND {quote(column, 'column')} < '{next_day(start)}'"


def quote_literal(value: str) -> str:
    """A string as an SQL literal (quotes doubled; PostgreSQL and SQLite read backslashes as themselves)."""
    if not isinstance(value, str) or "\x00" in value:
        raise ValueError(f"invalid SQL string {value!r}")
    return "'" + value.replace("'", "''") + "'"

"""Macro-economic series, as plain logic: which window a day asks for, the bronze rows of an API answer (every
value as the text the API sent), and silver: typed rows (series, reference_date, value as an exact decimal),
the malformed ones quarantined.

Every bronze row ends in exactly one place, so bronze rows = silver rows + quarantined rows, always:
- a date that is not a real dd/mm/yyyy date, or lies outside the window asked for: quarantined;
- a value that is not a plain decimal number (or has more than SCALE decimal places): quarantined, never rounded;
- the same series and date twice with the same value: the first kept, the others quarantined as duplicates;
  with different values: all of them quarantined (which one is right is not ours to guess).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter, defaultdict
from decimal import Decimal

import pyarrow as pa

from platform_assets.layers.cleansing import Cleansed
from platform_assets.layers.tables import LINEAGE
from resources.http.macro_api import SERIES

NAME = "macro_indicators"
WINDOW_MONTHS = 13  # a day asks for its month and the 13 before: a year-on-year comparison is always possible
SCALE = 6
VALUE = pa.decimal128(20, SCALE)
API, FALLBACK = "api", "fallback"

RESPONSE_COLUMNS = [("series", pa.string()), ("code", pa.int64()), ("data", pa.string()), ("valor", pa.string()),
                    ("_position", pa.int64()), ("_url", pa.string()),
                    ("_fetched_at", pa.timestamp("us", tz="UTC")), ("_source", pa.string())]
BRONZE_SCHEMA = pa.schema([*RESPONSE_COLUMNS, ("_fallback_reason", pa.string()), *LINEAGE])
SILVER_SCHEMA = pa.schema([("series", pa.string()), ("code", pa.int64()), ("reference_date", pa.date32()),
                           ("value", VALUE), ("_fetched_at", pa.timestamp("us", tz="UTC")), ("_source", pa.string()),
                           *LINEAGE])
QUARANTINE_SCHEMA = pa.schema([*RESPONSE_COLUMNS[:4], ("_reason", pa.string()), *RESPONSE_COLUMNS[4:], *LINEAGE])

_DATE = re.compile(r"\d{2}/\d{2}/\d{4}")
_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def window(day: str) -> tuple[dt.date, dt.date]:
    """The dates a day's partition asks the API for: the first of the month WINDOW_MONTHS before, to the day."""
    end = dt.date.fromisoformat(day)
    months = end.year * 12 + end.month - 1 - WINDOW_MONTHS
    return dt.date(months // 12, months % 12 + 1, 1), end


def _text(value: object) -> str | None:
    """A JSON value as text: strings (and numbers, parsed as their exact text) as they are, anything else as JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


def bronze_rows(series: str, observations: list[dict], url: str, fetched_at: dt.datetime, source: str,
                batch_id: str, ingested_at: dt.datetime) -> pa.Table:
    """One bronze row per observation of one API answer, every value kept as the API sent it."""
    rows = [{"series": series, "code": SERIES[series], "data": _text(o.get("data")), "valor": _text(o.get("valor")),
             "_position": i, "_url": url, "_fetched_at": fetched_at, "_source": source,
             "_ingested_at": ingested_at, "_batch_id": batch_id} for i, o in enumerate(observations)]
    return pa.Table.from_pylist(rows, schema=BRONZE_SCHEMA)


def last_good_answer(bronze: pa.Table, series: str) -> pa.Table:
    """Of every bronze row ever written, those of the newest answer the API itself gave for `series`."""
    rows = [r for r in bronze.to_pylist() if r["series"] == series and r["_source"] == API]
    newest = max((r["_fetched_at"] for r in rows), default=None)
    return pa.Table.from_pylist(sorted({(r["_url"], r["_position"]): r for r in rows
                                        if r["_fetched_at"] == newest}.values(), key=lambda r: r["_position"]),
                                schema=BRONZE_SCHEMA)


def fallback_rows(answer: pa.Table, day: str, reason: str, batch_id: str, ingested_at: dt.datetime) -> pa.Table:
    """An earlier answer's rows for this day (those dated inside its window; unreadable dates kept for silver to
    judge), marked as a fallback with the reason and when they were really fetched. Nothing is made up."""
    first, last = window(day)
    kept = [{**r, "_source": FALLBACK, "_fallback_reason": reason, "_ingested_at": ingested_at, "_batch_id": batch_id}
            for r in answer.to_pylist() if (d := _date(r["data"])) is None or first <= d <= last]
    return pa.Table.from_pylist(kept, schema=BRONZE_SCHEMA)


def _date(text: str | None) -> dt.date | None:
    if text is None or not _DATE.fullmatch(text):
        return None
    try:
        return dt.datetime.strptime(text, "%d/%m/%Y").date()
    except ValueError:
        return None


def _value(text: str | None) -> Decimal | None:
    if text is None or not _NUMBER.fullmatch(text.strip()):
        return None
    value = Decimal(text.strip())
    return value if -value.as_tuple().exponent <= SCALE and value.adjusted() < 20 - SCALE else None


def _problem(row: dict, first: dt.date, last: dt.date) -> str | None:
    if row["series"] not in SERIES:
        return "unknown series"
    if row["data"] is None:
        return "missing date"
    date = _date(row["data"])
    if date is None:
        return "malformed date"
    if not first <= date <= last:
        return "date outside the window asked for"
    if row["valor"] is None or not row["valor"].strip():
        return "missing value"
    if _value(row["valor"]) is None:
        return f"non-numeric value (or more than {SCALE} decimal places)"
    return None


def cleanse_macro(bronze: pa.Table, day: str) -> Cleansed:
    """Silver and quarantine rows of a bronze day (see the module docstring for the rules)."""
    first, last = window(day)
    rows = bronze.to_pylist()
    reasons: dict[int, str] = {}
    for i, row in enumerate(rows):
        if problem := _problem(row, first, last):
            reasons[i] = problem
    by_key: dict[tuple, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        if i not in reasons:
            by_key[(row["series"], _date(row["data"]))].append(i)
    for found in by_key.values():
        values = Counter(_value(rows[i]["valor"]) for i in found)
        for i in found[1:] if len(values) == 1 else found:
            reasons[i] = "duplicate of an earlier row" if len(values) == 1 else "conflicting values for one date"
    clean = [{"series": r["series"], "code": r["code"], "reference_date": _date(r["data"]), "value": _value(r["valor"]),
              **{c: r[c] for c in ("_fetched_at", "_source", "_ingested_at", "_batch_id")}}
             for i, r in enumerate(rows) if i not in reasons]
    quarantine = [{**r, "_reason": reasons[i]} for i, r in enumerate(rows) if i in reasons]
    return Cleansed(clean=pa.Table.from_pylist(sorted(clean, key=lambda r: (r["series"], r["reference_date"])),
                                               schema=SILVER_SCHEMA),
                    quarantine=pa.Table.from_pylist(quarantine, schema=QUARANTINE_SCHEMA), duplicates=0)

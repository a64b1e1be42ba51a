"""The contract of each source table, in one place: columns and types, natural key, day column, PII.

Silver casts to these types; later quality checks compare the live source against them.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class SourceTable:
    name: str
    schema: pa.Schema  # the typed contract
    key: tuple[str, ...]  # natural key: silver keeps one row per key
    day_column: str  # which column places a row in a daily partition
    required: tuple[str, ...]  # never null in silver
    hashed_pii: tuple[str, ...] = ()  # HMAC-SHA256 in silver (joins still work)
    name_pii: tuple[str, ...] = ()  # reduced to initials in silver
    rules: tuple[tuple[str, str], ...] = ()  # (reason, SQL predicate true for a BAD row) on typed columns

    @property
    def columns(self) -> list[str]:
        return self.schema.names


HTTP_STATUS_OK = "http_status BETWEEN 100 AND 599"
SOCIAL_NETWORKS = ("youtube", "instagram", "tiktok", "facebook", "x", "linkedin")
BR_STATES = ("AC", "AL", "AP", "AM", "BA", "CE", "DF", "ES", "GO", "MA", "MT", "MS", "MG", "PA", "PB", "PR",
             "PE", "PI", "RJ", "RN", "RS", "RO", "RR", "SC", "SP", "SE", "TO")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} NOT IN ({', '.join(repr(v) for v in values)})"


INFRA_LOGS = SourceTable(
    name="infra_logs",
    schema=pa.schema([
        ("request_id", pa.string()), ("ts", pa.timestamp("us")), ("server", pa.string()),
        ("region", pa.string()), ("endpoint", pa.string()), ("http_status", pa.int64()),
        ("latency_ms", pa.float64()), ("cpu_pct", pa.float64()),
    ]),
    key=("request_id",),
    day_column="ts",
    required=("request_id", "ts", "server", "http_status", "latency_ms"),
    rules=(
        ("unknown http status", f"NOT ({HTTP_STATUS_OK})"),
        ("negative latency", "latency_ms < 0"),
        ("cpu out of range", "cpu_pct < 0 OR cpu_pct > 100"),
    ),
)

CUSTOMERS = SourceTable(
    name="customers",
    schema=pa.schema([
        ("id", pa.int64()), ("signup_date", pa.date32()), ("name", pa.string()), ("email", pa.string()),
        ("cpf", pa.string()), ("phone", pa.string()), ("city", pa.string()), ("state", pa.string()),
    ]),
    key=("id",),
    day_column="signup_date",
    required=("id", "signup_date", "email"),
    hashed_pii=("email", "cpf", "phone"),
    name_pii=("name",),
    rules=(
        ("malformed email", "NOT regexp_full_match(email, '[^@\\s]+@[^@\\s]+\\.[A-Za-z]{2,}')"),
        ("malformed cpf", "cpf IS NOT NULL AND NOT regexp_full_match(cpf, '\\d{3}\\.\\d{3}\\.\\d{3}-\\d{2}')"),
        ("unknown state", _in("state", BR_STATES)),
    ),
)

SALES = SourceTable(
    name="sales",
    schema=pa.schema([
        ("id", pa.int64()), ("sale_ts", pa.timestamp("us")), ("customer_id", pa.int64()),
        ("category", pa.string()), ("product", pa.string()), ("quantity", pa.int64()),
        ("unit_price", pa.float64()), ("total", pa.float64()),
    ]),
    key=("id",),
    day_column="sale_ts",
    required=("id", "sale_ts", "customer_id", "category", "product", "quantity", "unit_price", "total"),
    rules=(
        ("non-positive quantity", "quantity <= 0"),
        ("negative price", "unit_price < 0"),
        ("total differs from quantity x unit_price", "abs(total - quantity * unit_price) > 0.01"),
    ),
)

VIDEO_EVENTS = SourceTable(
    name="video_events",
    schema=pa.schema([
        ("event_date", pa.date32()), ("video_id", pa.string()), ("social_network", pa.string()),
        ("institution", pa.string()), ("views", pa.int64()), ("likes", pa.int64()), ("shares", pa.int64()),
        ("watch_seconds", pa.float64()),
    ]),
    key=("event_date", "video_id", "social_network"),
    day_column="event_date",
    required=("event_date", "video_id", "social_network", "institution", "views"),
    rules=(
        ("unknown social network", _in("social_network", SOCIAL_NETWORKS)),
        ("negative counts", "views < 0 OR likes < 0 OR shares < 0 OR watch_seconds < 0"),
    ),
)

SOURCE_TABLES: dict[str, SourceTable] = {t.name: t for t in (INFRA_LOGS, CUSTOMERS, SALES, VIDEO_EVENTS)}

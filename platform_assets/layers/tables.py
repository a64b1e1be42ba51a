"""The contract of each source table, in one place: columns and types, natural key, day column, PII.

Silver casts to these types; later quality checks compare the live source against them.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from platform_assets.quality.rules import Rule, at_least, between, matches, measured, one_of


@dataclass(frozen=True)
class SourceTable:
    name: str
    schema: pa.Schema  # the typed contract
    key: tuple[str, ...]  # natural key: silver keeps one row per key
    day_column: str  # which column places a row in a daily partition
    required: tuple[str, ...]  # never null in silver
    hashed_pii: tuple[str, ...] = ()  # HMAC-SHA256 in silver (joins still work)
    name_pii: tuple[str, ...] = ()  # reduced to initials in silver
    rules: tuple[Rule, ...] = ()  # each declared once: quarantine SQL, GX expectation and docs derive from it

    @property
    def columns(self) -> list[str]:
        return self.schema.names


# bronze's lineage columns, after the source's: when and by which run a row was ingested
LINEAGE = (pa.field("_ingested_at", pa.timestamp("us", tz="UTC")), pa.field("_batch_id", pa.string()))
LINEAGE_NAMES = tuple(f.name for f in LINEAGE)
SOCIAL_NETWORKS = ("youtube", "instagram", "tiktok", "facebook", "x", "linkedin")
BR_STATES = ("AC", "AL", "AP", "AM", "BA", "CE", "DF", "ES", "GO", "MA", "MT", "MS", "MG", "PA", "PB", "PR",
             "PE", "PI", "RJ", "RN", "RS", "RO", "RR", "SC", "SP", "SE", "TO")


CATALOGUE = {  # category -> [(product, list price)]
    "electronics": [("smartphone", 1899.0), ("headphones", 249.9), ("laptop", 4599.0), ("charger", 89.9)],
    "books": [("novel", 49.9), ("cookbook", 79.9), ("textbook", 189.0)],
    "home": [("coffee maker", 329.0), ("blender", 199.0), ("bed sheets", 149.9), ("lamp", 99.9)],
    "fashion": [("sneakers", 399.0), ("t-shirt", 59.9), ("jacket", 289.0)],
    "grocery": [("coffee beans", 39.9), ("olive oil", 54.9), ("chocolate", 12.5)],
}


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
        between("http_status", 100, 599, reason="unknown http status"),
        between("latency_ms", 0, reason="negative latency"),
        between("cpu_pct", 0, 100, reason="cpu out of range"),
        between("latency_ms", None, 60_000, reason="a request over a minute", warn=0.999),
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
        matches("email", r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}", reason="malformed email"),
        matches("cpf", r"\d{3}\.\d{3}\.\d{3}-\d{2}", reason="malformed cpf"),
        one_of("state", BR_STATES, reason="unknown state"),
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
        between("quantity", 1, reason="non-positive quantity"),
        between("unit_price", 0, reason="negative price"),
        measured("_total_error", "CASE WHEN quantity >= 1 AND unit_price >= 0 "
                 "THEN abs(total - quantity * unit_price) END", 0.01,
                 reason="total differs from quantity x unit_price"),
        one_of("category", CATALOGUE, reason="unknown category", warn=0.999),
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
        one_of("social_network", SOCIAL_NETWORKS, reason="unknown social network"),
        between("views", 0, reason="negative views"),
        between("likes", 0, reason="negative likes"),
        between("shares", 0, reason="negative shares"),
        between("watch_seconds", 0, reason="negative watch time"),
        at_least("views", "likes", reason="more likes than views", warn=0.99),
    ),
)

SOURCE_TABLES: dict[str, SourceTable] = {t.name: t for t in (INFRA_LOGS, CUSTOMERS, SALES, VIDEO_EVENTS)}

"""Deterministic synthetic operational data: the same (seed, table, day) always gives the same rows.

Vectorised with numpy and pyarrow.compute, so a million rows take about a second. A configurable
share of rows carries one defect each (nulls, negatives, unknown codes, malformed emails) and a
quarter as many exact duplicates are appended, so silver has real work to do.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from platform_assets.layers.tables import BR_STATES, CATALOGUE, SOCIAL_NETWORKS, SOURCE_TABLES

SERVERS = [f"srv-{i:02d}" for i in range(1, 13)]
REGIONS = ["sa-east-1", "us-east-1", "eu-west-1"]
ENDPOINTS = ["/api/orders", "/api/login", "/api/search", "/api/videos", "/api/payments", "/health"]
STATUS_CODES = np.array([200, 201, 204, 301, 304, 400, 401, 404, 429, 500, 502, 503, 504])
STATUS_WEIGHTS = np.array([76, 6, 3, 2, 3, 3, 2, 4, 1, 0.2, 0.1, 0.1, 0.1])
FIRST_NAMES = ["Ana", "Bruno", "Carla", "Diego", "Eduarda", "Felipe", "Gabriela", "Heitor", "Isabela", "João",
               "Larissa", "Marcos", "Natália", "Otávio", "Paula", "Rafael", "Sofia", "Thiago", "Vitória", "Yuri"]
LAST_NAMES = ["Silva", "Santos", "Oliveira", "Souza", "Lima", "Pereira", "Ferreira", "Costa", "Rodrigues",
              "Almeida", "Nascimento", "Carvalho", "Gomes", "Ribeiro", "Martins"]
CITIES = [("São Paulo", "SP"), ("Rio de Janeiro", "RJ"), ("Belo Horizonte", "MG"), ("Porto Alegre", "RS"),
          ("Curitiba", "PR"), ("Salvador", "BA"), ("Recife", "PE"), ("Fortaleza", "CE"), ("Brasília", "DF"),
          ("Manaus", "AM"), ("Florianópolis", "SC"), ("Goiânia", "GO")]
INSTITUTIONS = ["USP", "Unicamp", "UFRJ", "UFMG", "UnB", "Fiocruz", "Embrapa", "INPE", "UFRGS", "UFPE"]
_TABLE_INDEX = {name: i for i, name in enumerate(SOURCE_TABLES)}
_US_PER_DAY = 86_400_000_000
_ROW_ID_SPAN = 100_000_000  # ids of one day: ordinal * span + n, so days never collide

assert set(s for _, s in CITIES) <= set(BR_STATES)


def customers_per_day(rows_per_day: int) -> int:
    return max(rows_per_day // 4, 10)


def generate(table: str, day: str, rows: int, dirty_share: float = 0.02, seed: int = 7) -> pa.Table:
    """Rows of `table` for `day` (YYYY-MM-DD): `rows` generated rows plus the appended duplicates."""
    if table not in SOURCE_TABLES:
        raise ValueError(f"unknown source table {table!r}; known: {', '.join(SOURCE_TABLES)}")
    if rows < 1:
        raise ValueError(f"rows per day must be positive (AEGIS_ROWS_PER_DAY), got {rows}")
    if not 0.0 <= dirty_share <= 0.5:
        raise ValueError(f"dirty share must be within [0, 0.5], got {dirty_share}")
    date = dt.date.fromisoformat(day)
    rng = np.random.default_rng([seed, _TABLE_INDEX[table], date.toordinal()])
    build = {"infra_logs": _infra_logs, "customers": _customers, "sales": _sales, "video_events": _video_events}
    n = customers_per_day(rows) if table == "customers" else rows
    data = build[table](rng, date, n, rows)
    data = _damage(table, data, rng, dirty_share)
    return data.cast(SOURCE_TABLES[table].schema)


def _timestamps(rng: np.random.Generator, date: dt.date, n: int) -> pa.Array:
    start = (date - dt.date(1970, 1, 1)).days * _US_PER_DAY
    return pa.array(np.sort(start + rng.integers(0, _US_PER_DAY, n)), pa.timestamp("us"))


def _ids(date: dt.date, n: int) -> np.ndarray:
    return date.toordinal() * _ROW_ID_SPAN + np.arange(n, dtype=np.int64)


def _pick(rng: np.random.Generator, values: list, n: int, p: np.ndarray | None = None) -> pa.Array:
    return pa.array(np.asarray(values, dtype=object)[rng.choice(len(values), n, p=p)], pa.string())


def _text(*parts) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _digits(values: np.ndarray, width: int) -> pa.Array:
    return pc.utf8_lpad(pc.cast(pa.array(values), pa.string()), width, "0")


def _infra_logs(rng: np.random.Generator, date: dt.date, n: int, _: int) -> pa.Table:
    server_idx = rng.integers(0, len(SERVERS), n)
    # a few servers are unstable: more 5xx and heavier latency tails; the ranking in gold should find them
    instability = np.linspace(0.15, 0.9, len(SERVERS))[rng.permutation(len(SERVERS))][server_idx]
    weights = STATUS_WEIGHTS / STATUS_WEIGHTS.sum()
    status = rng.choice(STATUS_CODES, n, p=weights)
    flaky = rng.random(n) < (instability - 0.15) ** 2 * 0.1
    status = np.where(flaky, rng.choice([500, 502, 503, 504], n), status)
    latency = np.round(rng.lognormal(mean=4.0, sigma=0.35 + instability * 0.6, size=n), 2)
    spikes = rng.random(n) < 0.01
    latency = np.where(spikes, latency * (1 + rng.pareto(1.5, n) * 5), latency)
    return pa.table({
        "request_id": _text(f"req-{date:%Y%m%d}-", _digits(np.arange(n), 8)),
        "ts": _timestamps(rng, date, n),
        "server": pa.array(np.asarray(SERVERS, dtype=object)[server_idx], pa.string()),
        "region": pa.array(np.asarray(REGIONS, dtype=object)[server_idx % len(REGIONS)], pa.string()),
        "endpoint": _pick(rng, ENDPOINTS, n),
        "http_status": pa.array(status, pa.int64()),
        "latency_ms": pa.array(np.round(latency, 2)),
        "cpu_pct": pa.array(np.round(np.clip(rng.beta(2, 5, n) * 100 + instability * 20, 0, 100), 1)),
    })


def _cpf(rng: np.random.Generator, n: int) -> pa.Array:
    """Valid Brazilian CPF numbers (with check digits), formatted ddd.ddd.ddd-dd."""
    d = rng.integers(0, 10, (n, 9))
    r1 = (d * np.arange(10, 1, -1)).sum(axis=1) * 10 % 11 % 10
    d10 = np.column_stack([d, r1])
    r2 = (d10 * np.arange(11, 1, -1)).sum(axis=1) * 10 % 11 % 10
    s = _digits(d10 @ (10 ** np.arange(9, -1, -1)) * 10 + r2, 11)
    cut = [pc.utf8_slice_codeunits(s, a, b) for a, b in ((0, 3), (3, 6), (6, 9), (9, 11))]
    return _text(cut[0], ".", cut[1], ".", cut[2], "-", cut[3])


def _customers(rng: np.random.Generator, date: dt.date, n: int, _: int) -> pa.Table:
    ids = _ids(date, n)
    first = _pick(rng, FIRST_NAMES, n)
    last = _pick(rng, LAST_NAMES, n)
    city_idx = rng.integers(0, len(CITIES), n)
    return pa.table({
        "id": ids,
        "signup_date": pa.array([date] * n, pa.date32()),
        "name": _text(first, " ", last),
        "email": _text(pc.utf8_lower(first), ".", pc.utf8_lower(last), pc.cast(pa.array(ids % 10**7), pa.string()),
                       "@example.com"),
        "cpf": _cpf(rng, n),
        "phone": _text("+55 11 9", _digits(rng.integers(0, 10**4, n), 4), "-", _digits(rng.integers(0, 10**4, n), 4)),
        "city": pa.array(np.asarray([c for c, _ in CITIES], dtype=object)[city_idx], pa.string()),
        "state": pa.array(np.asarray([s for _, s in CITIES], dtype=object)[city_idx], pa.string()),
    })


def _sales(rng: np.random.Generator, date: dt.date, n: int, rows_per_day: int) -> pa.Table:
    products = [(cat, prod, price) for cat, items in CATALOGUE.items() for prod, price in items]
    idx = rng.integers(0, len(products), n)
    list_price = np.array([p for _, _, p in products])[idx]
    unit_price = np.round(list_price * rng.uniform(0.85, 1.1, n), 2)
    quantity = rng.geometric(0.55, n).astype(np.int64)
    customers = customers_per_day(rows_per_day)
    return pa.table({
        "id": _ids(date, n),
        "sale_ts": _timestamps(rng, date, n),
        "customer_id": date.toordinal() * _ROW_ID_SPAN + rng.integers(0, customers, n),
        "category": pa.array(np.asarray([c for c, _, _ in products], dtype=object)[idx], pa.string()),
        "product": pa.array(np.asarray([p for _, p, _ in products], dtype=object)[idx], pa.string()),
        "quantity": quantity,
        "unit_price": unit_price,
        "total": np.round(quantity * unit_price, 2),
    })


def _video_events(rng: np.random.Generator, date: dt.date, n: int, _: int) -> pa.Table:
    i = np.arange(n)
    video = i // len(SOCIAL_NETWORKS)
    views = np.floor(rng.lognormal(6.0, 1.4, n)).astype(np.int64)
    return pa.table({
        "event_date": pa.array([date] * n, pa.date32()),
        "video_id": _text("vid-", _digits(video, 7)),
        "social_network": pa.array(np.asarray(SOCIAL_NETWORKS, dtype=object)[i % len(SOCIAL_NETWORKS)], pa.string()),
        "institution": pa.array(np.asarray(INSTITUTIONS, dtype=object)[video % len(INSTITUTIONS)], pa.string()),
        "views": views,
        "likes": rng.binomial(views, 0.06),
        "shares": rng.binomial(views, 0.01),
        "watch_seconds": np.round(views * rng.uniform(8, 90, n), 1),
    })


# (column, bad value) per table: each damaged row gets one, in turn; None writes a NULL
_DEFECTS: dict[str, list[tuple[str, object]]] = {
    "infra_logs": [("http_status", 999), ("latency_ms", -12.5), ("cpu_pct", 130.0), ("server", None),
                   ("http_status", 0)],
    "customers": [("email", "malformed-email.example.com"), ("state", "XX"), ("email", None), ("cpf", "123")],
    "sales": [("unit_price", -19.9), ("quantity", 0), ("customer_id", None), ("total", 1.0)],
    "video_events": [("social_network", "myspace"), ("views", -5), ("institution", None)],
}


def _damage(table: str, data: pa.Table, rng: np.random.Generator, share: float) -> pa.Table:
    n = data.num_rows
    damaged = int(n * share)
    if damaged == 0:
        return data
    rows = rng.choice(n, damaged, replace=False)
    columns = {name: data.column(name).combine_chunks() for name in data.column_names}
    for k, (column, value) in enumerate(_DEFECTS[table]):
        hit = np.zeros(n, dtype=bool)
        hit[rows[k :: len(_DEFECTS[table])]] = True
        arr = columns[column]
        columns[column] = pc.if_else(pa.array(hit), pa.scalar(value, arr.type), arr)
    damaged_table = pa.table(columns)
    duplicates = damaged_table.take(pa.array(rng.choice(n, max(damaged // 4, 1), replace=False)))
    return pa.concat_tables([damaged_table, duplicates])

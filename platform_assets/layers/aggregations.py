"""Gold logic: aggregations in DuckDB over Arrow tables. Every output has a `day` DATE column.

Sums of integers are cast back to BIGINT: DuckDB widens them to HUGEINT, which travels as a
decimal and lands in PostgreSQL as NUMERIC (read back as text).
"""

from __future__ import annotations

import duckdb
import pyarrow as pa


def _query(sql: str, **tables: pa.Table) -> pa.Table:
    with duckdb.connect() as con:
        for name, table in tables.items():
            con.register(name, table)
        return con.sql(sql).to_arrow_table()


def server_latency_daily(infra_logs: pa.Table) -> pa.Table:
    """Per server and day: latency percentiles, status classes, error rate and an instability rank.

    instability_score = 100 * error_rate + 10 * ln(p99 / p50): a server that fails often or whose
    tail latency runs far from its median ranks first (rank 1 = least stable).
    """
    return _query("""
        WITH per_server AS (
            SELECT CAST(ts AS DATE) AS day, server, any_value(region) AS region,
                   count(*) AS requests,
                   quantile_cont(latency_ms, 0.50) AS p50_latency_ms,
                   quantile_cont(latency_ms, 0.95) AS p95_latency_ms,
                   quantile_cont(latency_ms, 0.99) AS p99_latency_ms,
                   avg(latency_ms) AS mean_latency_ms, max(latency_ms) AS max_latency_ms,
                   count(*) FILTER (WHERE http_status BETWEEN 200 AND 299) AS status_2xx,
                   count(*) FILTER (WHERE http_status BETWEEN 300 AND 399) AS status_3xx,
                   count(*) FILTER (WHERE http_status BETWEEN 400 AND 499) AS status_4xx,
                   count(*) FILTER (WHERE http_status >= 500) AS status_5xx,
                   avg(cpu_pct) AS mean_cpu_pct
            FROM logs GROUP BY ALL
        ), scored AS (
            SELECT *, status_5xx / requests AS error_rate,
                   100 * status_5xx / requests
                     + 10 * ln(greatest(p99_latency_ms, 0.001) / greatest(p50_latency_ms, 0.001))
                     AS instability_score
            FROM per_server
        )
        SELECT *, CAST(rank() OVER (PARTITION BY day ORDER BY instability_score DESC, server) AS BIGINT)
                  AS instability_rank
        FROM scored ORDER BY day, instability_rank
    """, logs=infra_logs)


def sales_by_category_daily(sales: pa.Table) -> pa.Table:
    return _query("""
        SELECT CAST(sale_ts AS DATE) AS day, category, count(*) AS orders, CAST(sum(quantity) AS BIGINT) AS units,
               round(sum(total), 2) AS revenue, round(avg(total), 2) AS avg_ticket
        FROM sales GROUP BY ALL ORDER BY day, revenue DESC
    """, sales=sales)


def video_views_daily(video_events: pa.Table, by: str) -> pa.Table:
    """Views per day and `by` (social_network or institution)."""
    if by not in ("social_network", "institution"):
        raise ValueError(f"cannot group video views by {by!r}")
    return _query(f"""
        SELECT event_date AS day, {by}, count(DISTINCT video_id) AS videos, CAST(sum(views) AS BIGINT) AS views,
               CAST(sum(likes) AS BIGINT) AS likes, CAST(sum(shares) AS BIGINT) AS shares,
               round(sum(watch_seconds) / 3600, 2) AS watch_hours,
               (sum(likes) + sum(shares)) / greatest(sum(views), 1) AS engagement_rate
        FROM events GROUP BY ALL ORDER BY day, views DESC
    """, events=video_events)


def dim_customer(customers: pa.Table) -> pa.Table:
    """Customers as a dimension: masked identity (hashes, initials) and location, keyed by id."""
    return _query("""
        SELECT id AS customer_key, signup_date AS day, name AS initials, email AS email_hash,
               cpf AS cpf_hash, phone AS phone_hash, city, state
        FROM customers ORDER BY customer_key
    """, customers=customers)


PRODUCT_KEY = "md5(category || '|' || product)"


def dim_product(sales: pa.Table) -> pa.Table:
    """Products seen in the sales, keyed by a stable hash of category and product."""
    return _query(f"""
        SELECT DISTINCT {PRODUCT_KEY} AS product_key, category, product
        FROM sales ORDER BY category, product
    """, sales=sales)


def fact_sales(sales: pa.Table) -> pa.Table:
    return _query(f"""
        SELECT CAST(sale_ts AS DATE) AS day, id AS sale_id, sale_ts, customer_id AS customer_key,
               {PRODUCT_KEY} AS product_key, quantity, unit_price, total
        FROM sales ORDER BY sale_id
    """, sales=sales)

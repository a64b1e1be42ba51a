"""Gold logic for sales against inflation and the policy rate: per category, the month's sales so far against
the same days of the previous month, nominally and in real terms (deflated by IPCA), beside the Selic target.

For a day D of month M:
- revenue_mtd / orders_mtd: sales of M's days 1..D; revenue_prev_period: sales of M-1's days 1..day-of-month(D)
  (the whole of M-1 when it is shorter) — like for like, never a partial month against a full one;
- nominal_growth = revenue_mtd / revenue_prev_period - 1 (NULL without sales in the previous period);
- ipca_pct: IPCA of month M (the price change from M-1 to M); IPCA is published weeks after the month ends, so
  until then the newest published month before M is used, and `ipca_month` always says which month it is;
- real_growth = (1 + nominal_growth) / (1 + ipca_pct / 100) - 1;
- selic_target_pct: the Selic target in force on D (its newest observation up to D, dated `selic_date`).
Missing macro data stays NULL (the gold suite fails it); nothing is filled in.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import pyarrow as pa

IPCA, SELIC = "ipca_monthly_pct", "selic_target_pct"


def periods(day: str) -> tuple[dt.date, dt.date, dt.date, dt.date]:
    """(first of M, D, first of M-1, the last day of M-1's like-for-like period)."""
    end = dt.date.fromisoformat(day)
    month = end.replace(day=1)
    previous_last_day = month - dt.timedelta(days=1)
    previous = previous_last_day.replace(day=1)
    return month, end, previous, min(previous.replace(day=min(end.day, previous_last_day.day)), previous_last_day)


def sales_vs_inflation(sales_daily: pa.Table, macro: pa.Table, day: str) -> pa.Table:
    """`sales_daily`: gold/sales_by_category_daily rows (day, category, orders, revenue) covering at least the
    previous month's first day to `day`; `macro`: silver/macro_indicators rows (series, reference_date, value)."""
    month, end, previous, previous_end = periods(day)
    with duckdb.connect() as con:
        con.register("sales", sales_daily)
        con.register("macro", macro)
        return con.sql("""
            WITH this AS (
                SELECT category, sum(revenue) AS revenue, CAST(sum(orders) AS BIGINT) AS orders,
                       CAST(count(DISTINCT day) AS BIGINT) AS days
                FROM sales WHERE day BETWEEN $month AND $end GROUP BY category
            ), prev AS (
                SELECT category, sum(revenue) AS revenue FROM sales
                WHERE day BETWEEN $previous AND $previous_end GROUP BY category
            ), ipca AS (
                SELECT reference_date AS date, value FROM macro WHERE series = $ipca AND reference_date <= $month
                ORDER BY reference_date DESC LIMIT 1
            ), selic AS (
                SELECT reference_date AS date, value FROM macro WHERE series = $selic AND reference_date <= $end
                ORDER BY reference_date DESC LIMIT 1
            ), joined AS (
                SELECT category, coalesce(this.revenue, 0) AS revenue_mtd, coalesce(this.orders, 0) AS orders_mtd,
                       coalesce(this.days, 0) AS days_with_sales, coalesce(prev.revenue, 0) AS revenue_prev_period,
                       CASE WHEN prev.revenue > 0 THEN coalesce(this.revenue, 0) / prev.revenue - 1 END AS nominal
                FROM this FULL JOIN prev USING (category)
            )
            SELECT CAST($end AS DATE) AS day, CAST($month AS DATE) AS month, category,
                   round(revenue_mtd, 2) AS revenue_mtd, orders_mtd, days_with_sales,
                   round(revenue_prev_period, 2) AS revenue_prev_period, round(nominal, 6) AS nominal_growth,
                   ipca.date AS ipca_month, ipca.value AS ipca_pct,
                   round((1 + nominal) / (1 + CAST(ipca.value AS DOUBLE) / 100) - 1, 6) AS real_growth,
                   selic.date AS selic_date, selic.value AS selic_target_pct
            FROM joined LEFT JOIN ipca ON true LEFT JOIN selic ON true
            ORDER BY revenue_mtd DESC, category
        """, params={"month": month, "end": end, "previous": previous, "previous_end": previous_end,
              "ipca": IPCA, "selic": SELIC}).to_arrow_table()

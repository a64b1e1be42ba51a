"""gold/<table>: aggregates and the star schema, computed in DuckDB from the day's silver tables."""


from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import dagster as dg
import pyarrow as pa

from platform_assets.layers import aggregations as agg
from platform_assets.layers.inflation import sales_vs_inflation
from platform_assets.layers.lake_writes import lake_metadata, retried_on_conflict
from platform_assets.layers.metadata import stopwatch, table_metadata
from platform_assets.layers.partitions import daily, daily_freshness
from platform_assets.layers.tables import BR_STATES, CATALOGUE, SOCIAL_NETWORKS
from platform_assets.quality import expectations as ex
from platform_assets.quality import gates
from platform_assets.quality.automation import downstream_condition
from platform_assets.quality.rules import WARN, Expect
from resources import Lake
from resources.lake.settings import writer_pool


@dataclass(frozen=True)
class Totals:
    """What must add up: `gold_sql` over the gold day equals `silver_sql` over the silver day of `silver_table`."""

    gold_sql: str
    silver_table: str
    silver_sql: str


@dataclass(frozen=True)
class GoldTable:
    """A gold table, declared once: its inputs, how it is built, what it must satisfy and what must add up."""

    name: str
    inputs: tuple[str, ...]  # silver tables, passed to `build` in this order
    build: Callable[..., pa.Table]
    description: str
    suite: tuple[Expect, ...]  # its Great Expectations suite (strict)
    totals: Totals | None  # None: reconciled by a check of its own (sales_vs_inflation, macro_quality.py)
    key: tuple[str, ...] = ()  # set for dimensions served by key (upsert) rather than by day


_RATE = (ex.expect_between("views", 0), ex.expect_between("engagement_rate", 0, 1))
GOLD_TABLES = (
    GoldTable("server_latency_daily", ("infra_logs",), agg.server_latency_daily,
              "Per server and day: p50/p95/p99 latency, status classes, error rate, instability rank.",
              (ex.expect_unique(("day", "server")), ex.expect_not_null("server"), ex.expect_between("requests", 1),
               ex.expect_ordered("p50_latency_ms", "p95_latency_ms"),
               ex.expect_ordered("p95_latency_ms", "p99_latency_ms"), ex.expect_between("error_rate", 0, 1),
               ex.expect_between("instability_rank", 1), ex.expect_between("mean_cpu_pct", 0, 100)),
              Totals("sum(requests)", "infra_logs", "count(*)")),
    GoldTable("sales_by_category_daily", ("sales",), agg.sales_by_category_daily,
              "Orders, units, revenue and average ticket per category and day.",
              (ex.expect_unique(("day", "category")), ex.expect_in_set("category", CATALOGUE),
               ex.expect_between("orders", 1), ex.expect_between("revenue", 0), ex.expect_between("units", 1)),
              Totals("sum(revenue)", "sales", "sum(total)")),
    GoldTable("video_views_by_network_daily", ("video_events",), partial(agg.video_views_daily, by="social_network"),
              "Video views, likes, shares and watch hours per social network and day.",
              (ex.expect_unique(("day", "social_network")), ex.expect_in_set("social_network", SOCIAL_NETWORKS),
               *_RATE),
              Totals("sum(views)", "video_events", "sum(views)")),
    GoldTable("video_views_by_institution_daily", ("video_events",),
              partial(agg.video_views_daily, by="institution"),
              "Video views, likes, shares and watch hours per institution and day.",
              (ex.expect_unique(("day", "institution")), ex.expect_not_null("institution"), *_RATE),
              Totals("sum(views)", "video_events", "sum(views)")),
    GoldTable("dim_customer", ("customers",), agg.dim_customer,
              "Star schema: customers (masked) by signup day.",
              (ex.expect_unique(("customer_key",)), ex.expect_in_set("state", BR_STATES),
               Expect("ExpectColumnValuesToMatchRegex", {"column": "email_hash", "regex": r"^[0-9a-f]{64}$"}),
               Expect("ExpectColumnValuesToMatchRegex", {"column": "initials", "regex": r"^(?:[A-ZÀ-Ý]\. ?)+$"},
                      WARN)),
              Totals("count(*)", "customers", "count(*)")),
    GoldTable("dim_product", ("sales",), agg.dim_product,
              "Star schema: products, keyed by a stable hash of category and product.",
              (ex.expect_unique(("product_key",)), ex.expect_in_set("category", CATALOGUE),
               ex.expect_not_null("product")),
              Totals("count(*)", "sales", "count(DISTINCT (category, product))"), key=("product_key",)),
    GoldTable("fact_sales", ("sales",), agg.fact_sales,
              "Star schema: one row per sale, with customer and product keys.",
              (ex.expect_unique(("sale_id",)), ex.expect_not_null("customer_key"), ex.expect_not_null("product_key"),
               ex.expect_between("quantity", 1), ex.expect_between("total", 0)),
              Totals("sum(total)", "sales", "sum(total)")),
)


# built from several days and the macro series by its own asset (macro.py); served and checked like the others
SALES_VS_INFLATION = GoldTable(
    "sales_vs_inflation", (), sales_vs_inflation,
    "Per category, the month's sales so far against the same days of the previous month, nominal and real "
    "(deflated by IPCA, series 433), beside the Selic target (432) in force (see platform_assets/inflation.py).",
    (ex.expect_unique(("category",)), ex.expect_in_set("category", CATALOGUE), ex.expect_between("revenue_mtd", 0),
     ex.expect_between("revenue_prev_period", 0), ex.expect_not_null("ipca_pct"),
     ex.expect_not_null("selic_target_pct")),
    None)
SERVED_TABLES = (*GOLD_TABLES, SALES_VS_INFLATION)


def _gold_asset(spec: GoldTable) -> dg.AssetsDefinition:
    @dg.asset(
        key=["gold", spec.name],
        deps=[dg.AssetKey(["silver", t]) for t in spec.inputs],
        group_name="gold",
        partitions_def=daily,
        kinds={"duckdb", "delta"},
        automation_condition=downstream_condition,
        pool=writer_pool("gold", spec.name),
        freshness_policy=daily_freshness,
        description=f"Gold: {spec.description}",
    )
    def _asset(context: dg.AssetExecutionContext, lake: Lake) -> dg.MaterializeResult:
        day = context.partition_key
        gates.enforce(context)
        with stopwatch() as clock, retried_on_conflict(context):
            inputs = [lake.read_partition("silver", t, day) for t in spec.inputs]
            result = spec.build(*inputs)
            stats = lake.write_partition("gold", spec.name, day, result, result.schema, run_id=context.run_id)
        return dg.MaterializeResult(metadata=table_metadata(
            result, seconds=clock["seconds"], bytes_=stats.bytes, path=stats.path,
            silver_rows=dg.MetadataValue.int(sum(t.num_rows for t in inputs)),
            **lake_metadata(lake, "gold", spec.name, day, stats),
        ))

    return _asset


assets = [_gold_asset(spec) for spec in GOLD_TABLES]

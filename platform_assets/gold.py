"""gold/<table>: aggregates and the star schema, computed in DuckDB from the day's silver tables."""


from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import dagster as dg
import pyarrow as pa

from platform_assets import aggregations as agg
from platform_assets import gates
from platform_assets.automation import downstream_condition
from platform_assets.lake_writes import lake_metadata, retried_on_conflict
from platform_assets.metadata import stopwatch, table_metadata
from platform_assets.partitions import daily, daily_freshness
from resources import Lake
from resources.lake_settings import writer_pool


@dataclass(frozen=True)
class GoldTable:
    name: str
    inputs: tuple[str, ...]  # silver tables, passed to `build` in this order
    build: Callable[..., pa.Table]
    description: str
    key: tuple[str, ...] = ()  # set for dimensions served by key (upsert) rather than by day


GOLD_TABLES = (
    GoldTable("server_latency_daily", ("infra_logs",), agg.server_latency_daily,
              "Per server and day: p50/p95/p99 latency, status classes, error rate, instability rank."),
    GoldTable("sales_by_category_daily", ("sales",), agg.sales_by_category_daily,
              "Orders, units, revenue and average ticket per category and day."),
    GoldTable("video_views_by_network_daily", ("video_events",), partial(agg.video_views_daily, by="social_network"),
              "Video views, likes, shares and watch hours per social network and day."),
    GoldTable("video_views_by_institution_daily", ("video_events",),
              partial(agg.video_views_daily, by="institution"),
              "Video views, likes, shares and watch hours per institution and day."),
    GoldTable("dim_customer", ("customers",), agg.dim_customer,
              "Star schema: customers (masked) by signup day."),
    GoldTable("dim_product", ("sales",), agg.dim_product,
              "Star schema: products, keyed by a stable hash of category and product.", key=("product_key",)),
    GoldTable("fact_sales", ("sales",), agg.fact_sales,
              "Star schema: one row per sale, with customer and product keys."),
)


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

"""serving/<table>: gold published to the warehouse, idempotently per partition (or per key for dims)."""


import dagster as dg

from platform_assets.layers.gold import SERVED_TABLES, GoldTable
from platform_assets.layers.metadata import stopwatch, table_metadata
from platform_assets.layers.partitions import daily, daily_freshness
from platform_assets.quality import gates
from platform_assets.quality.automation import downstream_condition
from resources import Lake, Warehouse

DAY_COLUMN = "day"


def _serving_asset(spec: GoldTable) -> dg.AssetsDefinition:
    @dg.asset(
        key=["serving", spec.name],
        deps=[dg.AssetKey(["gold", spec.name])],
        group_name="serving",
        partitions_def=daily,
        kinds={"duckdb", "postgres"},
        pool="warehouse",
        automation_condition=downstream_condition,
        freshness_policy=daily_freshness,
        description=f"Serving: gold/{spec.name} published to the warehouse table serving.{spec.name} "
        + (f"(upsert by {', '.join(spec.key)})." if spec.key else "(the day's rows replaced in one transaction)."),
    )
    def _asset(context: dg.AssetExecutionContext, lake: Lake, warehouse: Warehouse) -> dg.MaterializeResult:
        day = context.partition_key
        gates.enforce(context)
        with stopwatch() as clock:
            data = lake.read_partition("gold", spec.name, day)
            if spec.key:
                warehouse.upsert(spec.name, data, spec.key)
            else:
                warehouse.publish_partition(spec.name, data, DAY_COLUMN, day)
        return dg.MaterializeResult(metadata=table_metadata(
            data, seconds=clock["seconds"], bytes_=data.nbytes,
            warehouse_table=dg.MetadataValue.text(f"{warehouse.schema_name}.{spec.name}"),
            warehouse=dg.MetadataValue.text(warehouse.kind),
        ))

    return _asset


assets = [_serving_asset(spec) for spec in SERVED_TABLES]

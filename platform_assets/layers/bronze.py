"""bronze/<table>: the day's rows exactly as the source holds them, plus when and by which run."""


import datetime as dt
from collections.abc import Iterator

import dagster as dg
import pyarrow as pa

from platform_assets.layers.lake_writes import lake_metadata, retried_on_conflict
from platform_assets.layers.metadata import stopwatch, table_metadata
from platform_assets.layers.partitions import daily
from platform_assets.layers.tables import LINEAGE, SOURCE_TABLES, SourceTable
from platform_assets.quality.automation import ingest_condition
from resources import Lake, SourceDatabase
from resources.lake.settings import writer_pool

INGESTED_AT, BATCH_ID = LINEAGE


def lineage_schema(source: pa.Schema) -> pa.Schema:
    """The source columns (their field metadata dropped) followed by the lineage columns."""
    return pa.schema([pa.field(f.name, f.type) for f in source] + list(LINEAGE))


def with_lineage(reader: pa.RecordBatchReader, schema: pa.Schema, batch_id: str,
                 ingested_at: dt.datetime, seen: list[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Append `_ingested_at` and `_batch_id` to each streamed batch; the first one is kept in `seen`."""
    for batch in reader:
        n = batch.num_rows
        out = pa.RecordBatch.from_arrays(
            [*batch.columns, pa.array([ingested_at] * n, INGESTED_AT.type), pa.array([batch_id] * n)],
            schema=schema,
        )
        if not seen and n:
            seen.append(out.slice(0, 5))
        yield out


def _bronze_asset(contract: SourceTable) -> dg.AssetsDefinition:
    @dg.asset(
        key=["bronze", contract.name],
        deps=[dg.AssetKey(["source", contract.name])],
        group_name="bronze",
        partitions_def=daily,
        kinds={"delta"},
        automation_condition=ingest_condition,
        pool=writer_pool("bronze", contract.name),
        description=f"Bronze: the day's {contract.name} rows exactly as the source holds them, plus when and by "
        f"which run they were ingested; the Delta table bronze/{contract.name} in the lake, partitioned by date.",
    )
    def _asset(context: dg.AssetExecutionContext, source_db: SourceDatabase, lake: Lake) -> dg.MaterializeResult:
        day = context.partition_key
        seen: list[pa.RecordBatch] = []
        with (stopwatch() as clock, retried_on_conflict(context),
              source_db.read_day(contract.name, contract.day_column, day) as reader):
            schema = lineage_schema(reader.schema)
            batches = with_lineage(reader, schema, context.run_id, dt.datetime.now(dt.UTC), seen)
            stats = lake.write_partition("bronze", contract.name, day, batches, schema, run_id=context.run_id)
        context.log.info(f"bronze/{contract.name} {day}: {stats.rows} rows, {stats.bytes} bytes -> {stats.path}")
        preview = pa.Table.from_batches(seen, schema=schema)
        metadata = table_metadata(preview, seconds=clock["seconds"], bytes_=stats.bytes, path=stats.path)
        metadata["dagster/row_count"] = dg.MetadataValue.int(stats.rows)
        metadata.update(lake_metadata(lake, "bronze", contract.name, day, stats))
        return dg.MaterializeResult(metadata=metadata)

    return _asset


assets = [_bronze_asset(contract) for contract in SOURCE_TABLES.values()]

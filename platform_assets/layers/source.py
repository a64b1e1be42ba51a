"""source/<table>: the synthetic operational systems writing one day of rows into the source database."""


import dagster as dg

from platform_assets.layers.generators import generate
from platform_assets.layers.metadata import stopwatch, table_metadata
from platform_assets.layers.partitions import daily
from platform_assets.layers.tables import SOURCE_TABLES, SourceTable
from platform_assets.quality.automation import source_condition
from resources import SourceDatabase, SyntheticVolume


def _source_asset(contract: SourceTable) -> dg.AssetsDefinition:
    @dg.asset(
        key=["source", contract.name],
        group_name="source",
        partitions_def=daily,
        kinds={"python"},
        automation_condition=source_condition,
        description=f"Source: the day's synthetic {contract.name} rows, written into the source database "
        "(re-running a day replaces its rows, never duplicates them).",
    )
    def _asset(context: dg.AssetExecutionContext, source_db: SourceDatabase,
               volume: SyntheticVolume) -> dg.MaterializeResult:
        day = context.partition_key
        with stopwatch() as clock:
            data = generate(contract.name, day, volume.rows_per_day, volume.dirty_share, volume.seed)
            source_db.replace_day(contract.name, contract.day_column, day, data)
        context.log.info(f"wrote {data.num_rows} {contract.name} rows for {day} to {source_db.display_url}")
        return dg.MaterializeResult(metadata=table_metadata(
            data, seconds=clock["seconds"], bytes_=data.nbytes, database=source_db.display_url,
        ))

    return _asset


assets = [_source_asset(contract) for contract in SOURCE_TABLES.values()]

"""silver/<table> and silver/quarantine/<table>: typed, deduplicated, PII-masked rows and the rejects."""


import dagster as dg

from platform_assets.layers.cleansing import cleanse
from platform_assets.layers.lake_writes import lake_metadata, retried_on_conflict
from platform_assets.layers.metadata import stopwatch, table_metadata
from platform_assets.layers.partitions import daily
from platform_assets.layers.tables import SOURCE_TABLES, SourceTable
from platform_assets.quality import gates
from platform_assets.quality.automation import downstream_condition
from platform_assets.quality.rules import rules_table
from resources import Lake, PiiMasker
from resources.lake.settings import writer_pool


def _silver_assets(contract: SourceTable) -> dg.AssetsDefinition:
    name = contract.name
    clean_key, quarantine_key = dg.AssetKey(["silver", name]), dg.AssetKey(["silver", f"{name}_quarantine"])
    bronze_key = dg.AssetKey(["bronze", name])

    @dg.multi_asset(
        name=f"silver_{name}",
        partitions_def=daily,
        pool=writer_pool("silver", name),
        specs=[
            dg.AssetSpec(clean_key, deps=[bronze_key], group_name="silver", kinds={"delta"},
                         automation_condition=downstream_condition,
                         description=f"Silver: {name} typed to its contract, one row per key, PII masked.\n\n"
                         f"Rules of the contract (platform_assets/tables.py):\n\n{rules_table(contract.rules)}"),
            dg.AssetSpec(quarantine_key, deps=[bronze_key], group_name="silver", kinds={"delta"},
                         automation_condition=downstream_condition,
                         description=f"Quarantine: the {name} rows that break the contract, each with its "
                         "reason (PII masked); in the lake at silver/quarantine."),
        ],
    )
    def _asset(context: dg.AssetExecutionContext, lake: Lake, masker: PiiMasker):
        day = context.partition_key
        gates.enforce(context)
        with stopwatch() as clock, retried_on_conflict(context):
            bronze = lake.read_partition("bronze", name, day)
            result = cleanse(contract, bronze)
            clean = masker.mask(result.clean, contract.hashed_pii, contract.name_pii)
            quarantine = masker.mask(result.quarantine, contract.hashed_pii, contract.name_pii)
            clean_stats = lake.write_partition("silver", name, day, clean, clean.schema, run_id=context.run_id,
                                               facts={"duplicates_removed": result.duplicates,
                                                      "bronze_rows": bronze.num_rows})
            quarantine_stats = lake.write_partition("silver/quarantine", name, day, quarantine, quarantine.schema,
                                                    run_id=context.run_id)
        reasons = result.reasons()
        context.log.info(
            f"silver/{name} {day}: bronze {bronze.num_rows} = silver {clean.num_rows} "
            f"+ duplicates {result.duplicates} + quarantined {quarantine.num_rows}"
        )
        reconciliation = {
            "bronze_rows": dg.MetadataValue.int(bronze.num_rows),
            "duplicates_removed": dg.MetadataValue.int(result.duplicates),
            "quarantined": dg.MetadataValue.int(quarantine.num_rows),
        }
        yield dg.MaterializeResult(asset_key=clean_key, metadata=table_metadata(
            clean, seconds=clock["seconds"], bytes_=clean_stats.bytes, path=clean_stats.path, **reconciliation,
            **lake_metadata(lake, "silver", name, day, clean_stats)))
        yield dg.MaterializeResult(asset_key=quarantine_key, metadata=table_metadata(
            quarantine, seconds=clock["seconds"], bytes_=quarantine_stats.bytes, path=quarantine_stats.path,
            reasons=dg.MetadataValue.json(reasons), **lake_metadata(lake, "silver/quarantine", name, day,
                                                                   quarantine_stats)))

    return _asset


assets = [_silver_assets(contract) for contract in SOURCE_TABLES.values()]

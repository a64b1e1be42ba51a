"""lake_restore: put a lake table, or one day of it, back as it was at an earlier version or time.

Launch the `lake_restore` job with `table` (e.g. gold/fact_sales) and optionally `date`, `version` or `as_of`:
- with `date`, that day is rewritten from the chosen version in one new commit (the rest of the table is
  untouched); without `version`/`as_of` the day's previous version is used;
- without `date`, the whole table is restored with Delta RESTORE (to `version`, or the one before the newest).
Versions, with rows per day, are listed in each layer asset's metadata. A version older than the time-travel
retention (AEGIS_LAKE_RETENTION_HOURS) is refused: vacuum may have removed its files. Nothing is lost either
way: the replaced version stays in history.
"""


import datetime as dt

import dagster as dg

from platform_assets.lake.catalogue import lake_table
from platform_assets.layers.lake_writes import lake_metadata
from resources import Lake
from resources.execution import restore_executor
from resources.lake.delta_tables import HISTORY_DEPTH, TimeTravelError, open_table, version_at


class LakeRestoreConfig(dg.Config):
    table: str  # <layer>/<table>: bronze/sales, silver/sales, silver/quarantine/sales, gold/fact_sales, …
    date: str | None = None  # one day (YYYY-MM-DD); the whole table when omitted
    version: int | None = None  # the Delta version to go back to
    as_of: str | None = None  # or the newest version at this time (ISO 8601, UTC when no offset)


def _chosen_version(lake: Lake, config: LakeRestoreConfig) -> int:
    target = lake_table(config.table)
    if config.version is not None and config.as_of:
        raise ValueError("give version or as_of, not both")
    if config.version is not None:
        return config.version
    if config.as_of:
        when = dt.datetime.fromisoformat(config.as_of)
        return version_at(lake.location(target.layer, target.name),
                          when if when.tzinfo else when.replace(tzinfo=dt.UTC))
    if config.date:
        versions = lake.versions(target.layer, target.name, config.date, limit=2, depth=HISTORY_DEPTH)
        if len(versions) < 2:
            raise TimeTravelError(f"{config.table} date={config.date}: no earlier version of this day to go back to "
                                  f"({len(versions)} version(s) wrote it)")
        return versions[1].version
    table = open_table(lake.location(target.layer, target.name))
    if table is None or table.version() == 0:
        raise TimeTravelError(f"{config.table}: no earlier version to go back to")
    return table.version() - 1


@dg.op(out={}, description="Restore a lake table or one day of it to an earlier Delta version or time.")
def restore_lake_table(context: dg.OpExecutionContext, config: LakeRestoreConfig, lake: Lake):
    target = lake_table(config.table)
    version = _chosen_version(lake, config)
    if config.date:
        stats = lake.restore_partition(target.layer, target.name, config.date, version, run_id=context.run_id)
        context.log.info(f"{target.label} date={config.date}: restored version {version} ({stats.rows} rows) as "
                         f"version {stats.version}")
        yield dg.AssetMaterialization(asset_key=target.key, partition=config.date, metadata={
            "restored_from_version": dg.MetadataValue.int(version), "dagster/row_count": stats.rows,
            **lake_metadata(lake, target.layer, target.name, config.date, stats)})
    else:
        metrics = lake.restore_table(target.layer, target.name, version)
        context.log.info(f"{target.label}: restored to version {version}: {metrics}")
        yield dg.AssetObservation(asset_key=target.key, metadata={
            "restored_from_version": dg.MetadataValue.int(version),
            "restore": dg.MetadataValue.json({k: v for k, v in metrics.items() if isinstance(v, int | str)})})


@dg.job(name="lake_restore", executor_def=restore_executor(),
        description="Restore a lake table (or one day of it) to an earlier Delta version or time; see the "
        "versions metadata of the bronze/silver/gold assets. Config: table, date, version | as_of.")
def lake_restore_job():
    restore_lake_table()

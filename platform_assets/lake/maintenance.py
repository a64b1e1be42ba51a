"""lake/compaction and lake/vacuum: the upkeep of every Delta table of the lake, on a schedule (03:00 UTC).

Compaction rewrites each day's small files (twice-daily ingests and re-runs leave several) into fewer; the
rows are unchanged and it is a new version, so time travel still reaches every version before it. Vacuum
then deletes the files no version within the retention needs — never with a retention below the lake's
time-travel promise (AEGIS_LAKE_RETENTION_HOURS), so every version the `lake_restore` job may be asked for
keeps its files. Both report files and bytes before and after, per table.
"""


import dagster as dg

from platform_assets.lake.catalogue import LAKE_TABLES
from platform_assets.layers.metadata import stopwatch
from resources import Lake
from resources.lake.delta_maintenance import StoredFiles
from resources.lake.lake import LakeWriteConflict

COLUMNS = [("table", "string"), ("files before", "int"), ("files after", "int"), ("bytes before", "int"),
           ("bytes after", "int")]


class VacuumConfig(dg.Config):
    retention_hours: int | None = None  # default: the lake's time-travel promise; never below it


def _report(rows: list[tuple[str, StoredFiles, StoredFiles]], seconds: float, **extra) -> dict:
    records = [dg.TableRecord({"table": label, "files before": before.files, "files after": after.files,
                               "bytes before": before.bytes, "bytes after": after.bytes})
               for label, before, after in rows]
    return {
        "tables": dg.MetadataValue.table(records, schema=dg.TableSchema(
            columns=[dg.TableColumn(name, kind) for name, kind in COLUMNS])),
        "files_before": dg.MetadataValue.int(sum(b.files for _, b, _ in rows)),
        "files_after": dg.MetadataValue.int(sum(a.files for _, _, a in rows)),
        "bytes_before": dg.MetadataValue.int(sum(b.bytes for _, b, _ in rows)),
        "bytes_after": dg.MetadataValue.int(sum(a.bytes for _, _, a in rows)),
        "seconds": dg.MetadataValue.float(seconds), **extra,
    }


@dg.asset(key=["lake", "compaction"], group_name="lake_maintenance", kinds={"delta"},
          description="Lake maintenance: compacts the small files of every lake table into fewer (the files the "
          "newest version reads, before and after; rows unchanged).")
def compaction(context: dg.AssetExecutionContext, lake: Lake) -> dg.MaterializeResult:
    rows = []
    with stopwatch() as clock:
        for table in LAKE_TABLES:
            before = lake.referenced(table.layer, table.name)
            if before.files:
                try:
                    lake.compact(table.layer, table.name)
                except LakeWriteConflict as conflict:  # a run wrote the table meanwhile: its turn next time
                    context.log.warning(str(conflict))
            rows.append((table.label, before, lake.referenced(table.layer, table.name)))
    context.log.info(f"compaction: {sum(b.files for _, b, _ in rows)} -> {sum(a.files for _, _, a in rows)} files")
    return dg.MaterializeResult(metadata=_report(rows, clock["seconds"]))


@dg.asset(key=["lake", "vacuum"], deps=[compaction], group_name="lake_maintenance", kinds={"delta"},
          description="Lake maintenance: deletes the files no version within the time-travel retention needs "
          "(every file stored under each table, before and after).")
def vacuum(context: dg.AssetExecutionContext, config: VacuumConfig, lake: Lake) -> dg.MaterializeResult:
    retention = lake.retention_hours if config.retention_hours is None else config.retention_hours
    rows, removed = [], 0
    with stopwatch() as clock:
        for table in LAKE_TABLES:
            before = lake.stored(table.layer, table.name)
            if before.files:
                removed += len(lake.vacuum(table.layer, table.name, retention))
            rows.append((table.label, before, lake.stored(table.layer, table.name)))
    context.log.info(f"vacuum (retention {retention} h): {removed} file(s) deleted")
    return dg.MaterializeResult(metadata=_report(rows, clock["seconds"], files_deleted=dg.MetadataValue.int(removed),
                                                 retention_hours=dg.MetadataValue.int(retention)))


assets = [compaction, vacuum]
maintenance_job = dg.define_asset_job("lake_maintenance_job", selection=dg.AssetSelection.groups("lake_maintenance"),
                                      description="Compaction, then vacuum, of every lake table.")
maintenance_schedule = dg.ScheduleDefinition(
    name="lake_maintenance_0300", job=maintenance_job, cron_schedule="0 3 * * *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Compacts small files, then vacuums what no version within the retention needs.")

"""checkpoints/<table>: a verified backup of each source table, every hour (RPO < 1 h)."""

import datetime as dt

import dagster as dg

from platform_assets.metadata import stopwatch
from platform_assets.tables import SOURCE_TABLES
from resources import CheckpointStore, SourceDatabase


class CheckpointConfig(dg.Config):
    keep_last: int = 48  # retention: always keep this many newest checkpoints …
    keep_days: int = 7  # … and every checkpoint younger than this
    collect_garbage: bool = False  # delete directories of crashed writes (older than an hour); else only report


def _checkpoint_asset(table: str) -> dg.AssetsDefinition:
    key = dg.AssetKey(["checkpoints", table])

    @dg.asset(
        key=key,
        deps=[dg.AssetKey(["source", table])],
        group_name="checkpoints",
        kinds={"parquet"},
        description=f"A point-in-time copy of the whole `{table}` table: checksummed Parquet and a sealed "
        "manifest, optionally encrypted. Verified in full by the blocking check below.",
    )
    def _asset(context: dg.AssetExecutionContext, config: CheckpointConfig, source_db: SourceDatabase,
               checkpoints: CheckpointStore) -> dg.MaterializeResult:
        with stopwatch() as clock:
            manifest = checkpoints.write(source_db, table)
        expired = checkpoints.apply_retention(table, config.keep_last, dt.timedelta(days=config.keep_days),
                                              dry_run=False)
        orphans = checkpoints.collect_garbage(table, dry_run=not config.collect_garbage)
        if orphans:
            context.log.warning(f"{len(orphans)} unfinished checkpoint(s) of {table} left by crashed writes"
                                + (" were deleted" if config.collect_garbage else ": run with collect_garbage"))
        context.log.info(f"checkpoint {manifest['id']} of {table}: {manifest['rows']} rows")
        return dg.MaterializeResult(metadata={
            "checkpoint_id": dg.MetadataValue.text(manifest["id"]),
            "dagster/row_count": dg.MetadataValue.int(manifest["rows"]),
            "bytes": dg.MetadataValue.int(sum(f["bytes"] for f in manifest["files"])),
            "files": dg.MetadataValue.int(len(manifest["files"])),
            "seconds": dg.MetadataValue.float(clock["seconds"]),
            "fingerprint": dg.MetadataValue.text(manifest["fingerprint"]["value"]),
            "codec": dg.MetadataValue.text(manifest["codec"]),
            "encryption": dg.MetadataValue.text(
                f"{manifest['encryption']['algorithm']} key {manifest['encryption']['key_id']}"
                if manifest["encryption"] else "none"),
            "dagster/column_schema": dg.TableSchema(
                columns=[dg.TableColumn(c["name"], c["type"]) for c in manifest["columns"]]),
            "expired_by_retention": dg.MetadataValue.int(len(expired)),
            "orphans": dg.MetadataValue.int(len(orphans)),
        })

    @dg.asset_check(asset=key, name="checkpoint_verified", blocking=True,
                    description="Full verification of the checkpoint just written: manifest seal, "
                    "sha256 of every file and Parquet row counts.")
    def _verified(context: dg.AssetCheckExecutionContext, checkpoints: CheckpointStore) -> dg.AssetCheckResult:
        event = context.instance.get_latest_materialization_event(key)
        checkpoint_id = event.asset_materialization.metadata["checkpoint_id"].value
        result = checkpoints.verify(table, checkpoint_id, "full")
        return dg.AssetCheckResult(
            passed=result.ok,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"checkpoint_id": checkpoint_id, "level": result.level, "seconds": result.seconds,
                      "problems": dg.MetadataValue.json(result.problems)},
        )

    return [_asset, _verified]


_built = [_checkpoint_asset(table) for table in SOURCE_TABLES]
assets = [asset for asset, _ in _built]
checks = [check for _, check in _built]

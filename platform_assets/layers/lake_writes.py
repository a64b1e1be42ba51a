"""What every lake-writing asset shares: its Delta versions in metadata, and a retry when another run
committed the same partition first (a partition overwrite is idempotent, so the step simply runs again)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from resources import Lake
from resources import gate_verdicts as verdicts
from resources.lake.lake import LakeWriteConflict, WriteStats

CONFLICT_RETRIES = 3
VERSIONS_SHOWN = 8


def lake_metadata(lake: Lake, layer: str, table: str, day: str, stats: WriteStats) -> dict:
    """The Delta version this run wrote and the day's recent versions (rows, fingerprint, run), newest first:
    any of them can be restored with the lake_restore job."""
    versions = lake.versions(layer, table, day, limit=VERSIONS_SHOWN)
    records = [dg.TableRecord({
        "version": v.version, "committed (UTC)": v.timestamp.strftime("%Y-%m-%d %H:%M:%S"),
        "operation": v.operation, "rows": -1 if v.rows is None else v.rows,
        "fingerprint": v.fingerprint or "", "run": (v.run_id or "")[:8],
    }) for v in versions]
    schema = dg.TableSchema(columns=[dg.TableColumn(n, t) for n, t in (
        ("version", "int"), ("committed (UTC)", "string"), ("operation", "string"), ("rows", "int"),
        ("fingerprint", "string"), ("run", "string"))])
    return {
        "delta_version": dg.MetadataValue.int(stats.version if stats.version is not None else -1),
        "delta_table": dg.MetadataValue.text(f"{layer}/{table} (Delta Lake, partitioned by date)"),
        "versions": dg.MetadataValue.table(records, schema=schema),
        "files": dg.MetadataValue.int(stats.files),
    }


@contextmanager
def retried_on_conflict(context: dg.AssetExecutionContext) -> Iterator[None]:
    """Run the step again (up to CONFLICT_RETRIES times) when another run committed the partition first."""
    try:
        yield
    except LakeWriteConflict as conflict:
        context.log.warning(f"{conflict} — retrying the step")
        verdicts.record_failed_materialisation(  # the run goes on: alerted by quality_alerts, not by a failed run
            context.instance, sorted(context.selected_asset_keys, key=str),
            context.partition_key if context.has_partition_key else None, context.run.run_id,
            f"{conflict} (attempt {context.retry_number + 1}; retrying)")
        raise dg.RetryRequested(max_retries=CONFLICT_RETRIES, seconds_to_wait=1 + random.random()) from conflict

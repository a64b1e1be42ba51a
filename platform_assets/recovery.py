"""recovery/<table>: restore a source table from its newest verified checkpoint (or a chosen one)."""

import datetime as dt

import dagster as dg

from platform_assets.restoring import plan_restore, record, restore
from platform_assets.tables import SOURCE_TABLES
from resources import CheckpointStore, SourceDatabase

AUDIT_ROWS = 10


class RestoreConfig(dg.Config):
    checkpoint_id: str | None = None  # default: the newest checkpoint that verifies
    as_of: str | None = None  # ISO 8601 time: the newest checkpoint taken at or before it
    target_table: str | None = None  # restore beside the live table instead of over it
    dry_run: bool = False  # only print the plan


def _parse_time(text: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"as_of {text!r} is not an ISO 8601 time (e.g. 2026-11-22T14:00:00Z)") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _audit_markdown(entries: list[dict]) -> str:
    lines = ["| when (UTC) | trigger | checkpoint | target | rows | seconds | fallbacks |",
             "|---|---|---|---|---:|---:|---:|"]
    for e in entries:
        lines.append(f"| {e['at'][:19]} | {e.get('trigger', 'manual')} | {e['checkpoint_id']} | {e['target']} | "
                     f"{e['rows']:,} | {sum(e['seconds'].values()):.2f} | {len(e['failed_attempts'])} |")
    return "\n".join(lines)


def _recovery_asset(table: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=["recovery", table],
        deps=[dg.AssetKey(["checkpoints", table])],
        group_name="recovery",
        kinds={"sqlite", "postgres"},
        description=f"Restores `{table}` in the source database: verify → load into a temporary table → "
        "compare count, schema and fingerprint → swap atomically → recreate indexes → audit. Launched by "
        "the `source_table_watch` sensor when the table disappears, or by hand (run config: checkpoint_id, "
        "as_of, target_table, dry_run).",
    )
    def _asset(context: dg.AssetExecutionContext, config: RestoreConfig, source_db: SourceDatabase,
               checkpoints: CheckpointStore) -> dg.MaterializeResult:
        started = dt.datetime.now(dt.UTC)
        plan = plan_restore(checkpoints, table, config.checkpoint_id,
                            _parse_time(config.as_of) if config.as_of else None, config.target_table,
                            config.dry_run)
        if config.dry_run:
            description = plan.describe(checkpoints)
            context.log.info(description)
            return dg.MaterializeResult(metadata={"dry_run": True, "plan": dg.MetadataValue.md(
                f"```\n{description}\n```")})

        outcome = restore(checkpoints, source_db, plan, log=context.log.warning)
        tags = context.run.tags
        timings = {f"{step}_seconds": seconds for step, seconds in outcome.seconds.items()}
        if "aegis/detected_at" in tags:
            detected = dt.datetime.fromisoformat(tags["aegis/detected_at"])
            timings["launch_seconds"] = round((started - detected).total_seconds(), 3)
            timings["detection_to_restored_seconds"] = round((dt.datetime.now(dt.UTC) - detected).total_seconds(), 3)
        entry = record(checkpoints, outcome, run_id=context.run_id, trigger=tags.get("aegis/trigger", "manual"),
                       detected_at=tags.get("aegis/detected_at"), timings=timings)
        context.log.info(f"restored {outcome.rows} rows of {table} into {outcome.target} from "
                         f"{outcome.checkpoint_id} ({timings})")
        return dg.MaterializeResult(metadata={
            "checkpoint_id": outcome.checkpoint_id,
            "target_table": outcome.target,
            "dagster/row_count": dg.MetadataValue.int(outcome.rows),
            "fingerprint_verified": dg.MetadataValue.text(outcome.fingerprint),
            "fallbacks": dg.MetadataValue.json(outcome.failed_attempts),
            "trigger": entry["trigger"],
            **{name: dg.MetadataValue.float(value) for name, value in timings.items()},
            "recovery_log": dg.MetadataValue.md(_audit_markdown(checkpoints.audit_log(table, AUDIT_ROWS))),
        })

    return _asset


assets = [_recovery_asset(table) for table in SOURCE_TABLES]

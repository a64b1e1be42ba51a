"""recovery/<table>: put a protected table back from a checkpoint — without ever discarding data.

- `source_table_watch` launches it when a table disappears (or shrinks, with AEGIS_RESTORE_ON_SHRINK).
- A click on Materialize restores the newest checkpoint that verifies. Over a present, healthy table it
  is refused with what would be lost (see `platform_assets/safeguard.py`), unless the run config says
  `replace_live_table: true` — and then the live table is kept aside, never dropped.
- The `restore_<table>` job has one partition per kept checkpoint: pick one in the launchpad to restore
  exactly that checkpoint, beside the live table with `target_table`, without typing its id.
- `dry_run: true` shows the plan and the verdict as an observation: it is not a materialisation.

Every restore is written to the recovery log, shown per table here and across tables on `recovery_log`.
"""

import datetime as dt

import dagster as dg

from platform_assets.checkpoints import checkpoint_table
from platform_assets.partitions import checkpoint_partitions
from platform_assets.protected import PROTECTED
from platform_assets.restoring import RestorePlan, plan_restore, record, restore
from platform_assets.safeguard import PREFIX_LENGTH, Verdict, aside_name, judge, measure_loss, refusal_message
from resources import CheckpointStore, RecoveryPolicy, SourceDatabase
from resources.table_refs import TableRef, safe_component

RECOVERY_LOG = dg.AssetKey("recovery_log")
LOG_ROWS = 100


class RestoreConfig(dg.Config):
    checkpoint_id: str | None = None  # exactly this checkpoint (no fallback); default: the newest that verifies
    as_of: str | None = None  # ISO 8601 time: the newest checkpoint taken at or before it
    target_table: str | None = None  # restore beside the live table, under this name
    replace_live_table: bool = False  # replace a present, healthy table; it is kept aside, never dropped
    dry_run: bool = False  # show the plan and whether it would be refused; change nothing


def _parse_time(text: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"as_of {text!r} is not an ISO 8601 time (e.g. 2026-11-22T14:00:00Z)") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def recovery_log_table(entries: list[dict]) -> dg.TableMetadataValue:
    """Restores as a table the UI shows whole (narrow columns; the cell scrolls sideways for the rest): when,
    what into what, from which checkpoint, rows, trigger, seconds per step, fallbacks, what was kept aside."""
    columns = [("when (UTC)", "string"), ("restored", "string"), ("checkpoint", "string"), ("rows", "int"),
               ("trigger", "string"), ("seconds: verify/load/compare/swap", "string"), ("fallbacks", "int"),
               ("kept aside", "string")]
    records = []
    for e in entries:
        aside = e.get("kept_aside")
        records.append(dg.TableRecord({
            "when (UTC)": e["at"][5:19].replace("T", " "),
            "restored": e["table"] if e["target"] == e["table"] else f"{e['table']} → {e['target']}",
            "checkpoint": e["checkpoint_id"], "rows": e["rows"], "trigger": e.get("trigger", "manual"),
            "seconds: verify/load/compare/swap": "/".join(f"{s:.2f}" for s in e["seconds"].values()),
            "fallbacks": len(e["failed_attempts"]),
            "kept aside": f"{aside['table']} ({aside['rows']:,} rows, until {aside['keep_until'][5:16]})"
            if aside else "",
        }))
    return dg.MetadataValue.table(records, schema=dg.TableSchema(
        columns=[dg.TableColumn(name, kind) for name, kind in columns]))


def _swept_up(context: dg.AssetExecutionContext) -> bool:
    """Was this restore launched along with other layers (select everything → Materialize)? Then a refusal
    skips it with the reason instead of failing the platform's run."""
    selection = context.run.asset_selection or set()
    return any(key.path[0] != "recovery" for key in selection)


def _recovery_asset(ref: TableRef) -> dg.AssetsDefinition:
    table = ref.id

    @dg.asset(
        key=["recovery", *ref.key_path],
        deps=[dg.AssetKey(["checkpoints", *ref.key_path])],
        group_name="recovery",
        kinds={"sqlite", "postgres"},
        output_required=False,  # a dry run or a skipped refusal materialises nothing
        description=f"Restore: puts {ref.label} back from a checkpoint exactly as it was — values, types, "
        "constraints, indexes, triggers, grants, policies — never discarding data (verify, create, load, "
        "compare with the database's own fingerprint, complete the schema, commit once, audit).\n\n"
        "Materialize restores the newest checkpoint that verifies. A present, healthy table is not replaced "
        "unless the run config says replace_live_table: true; a replaced table is kept aside as "
        f"{safe_component(ref.name)[:PREFIX_LENGTH]}__replaced_YYYYMMDD_HHMMSS. To pick an older checkpoint, "
        f"launch the restore_{ref.flat_id} job for its "
        "partition. Run config: target_table (restore beside it), replace_live_table, dry_run, checkpoint_id, "
        "as_of.",
    )
    def _asset(context: dg.AssetExecutionContext, config: RestoreConfig, source_db: SourceDatabase,
               checkpoints: CheckpointStore, recovery_policy: RecoveryPolicy):
        started = dt.datetime.now(dt.UTC)
        plan = plan_restore(checkpoints, table, config.checkpoint_id,
                            _parse_time(config.as_of) if config.as_of else None, config.target_table)
        place = ref.renamed(plan.target)
        target_rows = source_db.count(place) if source_db.table_exists(place) else None
        newest = checkpoints.newest_manifest(table)
        verdict = judge(table, plan.target, target_rows, newest["rows"] if newest else None, recovery_policy,
                        config.replace_live_table)
        if config.dry_run:
            _observe(context, f"dry run: would {verdict.action} {plan.target} ({verdict.reason})",
                     plan=checkpoint_table(checkpoints, table, plan.candidates))
            return
        if verdict.action == "refuse":
            _refuse(context, checkpoints, source_db, plan, place, verdict, recovery_policy)
            return

        aside = aside_name(safe_component(plan.target), started) if verdict.action == "replace" else None
        outcome = restore(checkpoints, source_db, plan, aside=aside, log=context.log.warning)
        if outcome.kept_aside:
            keep_until = started + dt.timedelta(days=recovery_policy.keep_replaced_days)
            outcome.kept_aside["keep_until"] = keep_until.isoformat()
            context.log.warning(f"{plan.target} ({outcome.kept_aside['rows']:,} rows) was kept aside as "
                                f"{outcome.kept_aside['table']} until {keep_until:%Y-%m-%d %H:%M} UTC")
        tags = context.run.tags
        timings = {f"{step}_seconds": seconds for step, seconds in outcome.seconds.items()}
        if "aegis/detected_at" in tags:
            detected = dt.datetime.fromisoformat(tags["aegis/detected_at"])
            timings["launch_seconds"] = round((started - detected).total_seconds(), 3)
            timings["detection_to_restored_seconds"] = round((dt.datetime.now(dt.UTC) - detected).total_seconds(), 3)
        entry = record(checkpoints, outcome, run_id=context.run_id, trigger=tags.get("aegis/trigger", "manual"),
                       detected_at=tags.get("aegis/detected_at"), timings=timings, verdict=verdict.reason,
                       kept_aside=outcome.kept_aside)
        context.log.info(f"restored {outcome.rows} rows of {table} into {outcome.target} from "
                         f"{outcome.checkpoint_id} ({timings})")
        context.log_event(dg.AssetMaterialization(asset_key=RECOVERY_LOG, metadata={
            "restores": recovery_log_table(checkpoints.audit_log_all(LOG_ROWS)),
            "latest": dg.MetadataValue.text(f"{table} from {outcome.checkpoint_id} ({entry['trigger']})")}))
        for warning in outcome.warnings:
            context.log.warning(f"restored {ref.label}, but: {warning}")
        yield dg.MaterializeResult(metadata={
            "checkpoint_id": outcome.checkpoint_id,
            "schema_warnings": dg.MetadataValue.json(outcome.warnings),
            "target_table": outcome.target,
            "dagster/row_count": dg.MetadataValue.int(outcome.rows),
            "fingerprint_verified": dg.MetadataValue.text(outcome.fingerprint),
            "fallbacks": dg.MetadataValue.json(outcome.failed_attempts),
            "trigger": entry["trigger"],
            "why": dg.MetadataValue.text(verdict.reason),
            "kept_aside": dg.MetadataValue.text(entry["kept_aside"]["table"] if entry["kept_aside"] else "nothing"),
            **{name: dg.MetadataValue.float(value) for name, value in timings.items()},
            "recovery_log": recovery_log_table(checkpoints.audit_log(table, LOG_ROWS)),
        })

    return _asset


def _observe(context: dg.AssetExecutionContext, summary: str, **metadata) -> None:
    context.log.info(summary)
    context.log_event(dg.AssetObservation(asset_key=context.asset_key, description=summary,
                                          metadata={"summary": dg.MetadataValue.md(summary), **metadata}))


def _refuse(context: dg.AssetExecutionContext, checkpoints: CheckpointStore, source_db: SourceDatabase,
            plan: RestorePlan, place: TableRef, verdict: Verdict, policy: RecoveryPolicy) -> None:
    """Say what would be lost and how to proceed; fail the run unless this restore was only swept up."""
    checkpoint_id, rows, loss = plan.candidates[0], None, None  # the checkpoint the restore would use first
    try:
        manifest = checkpoints.manifest(plan.table, checkpoint_id)
        rows = manifest["rows"]
        loss = measure_loss(checkpoints, source_db, plan.table, place, manifest)
    except Exception as exc:  # noqa: BLE001 - the refusal stands; only its detail is missing
        context.log.warning(f"could not compare {plan.target} with checkpoint {checkpoint_id}: {exc}")
    message = refusal_message(plan.table, plan.target, verdict, checkpoint_id, rows, loss, policy)
    metadata = {"checkpoint_id": checkpoint_id}
    if loss is not None:
        metadata.update(checkpoint_rows=rows, live_rows=loss.live_rows, rows_lost_by_replacing=loss.only_live,
                        rows_brought_back=loss.only_checkpoint)
    _observe(context, message, **metadata)
    if _swept_up(context):
        context.log.warning(f"skipped recovery/{plan.table}: {message}")
        return
    raise dg.Failure(description=message, metadata=metadata, allow_retries=False)


def _restore_job(ref: TableRef):
    partitions = checkpoint_partitions(ref.id)
    op = f"recovery__{ref.flat_id}"
    table = ref.label
    return dg.define_asset_job(
        f"restore_{ref.flat_id}", selection=[dg.AssetKey(["recovery", *ref.key_path])], partitions_def=partitions,
        config=dg.PartitionedConfig(partitions_def=partitions, run_config_for_partition_key_fn=lambda key: {
            "ops": {op: {"config": {"checkpoint_id": key}}}}),
        executor_def=dg.in_process_executor,
        description=f"Restore one chosen checkpoint of {table}. Its partitions are the kept checkpoints "
        f"(newest last): pick one in the launchpad and add target_table: {safe_component(ref.name)}_restored "
        "to restore beside the live table (or replace_live_table: true).",
    )


recovery_log = dg.AssetSpec(
    RECOVERY_LOG, group_name="recovery", deps=[dg.AssetKey(["recovery", *ref.key_path]) for ref in PROTECTED],
    description="Recovery log: every restore of every table — when, trigger, table, checkpoint, rows, seconds "
    "per step, fallbacks and the table kept aside. Reported by each restore; not materialised by hand.",
)
assets = [_recovery_asset(ref) for ref in PROTECTED]
jobs = [_restore_job(ref) for ref in PROTECTED]

"""recovery/<table>: put a protected table back from a checkpoint — without ever discarding data.

- `source_table_watch` launches it when a table disappears (or shrinks, with AEGIS_RESTORE_ON_SHRINK).
- A click on Materialize restores the newest checkpoint that verifies. Over a present, healthy table it
  is refused with what would be lost (see `platform_assets/safeguard.py`), unless the run config says
  `replace_live_table: true` — and then the live table is kept aside, never dropped.
- The `restore_<table>` job has one partition per kept checkpoint: pick one in the launchpad to restore
  exactly that checkpoint, beside the live table with `target_table`, without typing its id.
- `dry_run: true` shows the plan and the verdict as an observation: it is not a materialisation.
- The tables of a consistency group selected together are restored from one snapshot in one transaction
  (`platform_assets/consistency.py`); one restored alone warns when its partners changed since.

Every restore is written to the recovery log, shown per table here and across tables on `recovery_log`.
"""

import datetime as dt
from collections.abc import Sequence

import dagster as dg

from platform_assets.protection.checkpoints import checkpoint_partitions, checkpoint_table
from platform_assets.protection.consistency import common_candidates, partners_changed
from platform_assets.protection.restore_config import RestoreConfig, moment
from platform_assets.protection.restoring import (
    Part,
    RestoreOutcome,
    RestorePlan,
    original_name,
    plan_restore,
    record,
    restore,
    restore_group,
)
from platform_assets.protection.safeguard import (
    PREFIX_LENGTH,
    Verdict,
    aside_name,
    judge,
    measure_loss,
    refusal_message,
)
from platform_assets.protection.sqlite_point_in_time import from_replica
from resources import CheckpointStore, RecoveryPolicy, SourceDatabase
from resources.databases.consistency_groups import ConsistencyGroup
from resources.databases.table_refs import TableRef, safe_component
from resources.execution import restore_executor

RECOVERY_LOG = dg.AssetKey("recovery_log")
LOG_ROWS = 100


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


def recovery_assets(group: ConsistencyGroup) -> dg.AssetsDefinition:
    """`recovery/<table>` for every table of a consistency group. Selected alone, a table is restored by
    itself (with a warning when its partners changed since the checkpoint); selected together, the tables
    are restored from one snapshot in one transaction."""
    keys = {ref.id: dg.AssetKey(["recovery", *ref.key_path]) for ref in group.members}
    together = (f" Consistency group {group.label}: select them together to restore them from one snapshot in "
                "one transaction." if len(group.members) > 1 else "")
    if group.retired:
        together += (" Retired: AEGIS_PROTECTED_TABLES no longer matches this table, so the watch sensor does not "
                     "restore it; this asset does, by hand, until its checkpoints expire.")
    specs = [dg.AssetSpec(
        keys[ref.id],
        deps=[dg.AssetKey(["checkpoints", *ref.key_path])],
        group_name="recovery",
        kinds={"sqlite", "postgres"},
        skippable=True,  # a dry run or a skipped refusal materialises nothing
        description=f"Restore: puts {ref.label} back from a checkpoint exactly as it was — values, types, "
        "constraints, indexes, triggers, grants, policies — never discarding data (verify, create, load, "
        "compare with the database's own fingerprint, complete the schema, commit once, audit).\n\n"
        "Materialize restores the newest checkpoint that verifies. A present, healthy table is not replaced "
        "unless the run config says replace_live_table: true; a replaced table is kept aside as "
        f"{safe_component(ref.name)[:PREFIX_LENGTH]}__replaced_YYYYMMDD_HHMMSS. To pick an older checkpoint, "
        f"launch the restore_{ref.flat_id} job for its partition. Run config: target_table (restore beside "
        "it), replace_live_table, dry_run, checkpoint_id, as_of." + together,
    ) for ref in group.members]

    @dg.multi_asset(name=f"recovery__{group.op_id}", specs=specs, can_subset=len(group.members) > 1)
    def _assets(context: dg.AssetExecutionContext, config: RestoreConfig, source_db: SourceDatabase,
                checkpoints: CheckpointStore, recovery_policy: RecoveryPolicy):
        refs = [ref for ref in group.members if keys[ref.id] in context.selected_asset_keys]
        if len(refs) == 1:
            yield from _restore_alone(context, group, refs[0], config, source_db, checkpoints, recovery_policy)
        else:
            yield from _restore_together(context, group, group.completion_order(refs), config, source_db,
                                         checkpoints, recovery_policy)

    return _assets


def _restore_alone(context: dg.AssetExecutionContext, group: ConsistencyGroup, ref: TableRef,
                   config: RestoreConfig, source_db: SourceDatabase, checkpoints: CheckpointStore,
                   policy: RecoveryPolicy):
    table, key = ref.id, dg.AssetKey(["recovery", *ref.key_path])
    started = dt.datetime.now(dt.UTC)
    as_of, cut = moment(checkpoints, source_db, [ref], config)
    plan = plan_restore(checkpoints, table, config.checkpoint_id, as_of, config.target_table)
    verdict = _judge(checkpoints, source_db, ref, plan.target, config, policy)
    if config.dry_run:
        _observe(context, key, f"dry run: would {verdict.action} {plan.target} ({verdict.reason})",
                 plan=checkpoint_table(checkpoints, table, plan.candidates))
        return
    if verdict.action == "refuse":
        _refuse(context, key, checkpoints, source_db, plan, ref.renamed(plan.target), verdict, policy)
        return
    aside = aside_name(safe_component(plan.target), started) if verdict.action == "replace" else None
    outcome = (from_replica(checkpoints, source_db, [Part(table, plan.target, aside)], [ref], as_of,
                            config.replay and not config.checkpoint_id, context.log.warning) or
               [restore(checkpoints, source_db, plan, aside=aside, log=context.log.warning, cut=cut())])[0]
    if plan.target == ref.name and not outcome.checkpoint_id.startswith("litestream:"):
        outcome.warnings += partners_changed(checkpoints, source_db, table, outcome.checkpoint_id,
                                             group.partners([table]))
    yield _report(context, checkpoints, ref, outcome, verdict, started, policy)


def _restore_together(context: dg.AssetExecutionContext, group: ConsistencyGroup, refs: list[TableRef],
                      config: RestoreConfig, source_db: SourceDatabase, checkpoints: CheckpointStore,
                      policy: RecoveryPolicy):
    """The selected tables of a group from one snapshot, in one transaction; refused as a whole when any of
    them may not be replaced."""
    if config.target_table:
        raise dg.Failure(description="target_table restores one table beside the live one: select a single "
                         f"recovery asset (this run selected {', '.join(r.label for r in refs)})",
                         allow_retries=False)
    started = dt.datetime.now(dt.UTC)
    ids = [ref.id for ref in refs]
    as_of, cut = moment(checkpoints, source_db, refs, config)
    candidates = common_candidates(checkpoints, ids, config.checkpoint_id, as_of)
    plans = {ref.id: RestorePlan(ref.id, original_name(checkpoints, ref.id, candidates), candidates,
                                 explicit=bool(config.checkpoint_id)) for ref in refs}
    verdicts = {ref.id: _judge(checkpoints, source_db, ref, plans[ref.id].target, config, policy) for ref in refs}
    if config.dry_run:
        for ref in refs:
            _observe(context, dg.AssetKey(["recovery", *ref.key_path]),
                     f"dry run: would {verdicts[ref.id].action} {plans[ref.id].target} ({verdicts[ref.id].reason}) "
                     f"together with {', '.join(r.label for r in refs if r != ref)} from checkpoint {candidates[0]}",
                     plan=checkpoint_table(checkpoints, ref.id, candidates))
        return
    for ref in refs:
        if verdicts[ref.id].action == "refuse":
            context.log.warning(f"nothing of {group.label} is restored: {ref.label} may not be replaced")
            _refuse(context, dg.AssetKey(["recovery", *ref.key_path]), checkpoints, source_db, plans[ref.id],
                    ref.renamed(plans[ref.id].target), verdicts[ref.id], policy)
            return
    parts = [Part(ref.id, plans[ref.id].target, aside_name(safe_component(plans[ref.id].target), started)
                  if verdicts[ref.id].action == "replace" else None) for ref in refs]
    outcomes = from_replica(checkpoints, source_db, parts, refs, as_of, config.replay and not config.checkpoint_id,
                            context.log.warning) or \
        restore_group(checkpoints, source_db, parts, candidates, bool(config.checkpoint_id),
                      log=context.log.warning, cut=cut())
    for ref, outcome in zip(refs, outcomes, strict=True):
        if not outcome.checkpoint_id.startswith("litestream:"):
            outcome.warnings += partners_changed(checkpoints, source_db, ref.id, outcome.checkpoint_id,
                                                 group.partners(ids))
        yield _report(context, checkpoints, ref, outcome, verdicts[ref.id], started, policy)


def _judge(checkpoints: CheckpointStore, source_db: SourceDatabase, ref: TableRef, target: str,
           config: RestoreConfig, policy: RecoveryPolicy) -> Verdict:
    place = ref.renamed(target)
    target_rows = source_db.count(place) if source_db.table_exists(place) else None
    newest = checkpoints.newest_manifest(ref.id)
    return judge(ref.id, target, target_rows, newest["rows"] if newest else None, policy, config.replace_live_table)


def _report(context: dg.AssetExecutionContext, checkpoints: CheckpointStore, ref: TableRef,
            outcome: RestoreOutcome, verdict: Verdict, started: dt.datetime,
            policy: RecoveryPolicy) -> dg.MaterializeResult:
    """Log, audit and describe one table's completed restore."""
    table = ref.id
    if outcome.kept_aside:
        keep_until = started + dt.timedelta(days=policy.keep_replaced_days)
        outcome.kept_aside["keep_until"] = keep_until.isoformat()
        context.log.warning(f"{outcome.target} ({outcome.kept_aside['rows']:,} rows) was kept aside as "
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
    return dg.MaterializeResult(asset_key=dg.AssetKey(["recovery", *ref.key_path]), metadata={
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


def _observe(context: dg.AssetExecutionContext, key: dg.AssetKey, summary: str, **metadata) -> None:
    context.log.info(summary)
    context.log_event(dg.AssetObservation(asset_key=key, description=summary,
                                          metadata={"summary": dg.MetadataValue.md(summary), **metadata}))


def _refuse(context: dg.AssetExecutionContext, key: dg.AssetKey, checkpoints: CheckpointStore,
            source_db: SourceDatabase,
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
    _observe(context, key, message, **metadata)
    if _swept_up(context):
        context.log.warning(f"skipped recovery/{plan.table}: {message}")
        return
    raise dg.Failure(description=message, metadata=metadata, allow_retries=False)


def restore_job(ref: TableRef, group: ConsistencyGroup):
    partitions = checkpoint_partitions(ref.id)
    op = f"recovery__{group.op_id}"
    table = ref.label
    return dg.define_asset_job(
        f"restore_{ref.flat_id}", selection=[dg.AssetKey(["recovery", *ref.key_path])], partitions_def=partitions,
        config=dg.PartitionedConfig(partitions_def=partitions, run_config_for_partition_key_fn=lambda key: {
            "ops": {op: {"config": {"checkpoint_id": key}}}}),
        executor_def=restore_executor(),
        description=f"Restore one chosen checkpoint of {table}. Its partitions are the kept checkpoints "
        f"(newest last): pick one in the launchpad and add target_table: {safe_component(ref.name)}_restored "
        "to restore beside the live table (or replace_live_table: true).",
    )


def recovery_log(groups: Sequence[ConsistencyGroup]) -> dg.AssetSpec:
    return dg.AssetSpec(
        RECOVERY_LOG, group_name="recovery",
        deps=[dg.AssetKey(["recovery", *ref.key_path]) for group in groups for ref in group.members],
        description="Recovery log: every restore of every table — when, trigger, table, checkpoint, rows, seconds "
        "per step, fallbacks and the table kept aside. Reported by each restore; not materialised by hand.",
    )

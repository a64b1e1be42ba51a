"""checkpoints/<table>: an exact, verified backup of each protected table, every hour (RPO < 1 h). The
tables of a consistency group are read from one snapshot and share a checkpoint id.

Each materialisation takes a checkpoint, applies retention, lists every kept checkpoint (time, rows,
bytes, last verification, why retention keeps it) and keeps the `restore_<table>` job's partitions — one
per kept checkpoint — in step with the store. Tables that restores set aside are dropped here once they
are older than AEGIS_KEEP_REPLACED_DAYS.
"""

import datetime as dt
import os

import dagster as dg

from platform_assets.layers.metadata import stopwatch
from platform_assets.layers.tables import SOURCE_TABLES
from platform_assets.protection.safeguard import asides_of, expired_asides
from resources import CheckpointStore, RecoveryPolicy, SourceDatabase, gate_verdicts
from resources.capture.health import capture_health
from resources.checkpoints.format import new_checkpoint_id
from resources.databases.consistency_groups import ConsistencyGroup
from resources.databases.table_refs import TableRef, safe_component

HOURLY = "checkpoints_hourly"  # the schedule (sensors/schedules.py) whose runs may leave a covered table alone
FULL_HOURS_VAR, DEFAULT_FULL_HOURS = "AEGIS_FULL_CHECKPOINT_HOURS", 24


class CheckpointConfig(dg.Config):
    keep_last: int = 48  # retention: always keep this many newest checkpoints …
    keep_days: int = 7  # … and every checkpoint younger than this
    collect_garbage: bool = False  # delete directories of crashed writes (older than an hour); else only report


def checkpoint_table(store: CheckpointStore, table: str, ids: list[str],
                     retention: dict[str, str | None] | None = None) -> dg.TableMetadataValue:
    """Checkpoints of `table` in the given order as the UI's table: id, time, rows, bytes, encryption, last
    verification, and (given `retention`) why retention keeps each."""
    records = []
    for checkpoint_id in ids:
        manifest = store.manifest(table, checkpoint_id)
        last = store.last_verification(table, checkpoint_id)
        record = {
            "checkpoint": checkpoint_id, "taken (UTC)": manifest["created_at"][:19].replace("T", " "),
            "rows": manifest["rows"], "bytes": sum(f["bytes"] for f in manifest["files"]),
            "encrypted": bool(manifest["encryption"]),
            "verification": "never verified" if last is None else
            f"{last.level}: {'passed' if last.ok else 'FAILED ' + '; '.join(last.problems)[:120]} "
            f"({last.verified_at[:16].replace('T', ' ')})",
        }
        if retention is not None:
            record["retention"] = retention[checkpoint_id]
        records.append(dg.TableRecord(record))
    columns = [("checkpoint", "string"), ("taken (UTC)", "string"), ("rows", "int"), ("bytes", "int"),
               ("encrypted", "bool"), ("verification", "string")] + ([("retention", "string")] if retention else [])
    return dg.MetadataValue.table(records, schema=dg.TableSchema(
        columns=[dg.TableColumn(name, kind) for name, kind in columns]))


def checkpoint_partitions(table: str) -> dg.DynamicPartitionsDefinition:
    """The kept checkpoints of table id `table`, one partition per checkpoint id: the `restore_<table>` job's
    partitions are the list a user picks a checkpoint from. `checkpoints/<table>` keeps them in step."""
    return dg.DynamicPartitionsDefinition(name=f"checkpoints_{table.replace('/', '__')}")


def sync_partitions(instance: dg.DagsterInstance, table: str, kept: list[str]) -> None:
    """Make the `restore_<table>` job's partitions exactly the kept checkpoints (added oldest first)."""
    name = checkpoint_partitions(table).name
    listed = set(instance.get_dynamic_partitions(name))
    instance.add_dynamic_partitions(name, [i for i in sorted(kept) if i not in listed])
    for gone in listed - set(kept):
        instance.delete_dynamic_partition(name, gone)


def checkpoint_assets(group: ConsistencyGroup) -> dg.AssetsDefinition:
    """`checkpoints/<table>` for every table of a consistency group, with its blocking `checkpoint_verified`
    check: the tables selected in a run are read from one snapshot and share one checkpoint id."""
    if group.retired:
        return _retired_checkpoints(group.members[0])
    keys = {ref.id: dg.AssetKey(["checkpoints", *ref.key_path]) for ref in group.members}
    together = (f" Checkpointed from one snapshot with {', '.join(m.label for m in group.members)} (same "
                "checkpoint id), so they can be restored together." if len(group.members) > 1 else "")
    specs = [dg.AssetSpec(
        keys[ref.id],
        deps=[dg.AssetKey(["source", ref.name])] if ref.schema is None and ref.name in SOURCE_TABLES else [],
        group_name="checkpoints",
        kinds={"parquet"},
        skippable=True,  # a table that does not exist (yet, or any more) is said, not failed
        description=f"Checkpoint: an exact point-in-time copy of the whole {ref.label} table — every value with "
        "its type, every schema object, a fingerprint the database computed (checksummed Parquet and a sealed "
        "manifest, optionally encrypted), verified in full by its blocking check. The metadata lists every "
        f"kept checkpoint; restore one with the restore_{ref.flat_id} job (one partition per checkpoint)."
        + together,
    ) for ref in group.members]
    checks = [dg.AssetCheckSpec("checkpoint_verified", asset=keys[ref.id], blocking=True,
                                description="Full verification of the checkpoint this run wrote: manifest seal, "
                                "sha256 of every file and Parquet row counts.") for ref in group.members]

    @dg.multi_asset(name=f"checkpoints__{group.op_id}", specs=specs, check_specs=checks,
                    can_subset=True)  # a subset too is how a table that does not exist is skipped
    def _assets(context: dg.AssetExecutionContext, config: CheckpointConfig, source_db: SourceDatabase,
                checkpoints: CheckpointStore, recovery_policy: RecoveryPolicy):
        selected = [ref for ref in group.members if keys[ref.id] in context.selected_asset_keys]
        refs = _due(context, source_db, checkpoints, _present(context, source_db, checkpoints, selected))
        if not refs:
            return
        checkpoint_id = new_checkpoint_id()
        try:
            with stopwatch() as clock, source_db.capture(refs) as captured:
                manifests = {ref.id: checkpoints.write_captured(captured[ref.id], checkpoint_id,
                                                                list(captured.values())) for ref in refs}
        except Exception as exc:
            waited = "gives way" in str(exc) or "lock timeout" in str(exc)  # a DROP/ALTER queued behind this read
            if waited or [ref for ref in refs if ref not in _present(context, source_db, checkpoints, refs)]:
                context.log.warning(f"checkpoint of {', '.join(r.label for r in refs)} abandoned (no manifest, nothing "
                                    "to restore from it): "
                                    + ("another session was waiting to change or drop a table it was reading"
                                       if waited else "a table disappeared while being read")
                                    + "; the next checkpoint takes it, and source_table_watch restores what is lost")
                return
            raise
        catalogue = source_db.catalogue()  # once for the group: where tables set aside by restores are found
        for ref in refs:
            yield from _kept_in_order(context, config, source_db, checkpoints, recovery_policy, ref,
                                      manifests[ref.id], clock["seconds"], catalogue)

    return _assets


def _due(context: dg.AssetExecutionContext, source_db: SourceDatabase, checkpoints: CheckpointStore,
         refs: list[TableRef]) -> list[TableRef]:
    """The hourly schedule's tables that need a full checkpoint now: where the change capture keeps up, the change
    log covers every commit and a full base is taken every AEGIS_FULL_CHECKPOINT_HOURS (24) — or sooner when the
    log calls for one (capture_watch: gaps, ALTERs, folds). Any other run (by hand, capture_watch) takes them all."""
    if context.run.tags.get("dagster/schedule_name") != HOURLY or source_db.kind != "postgres" or not refs:
        return refs
    try:
        health = capture_health(source_db, checkpoints.lake)
    except Exception:  # noqa: BLE001 - whatever keeps us from knowing, the checkpoint is taken
        return refs
    if health.problems:
        return refs
    hours = float(os.environ.get(FULL_HOURS_VAR) or DEFAULT_FULL_HOURS)
    due = []
    for ref in refs:
        newest = checkpoints.newest_manifest(ref.id)
        age = (dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(newest["created_at"])).total_seconds() / 3600 \
            if newest is not None and "wal" in newest["source"] else None
        if age is not None and age < hours:
            context.log.info(f"{ref.label}: the change log covers it ({health.summary()}); its full base "
                             f"{newest['id']} is {age:.1f} h old, the next one is due at {hours:g} h")
        else:
            due.append(ref)
    return due


def _present(context: dg.AssetExecutionContext, source_db: SourceDatabase, checkpoints: CheckpointStore,
             refs: list[TableRef]) -> list[TableRef]:
    """The tables of `refs` that exist; the others are said, never failed: on a fresh install a table does not
    exist yet, and a protected table that is gone is the watch sensor's to restore (an hourly red run and alert
    would only cry wolf)."""
    existing, default = source_db.catalogue()
    present = [ref for ref in refs if (ref.schema or default, ref.name) in existing]
    for ref in refs:
        if ref in present:
            continue
        if checkpoints.list(ref.id):
            context.log.warning(f"{ref.label} is missing: not checkpointed this time; source_table_watch restores it "
                                "from its newest checkpoint")
        else:
            context.log.info(f"{ref.label} does not exist yet: nothing to checkpoint (it is checkpointed once it "
                             "exists)")
    return present


def _kept_in_order(context: dg.AssetExecutionContext, config: CheckpointConfig, source_db: SourceDatabase,
                   checkpoints: CheckpointStore, recovery_policy: RecoveryPolicy, ref: TableRef, manifest: dict,
                   seconds: float, catalogue: tuple):
    """After a checkpoint of `ref` is written: retention, the restore job's partitions, crashed writes, tables
    set aside long ago; then the materialisation and the verification of what was written."""
    table, key = ref.id, dg.AssetKey(["checkpoints", *ref.key_path])
    reasons = checkpoints.retention(table, config.keep_last, dt.timedelta(days=config.keep_days))
    expired = checkpoints.expire(table, reasons)
    sync_partitions(context.instance, table, [i for i, reason in reasons.items() if reason])
    orphans = checkpoints.collect_garbage(table, dry_run=not config.collect_garbage)
    if orphans:
        context.log.warning(f"{len(orphans)} unfinished checkpoint(s) of {table} left by crashed writes"
                            + (" were deleted" if config.collect_garbage else ": run with collect_garbage"))
    dropped, kept_aside = _expire_replaced_tables(context, source_db, ref, recovery_policy, catalogue)
    context.log.info(f"checkpoint {manifest['id']} of {table}: {manifest['rows']} rows")
    yield dg.MaterializeResult(asset_key=key, metadata={
        "checkpoint_id": dg.MetadataValue.text(manifest["id"]),
        "dagster/row_count": dg.MetadataValue.int(manifest["rows"]),
        "bytes": dg.MetadataValue.int(sum(f["bytes"] for f in manifest["files"])),
        "files": dg.MetadataValue.int(len(manifest["files"])),
        "seconds": dg.MetadataValue.float(seconds),
        "fingerprint": dg.MetadataValue.text(manifest["fingerprint"]["value"]),
        "codec": dg.MetadataValue.text(manifest["codec"]),
        "encryption": dg.MetadataValue.text(
            f"{manifest['encryption']['algorithm']} key {manifest['encryption']['key_id']}"
            if manifest["encryption"] else "none"),
        "consistency_group": dg.MetadataValue.text(
            " + ".join(manifest["consistency_group"]["tables"]) if manifest["consistency_group"] else "none"),
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(c["name"], c["type"], description=f"carried as {c['travel']}")
                     for c in manifest["columns"]]),
        "schema_objects": dg.MetadataValue.int(_schema_objects(manifest["source"])),
        "kept_checkpoints": checkpoint_table(checkpoints, table, [i for i, r in reasons.items() if r], reasons),
        "expired_by_retention": dg.MetadataValue.int(len(expired)),
        "orphans": dg.MetadataValue.int(len(orphans)),
        "replaced_tables_kept": dg.MetadataValue.json(kept_aside),
        "replaced_tables_dropped": dg.MetadataValue.json(dropped),
    })
    result = checkpoints.verify(table, manifest["id"], "full")
    verdict = dg.AssetCheckResult(
        asset_key=key, check_name="checkpoint_verified", passed=result.ok, severity=dg.AssetCheckSeverity.ERROR,
        description=None if result.ok else f"checkpoint {manifest['id']}: " + "; ".join(result.problems)[:900],
        metadata={"checkpoint_id": manifest["id"], "level": result.level, "seconds": result.seconds,
                  "problems": dg.MetadataValue.json(result.problems)},
    )
    gate_verdicts.record(context.instance, key, None, "checkpoint_verified", verdict, context.run.run_id)  # alerts
    yield verdict


def _retired_checkpoints(ref: TableRef) -> dg.AssetsDefinition:
    """`checkpoints/<table>` of a table AEGIS_PROTECTED_TABLES no longer matches: no new checkpoint is taken;
    each run lets the kept ones expire `keep_days` after they were taken (the table then leaves the code
    location at its next load) and keeps the restore job's partitions in step."""
    key = dg.AssetKey(["checkpoints", *ref.key_path])

    @dg.asset(key=key, group_name="checkpoints", kinds={"parquet"},
              description=f"Retired: {ref.label} has kept checkpoints, but AEGIS_PROTECTED_TABLES no longer matches "
              "it. No new checkpoint is taken; each run lets the kept ones expire keep_days (7) after they were "
              f"taken. Until then recovery/{ref.id} restores it by hand; the watch sensor no longer does.")
    def _asset(context: dg.AssetExecutionContext, config: CheckpointConfig, checkpoints: CheckpointStore):
        reasons = checkpoints.retention(ref.id, config.keep_last, dt.timedelta(days=config.keep_days), retired=True)
        expired = checkpoints.expire(ref.id, reasons)
        kept = [i for i, reason in reasons.items() if reason]
        sync_partitions(context.instance, ref.id, kept)
        summary = (f"{ref.label} is retired (no longer matched by AEGIS_PROTECTED_TABLES): {len(expired)} "
                   f"checkpoint(s) expired, {len(kept)} kept")
        context.log.info(summary)
        return dg.MaterializeResult(metadata={
            "retired": dg.MetadataValue.text(summary), "expired_by_retention": dg.MetadataValue.int(len(expired)),
            "kept_checkpoints": checkpoint_table(checkpoints, ref.id, kept, reasons)})

    return _asset


def _schema_objects(source: dict) -> int:
    """How many schema statements (DDL, constraints, indexes, triggers, grants, policies) the checkpoint holds."""
    objects = source["objects"]
    if source["kind"] == "postgres":
        return len(objects["pre_data"]) + len(objects["post_data"]) + len(source["referenced_by"])
    return 1 + len(objects["indexes"]) + len(objects["triggers"])


def _expire_replaced_tables(context: dg.AssetExecutionContext, source_db: SourceDatabase, ref: TableRef,
                            policy: RecoveryPolicy, catalogue: tuple) -> tuple[list[str], list[str]]:
    """Drop the tables restores set aside from `ref` longer ago than the policy keeps them (`catalogue`: the
    source's tables and default schema, as source_db.catalogue() gives them)."""
    existing, default = catalogue
    tables = {name for schema, name in existing if schema == (ref.schema or default)}
    prefix = safe_component(ref.name)
    keep = dt.timedelta(days=policy.keep_replaced_days)
    dropped = []
    for name in expired_asides(tables, prefix, keep, dt.datetime.now(dt.UTC)):
        try:
            source_db.drop_table(ref.renamed(name))
        except Exception as exc:  # noqa: BLE001 - e.g. still referenced by a foreign key: keep it, say why
            context.log.warning(f"could not drop {name}, set aside by a restore of {ref.label}: {exc}")
            continue
        context.log.info(f"dropped {name}: set aside by a restore more than {policy.keep_replaced_days:g} days ago")
        dropped.append(name)
    return dropped, [name for name in asides_of(tables, prefix) if name not in dropped]


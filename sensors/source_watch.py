"""source_table_watch: notices a lost or shrunken source table and requests its restore.

Each tick asks the database which protected tables exist (one query) and compares row counts with
the newest checkpoint. The cursor remembers, per table, its state and how many losses were seen, so
the run key `restore-<table>-loss-<n>` makes repeated ticks over one loss launch one restore, while a
table dropped again after being restored is a new loss (n + 1) and is restored again. A table that shrank
below the policy's alert share raises an alert, and is restored only with AEGIS_RESTORE_ON_SHRINK: the
restore then keeps the shrunk table aside (`recovery/<table>` never drops a table it replaces).

The tables watched include the protected tables that were already missing when the code location loaded (they
are known from their checkpoints). What could not be resolved at load — an unreachable database, a name with no
table — is said in every tick; a database that cannot be reached now skips the tick with the reason, and the
watch goes on when it is back.
"""

import datetime as dt
import json
from collections.abc import Sequence

import dagster as dg

from resources import CheckpointStore, RecoveryPolicy, SourceDatabase
from resources.capture import change_log
from resources.databases.adbc import OUTAGE_ERRORS
from resources.databases.consistency_groups import ConsistencyGroup, group_of
from resources.databases.table_refs import TableRef
from resources.urls import redact

MAX_RETRIES = 2  # a restore run that failed is tried again this many times while the table stays lost


def build_source_watch(tables: Sequence[TableRef], job, policy: RecoveryPolicy | None = None,
                       empty_patterns: Sequence[str] = (), groups: Sequence[ConsistencyGroup] = (),
                       notes: Sequence[str] = (), retired: Sequence[TableRef] = ()) -> dg.SensorDefinition:
    """Watch the protected `tables`; `empty_patterns` (patterns of AEGIS_PROTECTED_TABLES that matched no
    table when the code location loaded) and `notes` (what the load could not resolve) are said in every skip
    message. Tables of one consistency group lost at the same time are restored together, in one run. `retired`
    tables (kept checkpoints, no longer configured) are never restored on their own: their loss is only said."""
    policy = policy or RecoveryPolicy()
    unmatched = (f"; {', '.join(empty_patterns)} matched no table when the code location loaded "
                 "(reload it after creating one)") if empty_patterns else ""
    unmatched += "".join(f"; {note}" for note in notes)

    @dg.sensor(
        name="source_table_watch",
        job=job,
        # The daemon evaluates sensors in a 5-second loop. A minimum interval equal to the loop period is
        # missed whenever a loop starts a moment early, doubling the gap; one second less makes every due
        # loop evaluate the sensor, so tables are checked every `interval_seconds`.
        minimum_interval_seconds=max(1, policy.watch_interval_seconds - 1),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Every {policy.watch_interval_seconds} s: restore a protected source table that disappeared; "
        f"alert when one shrinks below {policy.shrink_alert_share:.0%} of its newest checkpoint"
        + (" (and restore it)." if policy.restore_on_shrink else "."),
    )
    def source_table_watch(context: dg.SensorEvaluationContext, source_db: SourceDatabase,
                           checkpoints: CheckpointStore) -> dg.SensorResult | dg.SkipReason:
        cursor = json.loads(context.cursor) if context.cursor else {}
        now = dt.datetime.now(dt.UTC).isoformat()
        try:
            existing, default = source_db.catalogue()
            stored = {ref.id: checkpoints.list(ref.id) for ref in [*tables, *retired]}
        except OUTAGE_ERRORS as exc:  # an outage: say it, look again next tick, lose no state
            message = redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)[:400]
            context.log.warning(f"cannot look at the protected tables now: {message}")
            return dg.SkipReason(f"cannot look at the protected tables now ({message}); looking again in "
                                 f"{policy.watch_interval_seconds} s" + unmatched)
        requests, notes = [], []
        for ref in retired:
            if stored[ref.id] and (ref.schema or default, ref.name) not in existing:
                notes.append(f"{ref.label}: missing, but retired (no longer matched by AEGIS_PROTECTED_TABLES): "
                             f"not restored on its own; recovery/{ref.id} restores it by hand")
        for ref in tables:
            table = ref.id
            state = cursor.get(table, {"state": "unknown", "losses": 0, "shrinks": 0, "seen_at": None})
            ids = stored[table]
            if not ids:
                notes.append(f"{ref.label}: no checkpoint yet, nothing to restore from (not protected)")
                state["state"] = "unprotected"
            elif (ref.schema or default, ref.name) not in existing:
                if state["state"] != "missing":  # a new loss
                    state.update(state="missing", losses=state["losses"] + 1, detected_at=now, retries=0)
                    context.log.warning(f"protected table {table} is missing; requesting a restore")
                    requests.append((ref, f"restore-{ref.flat_id}-loss-{state['losses']}", state, "loss"))
                elif retry := _retry_key(context, f"restore-{ref.flat_id}-loss-{state['losses']}", state):
                    requests.append((ref, retry, state, "loss"))
                else:
                    notes.append(f"{table}: missing, restore requested")
            else:
                try:
                    rows = source_db.count(ref)
                except LookupError:  # dropped since the catalogue was read: the next tick sees the loss
                    continue
                newest = checkpoints.newest_manifest(table)
                expected = newest["rows"] if newest else 0
                if policy.is_shrunk(rows, expected):
                    if state["state"] != "shrunk":
                        state.update(state="shrunk", shrinks=state["shrinks"] + 1, detected_at=now, retries=0)
                        context.log.error(f"ALERT: {table} holds {rows:,} rows, below "
                                          f"{policy.shrink_alert_share:.0%} of its newest checkpoint "
                                          f"({expected:,} rows)"
                                          + just_before(checkpoints, source_db, ref.in_schema(default), newest))
                    if policy.restore_on_shrink:
                        key = f"restore-{ref.flat_id}-shrink-{state['shrinks']}"
                        if state.get("requested") != key:
                            state["requested"] = key
                            requests.append((ref, key, state, "shrink"))
                        elif retry := _retry_key(context, key, state):
                            requests.append((ref, retry, state, "shrink"))
                    else:
                        notes.append(f"{table}: shrunk to {rows:,} of {expected:,} rows (alerted; "
                                     "automatic restore on shrink is off)")
                else:
                    state.update(state="present", seen_at=now)
            cursor[table] = state
        if requests:
            return dg.SensorResult(run_requests=_together(requests, groups), cursor=json.dumps(cursor))
        context.update_cursor(json.dumps(cursor))
        return dg.SkipReason(("; ".join(notes) or f"all {len(tables)} protected tables present") + unmatched)

    return source_table_watch


def just_before(checkpoints: CheckpointStore, source_db: SourceDatabase, ref: TableRef, newest: dict | None) -> str:
    """The moment before the transaction that removed the most rows since the newest checkpoint, as the change log
    saw it — what to restore to (one run config: before_transaction) — or nothing where no log is kept."""
    if source_db.kind != "postgres" or newest is None:
        return ""
    try:
        since = dt.datetime.fromisoformat(newest["created_at"])
        changes = change_log.activity(change_log.location(checkpoints.lake),
                                      [change_log.relation_name(ref.schema, ref.name)], since)
        removals = [t for t in change_log.largest_transactions(changes, 50) if t["D"] or t["T"]]
    except Exception:  # noqa: BLE001 - the alert goes out whatever the log can say
        return ""
    if not removals:
        return ""
    worst = max(removals, key=lambda t: (t["T"], t["D"]))
    what = "truncated it" if worst["T"] else f"deleted {worst['D']:,} row(s)"
    return (f"; transaction {worst['xid']} {what} at {worst['commit_time'].isoformat()}: restore to just before it "
            f"with before_transaction: {worst['xid']} (recovery/{ref.id}, target_table to restore beside)")


def _together(requests: list[tuple[TableRef, str, dict, str]],
              groups: Sequence[ConsistencyGroup]) -> list[dg.RunRequest]:
    """One run per table — or per consistency group, for its tables lost (or shrunk) in the same tick, so they
    are restored together from one snapshot. Each table's state remembers the run key it was requested under."""
    batches: dict[tuple, list] = {}
    for ref, key, state, reason in requests:
        group = group_of(groups, ref.id)
        batches.setdefault((group.op_id if group else ref.id, reason), []).append((ref, key, state))
    runs = []
    for (_, reason), batch in batches.items():
        run_key = "+".join(key for _, key, _ in batch)
        for _, _, state in batch:
            state["attempt"] = run_key
        first = batch[0][2]
        runs.append(dg.RunRequest(
            run_key=run_key,
            asset_selection=[dg.AssetKey(["recovery", *ref.key_path]) for ref, _, _ in batch],
            tags={"aegis/trigger": "source_table_watch", "aegis/reason": reason, "aegis/restore_key": run_key,
                  "aegis/detected_at": first["detected_at"], "aegis/last_seen_at": first.get("seen_at") or ""},
        ))
    return runs


def _retry_key(context: dg.SensorEvaluationContext, key: str, state: dict) -> str | None:
    """A new run key when the last restore run for this loss failed and the table is still lost."""
    attempt_key = state.get("attempt") or (key if not state.get("retries") else f"{key}-retry-{state['retries']}")
    runs = context.instance.get_runs(dg.RunsFilter(tags={"aegis/restore_key": attempt_key}), limit=1)
    if runs and runs[0].status == dg.DagsterRunStatus.FAILURE and state.get("retries", 0) < MAX_RETRIES:
        state["retries"] = state.get("retries", 0) + 1
        context.log.warning(f"restore run {runs[0].run_id} failed; trying again ({state['retries']}/{MAX_RETRIES})")
        return f"{key}-retry-{state['retries']}"
    return None

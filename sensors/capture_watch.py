"""capture_watch: the change capture as Dagster sees it. The capture runs in its own process (make capture); this
sensor only observes it: every tick it records the slot's lag, whether a capture streams it and the last durable
commit on the `changes/log` asset, evaluates its check `rpo_within_target` (AEGIS_RPO_SECONDS), and raises an
alert when the RPO goes above its target — and one when it is back under it. A gap in the change log (a slot made
again) or an ALTER of a protected table gets a fresh checkpoint of the tables it touched: the first base after it.
Once a minute it draws each table's timeline (timelines())."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Sequence

import dagster as dg
import pyarrow.compute as pc

from resources import CheckpointStore, SourceDatabase
from resources.capture import change_log, timeline
from resources.capture.health import CHANGE_LOG, RPO_CHECK, capture_health
from resources.capture.pgoutput import lsn_text
from resources.databases.adbc import OUTAGE_ERRORS
from resources.databases.table_refs import TableRef
from sensors.alerts import WEBHOOK_VAR, post


def health_metadata(health) -> dict:
    return {"slot": health.slot, "streaming": health.streaming, "lag_bytes": health.lag_bytes,
            "rpo_seconds": health.rpo_seconds, "rpo_target_seconds": health.target_seconds,
            "durable_lsn": lsn_text(health.durable_lsn) if health.durable_lsn is not None else None,
            "durable_at": health.durable_at.isoformat() if health.durable_at else None,
            "wal_status": health.wal_status}


def relations(source_db: SourceDatabase, tables: Sequence[TableRef]) -> dict[str, TableRef]:
    """The change log's relation name (schema.name) of every protected table."""
    if source_db.kind != "postgres":
        return {}
    default = source_db.default_schema()
    return {change_log.relation_name(t.in_schema(default).schema, t.name): t for t in tables}


def fresh_checkpoints(context: dg.SensorEvaluationContext, lake, named: dict[str, TableRef], state: dict
                      ) -> list[dg.RunRequest]:
    """A checkpoint of every table (`named`: by its relation in the log) a gap or an ALTER touched since the last
    tick: the first base after it."""
    requests = []
    for event in change_log.events(change_log.location(lake), state.get("events_lsn", 0)):
        relation = event["relation"]
        touched = list(named.values()) if relation is None else [named[relation]] if relation in named else []
        state["events_lsn"] = event["lsn"]
        if not touched:
            continue
        context.log.warning(f"the change log recorded a {event['kind']} at {lsn_text(event['lsn'])} ({event['why']}): "
                            f"a fresh checkpoint of {', '.join(t.label for t in touched)}")
        requests.append(dg.RunRequest(
            run_key=f"fresh-checkpoint-{event['kind']}-{event['lsn']}",
            asset_selection=[dg.AssetKey(["checkpoints", *t.key_path]) for t in touched],
            tags={"aegis/trigger": "capture_watch", "aegis/reason": event["kind"]}))
    return requests


TIMELINE_MINUTES = 60
FOLD_ROWS_PER_CHANGE = 50  # replaying a change costs about as much as loading this many rows (make bench-capture)
FOLD_MIN_CHANGES = 1_000
MOMENTS_KEPT = 50  # moments offered per table in its rewind job (the newest)


def folds(context: dg.SensorEvaluationContext, checkpoints: CheckpointStore, named: dict[str, TableRef]
          ) -> list[dg.RunRequest]:
    """A fresh checkpoint (the log folded into a new base) of every table whose changes since its newest
    checkpoint would cost more to replay than loading it whole (measured: a change costs ~70 rows' load)."""
    requests = []
    loc = change_log.location(checkpoints.lake)
    for relation, table in named.items():
        newest = checkpoints.newest_manifest(table.id)
        if newest is None or "wal" not in newest["source"]:
            continue
        since = dt.datetime.fromisoformat(newest["created_at"])
        changes = change_log.activity(loc, [relation], since).num_rows
        if changes > max(FOLD_MIN_CHANGES, newest["rows"] // FOLD_ROWS_PER_CHANGE):
            context.log.info(f"{table.label}: {changes:,} changes since checkpoint {newest['id']} "
                             f"({newest['rows']:,} rows): folding them into a new base")
            requests.append(dg.RunRequest(run_key=f"fold-{table.flat_id}-{newest['id']}",
                                          asset_selection=[dg.AssetKey(["checkpoints", *table.key_path])],
                                          tags={"aegis/trigger": "capture_watch", "aegis/reason": "fold"}))
    return requests


def timelines(context: dg.SensorEvaluationContext, source_db: SourceDatabase, lake, named: dict[str, TableRef],
              state: dict, now: dt.datetime) -> None:
    """Once a minute: each protected table's activity over the last hour as a chart and its largest transactions
    (observed on recovery/<table>), and those moments offered as partitions of its rewind job."""
    minute = now.strftime("%Y-%m-%dT%H:%M")
    if source_db.kind != "postgres" or state.get("timeline_at") == minute:
        return
    state["timeline_at"] = minute
    changes = change_log.activity(change_log.location(lake), list(named), now - dt.timedelta(minutes=TIMELINE_MINUTES))
    for relation, table in named.items():
        mine = changes.filter(pc.equal(changes["relation"], relation))
        if not mine.num_rows:
            continue
        largest = change_log.largest_transactions(mine, 10)
        rows = [dg.TableRecord({"committed": t["commit_time"].isoformat(timespec="seconds"), "xid": t["xid"],
                                "inserts": t["I"], "updates": t["U"], "deletes": t["D"], "truncates": t["T"],
                                "rewind partition": timeline.moment_key(t)}) for t in largest]
        context.instance.report_runless_asset_event(dg.AssetObservation(
            dg.AssetKey(["recovery", *table.key_path]), metadata={
                "activity_per_minute": dg.MetadataValue.md(timeline.chart_markdown(
                    timeline.per_minute(mine), f"{table.label}: rows changed per minute, last hour")),
                "largest_transactions": dg.MetadataValue.table(rows, schema=MOMENTS),
                "restore to just before one": dg.MetadataValue.text(
                    f"Jobs -> rewind_{table.flat_id} -> Launchpad: pick its partition (before_transaction)")}))
        name = timeline.moments_name(table.id)
        offered = set(context.instance.get_dynamic_partitions(name))
        wanted = sorted(offered | {timeline.moment_key(t) for t in largest})
        context.instance.add_dynamic_partitions(name, [k for k in wanted if k not in offered])
        for old in wanted[:-MOMENTS_KEPT]:
            context.instance.delete_dynamic_partition(name, old)


MOMENTS = dg.TableSchema(columns=[
    dg.TableColumn("committed", "string"), dg.TableColumn("xid", "int"), dg.TableColumn("inserts", "int"),
    dg.TableColumn("updates", "int"), dg.TableColumn("deletes", "int"), dg.TableColumn("truncates", "int"),
    dg.TableColumn("rewind partition", "string")])


def build_capture_watch(tables: Sequence[TableRef], job,
                        interval_seconds: int = 15) -> dg.SensorDefinition:
    @dg.sensor(name="capture_watch", minimum_interval_seconds=interval_seconds, job=job,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Observes the change capture (slot lag, RPO, last durable commit) on changes/log and "
               "alerts when the RPO exceeds AEGIS_RPO_SECONDS, and when it recovers; takes a fresh checkpoint of the "
               "tables a gap in the log or an ALTER TABLE touched.")
    def capture_watch(context: dg.SensorEvaluationContext, source_db: SourceDatabase,
                      checkpoints: CheckpointStore):
        try:
            health = capture_health(source_db, checkpoints.lake)
        except OUTAGE_ERRORS as exc:
            return dg.SkipReason(f"cannot look at the capture now: {type(exc).__name__}")
        problems = health.problems
        metadata = health_metadata(health)
        context.instance.report_runless_asset_event(dg.AssetObservation(CHANGE_LOG, metadata=metadata))
        context.instance.report_runless_asset_event(dg.AssetCheckEvaluation(
            asset_key=CHANGE_LOG, check_name=RPO_CHECK, passed=not problems, severity=dg.AssetCheckSeverity.ERROR,
            metadata={**metadata, "problems": "; ".join(problems) or "none"}))
        state = json.loads(context.cursor) if context.cursor else {"alerting": False}
        if bool(problems) != state["alerting"]:
            alert = {"kind": "rpo_exceeded" if problems else "rpo_recovered", "slot": health.slot,
                     "rpo_seconds": health.rpo_seconds, "target_seconds": health.target_seconds,
                     "description": "; ".join(problems) or health.summary()}
            (context.log.error if problems else context.log.info)("AEGIS_ALERT " + json.dumps(alert, sort_keys=True))
            if url := os.environ.get(WEBHOOK_VAR):
                post(url, alert)
            state["alerting"] = bool(problems)
        if health.lake_error:  # nothing below can read the log now; the alert says why
            context.update_cursor(json.dumps(state))
            return dg.SkipReason("; ".join(problems))
        named = relations(source_db, tables)
        requests = fresh_checkpoints(context, checkpoints.lake, named, state)
        now = dt.datetime.now(dt.UTC)
        if state.get("timeline_at") != now.strftime("%Y-%m-%dT%H:%M"):  # once a minute
            requests += folds(context, checkpoints, named)
        timelines(context, source_db, checkpoints.lake, named, state, now)
        if requests:
            return dg.SensorResult(run_requests=requests, cursor=json.dumps(state))
        context.update_cursor(json.dumps(state))
        return dg.SkipReason("; ".join(problems) or health.summary())

    return capture_watch

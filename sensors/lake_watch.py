"""lake_partition_watch: heals a lake partition whose data files went missing or were damaged.

Each tick compares, for every Delta table of the lake, the data files its newest version names with what the
storage holds (missing, or another size than the log recorded: truncated or replaced). For each damaged day:
- when an earlier version of that day holds exactly the same rows (the fingerprint recorded in its commit) and
  its files are intact and within the time-travel retention, the day is restored from history (`lake_restore`);
- otherwise the day is re-materialised from its upstream (the assets that write it).
One run per loss: the run key names the table, day and damaged version, and the cursor remembers it. Each loss
is alerted (an `AEGIS_ALERT` log line, and a POST to AEGIS_ALERT_WEBHOOK_URL when set). A restore from
history that failed is followed by a rebuild from upstream.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Protocol

import dagster as dg

from resources import Lake
from resources.lake.delta_tables import HISTORY_DEPTH, TimeTravelError, check_within_retention
from sensors.alerts import WEBHOOK_VAR, post

RESTORE_OP = "restore_lake_table"


class WatchedTable(Protocol):
    layer: str
    name: str
    key: dg.AssetKey
    rebuilt_by: tuple[dg.AssetKey, ...]

    @property
    def label(self) -> str: ...


def _same_rows_earlier(lake: Lake, table: WatchedTable, day: str, damaged_version: int) -> int | None:
    """An earlier version of the day with the damaged version's rows (by fingerprint), files intact."""
    versions = [v for v in lake.versions(table.layer, table.name, day, limit=20, depth=HISTORY_DEPTH)
                if v.version <= damaged_version]
    if not versions or versions[0].fingerprint is None:
        return None
    loc = lake.location(table.layer, table.name)
    for earlier in versions[1:]:
        if earlier.fingerprint != versions[0].fingerprint:
            continue
        try:
            check_within_retention(loc, earlier.version, earlier.timestamp)
        except TimeTravelError:
            return None
        if lake.partition_intact(table.layer, table.name, day, earlier.version):
            return earlier.version
    return None


def _restore_request(table: WatchedTable, day: str, version: int, run_key: str, tags: dict) -> dg.RunRequest:
    return dg.RunRequest(run_key=run_key, job_name="lake_restore", tags=tags, run_config={
        "ops": {RESTORE_OP: {"config": {"table": table.label, "date": day, "version": version}}}})


def _rebuild_request(table: WatchedTable, day: str, run_key: str, tags: dict, job_name: str) -> dg.RunRequest:
    return dg.RunRequest(run_key=run_key, job_name=job_name, asset_selection=list(table.rebuilt_by),
                         partition_key=day, tags=tags)


def _alert(context: dg.SensorEvaluationContext, alert: dict) -> None:
    context.log.error("AEGIS_ALERT " + json.dumps(alert, sort_keys=True))
    if url := os.environ.get(WEBHOOK_VAR):
        if not post(url, alert):
            context.log.warning(f"alert webhook ({WEBHOOK_VAR}) unreachable; the alert was logged")


def build_lake_watch(tables: Sequence[WatchedTable], restore_job, rebuild_job,
                     interval_seconds: int = 60) -> dg.SensorDefinition:
    @dg.sensor(name="lake_partition_watch", jobs=[restore_job, rebuild_job],
               minimum_interval_seconds=interval_seconds, default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"Every {interval_seconds} s: heal a lake partition whose data files are missing or "
               "damaged — from history when an earlier version holds the same rows, else from upstream.")
    def lake_partition_watch(context: dg.SensorEvaluationContext, lake: Lake) -> dg.SensorResult | dg.SkipReason:
        cursor = json.loads(context.cursor) if context.cursor else {}
        still, requests, notes = {}, [], []
        for table in tables:
            for damage in lake.damaged_partitions(table.layer, table.name):
                loss = f"heal-{table.label.replace('/', '.')}-{damage.day}-v{damage.version}"
                state = still[loss] = cursor.get(loss, {})
                tags = {"aegis/trigger": "lake_partition_watch", "aegis/heal_key": loss,
                        "aegis/lake_table": table.label, "aegis/partition": damage.day}
                if not state:
                    version = _same_rows_earlier(lake, table, damage.day, damage.version)
                    if version is not None:
                        requests.append(_restore_request(table, damage.day, version, loss, tags))
                    else:
                        requests.append(_rebuild_request(table, damage.day, loss, tags, rebuild_job.name))
                    state.update(mode="history" if version is not None else "rebuild", run_key=loss)
                    _alert(context, {"kind": "lake_partition_damaged", "table": table.label, "partition": damage.day,
                                     "version": damage.version, "problems": list(damage.problems)[:10],
                                     "healing": (f"restore from version {version} (same rows)" if version is not None
                                                 else "re-materialise from upstream")})
                elif state["mode"] == "history" and _failed(context, state["run_key"]):
                    state.update(mode="rebuild", run_key=f"{loss}-rebuild")
                    requests.append(_rebuild_request(table, damage.day, state["run_key"], tags, rebuild_job.name))
                else:
                    notes.append(f"{table.label} date={damage.day}: healing ({state['mode']}, run key "
                                 f"{state['run_key']})")
        if requests:
            return dg.SensorResult(run_requests=requests, cursor=json.dumps(still))
        context.update_cursor(json.dumps(still))
        return dg.SkipReason("; ".join(notes) or f"every partition of {len(tables)} lake tables intact")

    return lake_partition_watch


def _failed(context: dg.SensorEvaluationContext, run_key: str) -> bool:
    runs = context.instance.get_runs(dg.RunsFilter(tags={"dagster/run_key": run_key}), limit=1)
    return bool(runs) and runs[0].status == dg.DagsterRunStatus.FAILURE

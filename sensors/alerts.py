"""quality_alerts: one alert per failed run and per failed asset check.

A failed asset check does not fail its run, so run-failure sensors never see it. This sensor reads, since
its cursor, the runs that failed and the verdicts the checks recorded (resources/gate_verdicts.py), and
raises an alert for each failed run and each failed or warned check evaluation — public Dagster API only:
always a structured log line (`AEGIS_ALERT {json}`), and a JSON POST to
`AEGIS_ALERT_WEBHOOK_URL` when it is set, retried with backoff. Alerts the webhook did not take wait in
the cursor (bounded) for the next tick, so a dead webhook delays alerts but never breaks the sensor.
"""

import json
import os
import urllib.error
import urllib.request
from collections.abc import Sequence

import dagster as dg
import tenacity

from resources import gate_verdicts as verdicts

WEBHOOK_VAR = "AEGIS_ALERT_WEBHOOK_URL"
RECORDS_PER_TICK = 100
PENDING_LIMIT = 200  # undelivered alerts kept for later ticks; the oldest beyond this are dropped (logged)
ATTEMPTS = 3
BACKOFF_SECONDS = 0.5  # doubled after each failed attempt
TIMEOUT_SECONDS = 3


def run_failure_alert(instance: dg.DagsterInstance, run_id: str, message: str) -> dict:
    run = instance.get_run_by_id(run_id)
    return {"kind": "run_failed", "run_id": run_id, "job": run.job_name if run else None,
            "partition": (run.tags.get("dagster/partition") if run else None), "message": message[:500]}


def check_failure_alerts(found: Sequence[verdicts.Verdict]) -> list[dict]:
    """One alert per failed (or warned) check evaluation, and per failed materialisation the run survived."""
    alerts = []
    for v in found:
        if v.verdict == verdicts.PASSED:
            continue
        if v.check == verdicts.MATERIALISATION:
            alerts.append({"kind": "asset_materialization_failed", "run_id": v.run_id,
                           "asset": v.asset_key.to_user_string(), "partition": v.partition,
                           "description": v.reason[:500]})
        else:
            alerts.append({"kind": "asset_check_failed", "run_id": v.run_id, "asset": v.asset_key.to_user_string(),
                           "check": v.check, "severity": "ERROR" if v.verdict == verdicts.FAILED else "WARN",
                           "partition": v.partition, "description": v.reason[:500]})
    return alerts


def post(url: str, alert: dict) -> bool:
    """POST one alert, retried with exponential backoff and jitter (tenacity); True when the webhook answered
    2xx within ATTEMPTS tries."""
    body = json.dumps(alert, sort_keys=True).encode()

    def send() -> bool:
        request = urllib.request.Request(url, body, {"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            return 200 <= response.status < 300

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(ATTEMPTS), reraise=True,
        wait=tenacity.wait_exponential_jitter(initial=BACKOFF_SECONDS, max=4 * BACKOFF_SECONDS),
        retry=tenacity.retry_if_exception_type((urllib.error.URLError, OSError, ValueError))
        | tenacity.retry_if_result(lambda delivered: not delivered))
    try:
        return retrying(send)
    except (urllib.error.URLError, OSError, ValueError, tenacity.RetryError):
        return False


def build_alert_sensor(checked: Sequence[dg.AssetKey] = (), interval_seconds: int = 30) -> dg.SensorDefinition:
    """Alerts on failed runs (run status changes) and on failed checks of the `checked` assets (the verdicts
    their checks record, resources/gate_verdicts.py): public Dagster API only."""

    @dg.sensor(name="quality_alerts", minimum_interval_seconds=interval_seconds,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="One alert per failed run and per failed asset check (which never fails a run): "
               f"a structured log line, and a POST to {WEBHOOK_VAR} when set.")
    def quality_alerts(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        state = json.loads(context.cursor) if context.cursor else {"failure": None, "pending": [],
                                                                    "caught_up": False}
        alerts: list[dict] = []
        result = context.instance.fetch_run_status_changes(dg.DagsterEventType.RUN_FAILURE, limit=RECORDS_PER_TICK,
                                                           cursor=state["failure"], ascending=True)
        for record in result.records:
            message = record.event_log_entry.dagster_event.message or "run failed"
            alerts.append(run_failure_alert(context.instance, record.event_log_entry.run_id, message))
        state["failure"] = result.cursor or state["failure"]
        found = verdicts.since(context.instance, checked, state.get("verdicts"), limit=RECORDS_PER_TICK)
        if found:
            state["verdicts"] = found[-1].storage_id
        alerts.extend(check_failure_alerts(found))
        if not state["caught_up"]:  # the first ticks only skip past history: alerts start from now
            state["caught_up"] = len(result.records) < RECORDS_PER_TICK and len(found) < RECORDS_PER_TICK
            context.update_cursor(json.dumps(state))
            return dg.SkipReason("caught up with past runs; alerting from now on")
        for alert in alerts:
            context.log.error("AEGIS_ALERT " + json.dumps(alert, sort_keys=True))
        pending = state["pending"] + alerts
        url = os.environ.get(WEBHOOK_VAR)
        delivered = 0
        if url:
            while pending and post(url, pending[0]):
                pending.pop(0)
                delivered += 1
            if pending:
                context.log.warning(f"alert webhook ({WEBHOOK_VAR}) unreachable; {len(pending)} alert(s) "
                                    "will be retried next tick")
        else:
            pending = []
        if len(pending) > PENDING_LIMIT:
            context.log.error(f"dropping {len(pending) - PENDING_LIMIT} undelivered alert(s) (all were logged)")
            pending = pending[-PENDING_LIMIT:]
        state["pending"] = pending
        context.update_cursor(json.dumps(state))
        return dg.SkipReason(f"{len(alerts)} new alert(s), {delivered} delivered, {len(pending)} waiting")

    return quality_alerts

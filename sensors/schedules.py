"""The clocks that remain (UTC): a checkpoint of every source table every hour, and every quality check of
the daily layers re-run at 23:30 for the latest complete day. The daily layers themselves run by declarative
automation (platform_assets/automation.py), not by schedules.
"""

import datetime as dt
from collections.abc import Sequence

import dagster as dg

from sensors.jobs import checkpoint_job, quality_checks_job

RUNNING = dg.DefaultScheduleStatus.RUNNING

schedules = [
    dg.ScheduleDefinition(name="checkpoints_hourly", job=checkpoint_job, cron_schedule="0 * * * *",
                          default_status=RUNNING, description="RPO < 1 h: a checkpoint of every source table."),
]


def build_quality_recheck(check_keys: Sequence[dg.AssetCheckKey]) -> dg.ScheduleDefinition:
    """quality_checks_2330: every check of the daily layers (given: `check_keys`), none of their assets, for the
    latest complete day."""
    keys = sorted(check_keys, key=str)

    @dg.schedule(name="quality_checks_2330", job=quality_checks_job, cron_schedule="30 23 * * *",
                 execution_timezone="UTC", default_status=RUNNING,
                 description="Re-runs every check of the daily layers (not their assets) for the latest complete "
                 "day.")
    def quality_checks_2330(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        day = (context.scheduled_execution_time.astimezone(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
        return dg.RunRequest(run_key=f"quality-checks-{day}", partition_key=day, asset_selection=[],
                             asset_check_keys=keys)

    return quality_checks_2330

"""When each layer runs (UTC), always for the latest complete day.

Ingest runs twice: 08:00 lands yesterday, 20:00 lands it again to pick up late rows (idempotent).
Checkpoints are taken every hour, on the hour; every quality check is re-run at 23:30.
"""

import datetime as dt
from collections.abc import Sequence

import dagster as dg

from sensors.jobs import checkpoint_job, ingest_job, publish_job, quality_checks_job, transform_job

RUNNING = dg.DefaultScheduleStatus.RUNNING

schedules = [
    dg.build_schedule_from_partitioned_job(ingest_job, name="ingest_0800", hour_of_day=8, minute_of_hour=0,
                                           default_status=RUNNING),
    dg.build_schedule_from_partitioned_job(ingest_job, name="ingest_2000", hour_of_day=20, minute_of_hour=0,
                                           default_status=RUNNING),
    dg.build_schedule_from_partitioned_job(transform_job, name="transform_2200", hour_of_day=22,
                                           minute_of_hour=0, default_status=RUNNING),
    dg.build_schedule_from_partitioned_job(publish_job, name="publish_2300", hour_of_day=23, minute_of_hour=0,
                                           default_status=RUNNING),
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

"""When each layer runs (UTC), always for the latest complete day.

Ingest runs twice: 08:00 lands yesterday, 20:00 lands it again to pick up late rows (idempotent).
Checkpoints are taken every hour, on the hour.
"""

import dagster as dg

from sensors.jobs import checkpoint_job, ingest_job, publish_job, transform_job

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

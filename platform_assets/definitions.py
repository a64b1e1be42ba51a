"""The one place that assembles the code location: every layer's assets, checks, jobs, schedules,
sensors and resources."""

import os

import dagster as dg

from platform_assets.lake import maintenance as lake_maintenance
from platform_assets.lake.catalogue import LAKE_TABLES
from platform_assets.lake.restore import lake_restore_job
from platform_assets.layers import bronze, checks, gold, reports, serving, silver, source
from platform_assets.macro import checks as macro_checks
from platform_assets.macro import indicators as macro
from platform_assets.protection import capture_assets
from platform_assets.protection import loaded as protection
from platform_assets.quality import gates
from platform_assets.quality.automation import automation_sensor
from platform_assets.security import assets as security
from platform_assets.security import erasure, key_rotation
from resources import CheckpointStore, Lake, PiiMasker, RecoveryPolicy, SourceDatabase, SyntheticVolume, Warehouse
from resources.execution import executor_from_env
from resources.http.macro_api import DEFAULT_URL, MacroSeriesApi
from resources.lake.settings import retention_from_env
from sensors.alerts import build_alert_sensor
from sensors.capture_watch import build_capture_watch
from sensors.jobs import checkpoint_job, jobs, lake_rebuild_job, recovery_job
from sensors.lake_watch import build_lake_watch
from sensors.schedules import build_quality_recheck, schedules
from sensors.source_watch import build_source_watch

assets = [*source.assets, *bronze.assets, *silver.assets, *gold.assets, *macro.assets, *serving.assets, *reports.assets,
          *protection.checkpoints, *protection.recoveries, protection.log, *lake_maintenance.assets, gates.gate_log,
          *security.assets, erasure.erasure_log, capture_assets.change_log]
gates.use_code_location(assets)  # gates judge every ancestor of a day, in any run
daily_checks = [*checks.checks, *macro_checks.checks]  # checkpoints verify what they wrote in their own step
asset_checks = [*daily_checks, *security.checks, capture_assets.rpo_within_target]
recovery_policy = RecoveryPolicy.from_env()  # AEGIS_WATCH_INTERVAL_SECONDS, AEGIS_SHRINK_ALERT_SHARE, …
resolution = protection.RESOLUTION
sensors = [build_source_watch(resolution.tables, recovery_job, recovery_policy, resolution.empty_patterns,
                              protection.GROUPS, resolution.notes, resolution.retired),
           build_alert_sensor(sorted({spec.asset_key for definition in [*asset_checks, *protection.checkpoints]
                                      for spec in definition.check_specs}, key=str)),
           automation_sensor(),
           build_capture_watch(resolution.tables, checkpoint_job,
                               int(os.environ.get("AEGIS_CAPTURE_WATCH_INTERVAL_SECONDS", "15"))),
           build_lake_watch(LAKE_TABLES, lake_restore_job, lake_rebuild_job,
                            int(os.environ.get("AEGIS_LAKE_WATCH_INTERVAL_SECONDS", "60")))]

quality_recheck = build_quality_recheck([key for check in daily_checks for key in check.check_keys])

lake = Lake(url=dg.EnvVar("AEGIS_LAKE_URL"), retention_hours=retention_from_env())
resources = {
    "source_db": SourceDatabase(url=dg.EnvVar("AEGIS_SOURCE_URL")),
    "lake": lake,
    "warehouse": Warehouse(url=dg.EnvVar("AEGIS_WAREHOUSE_URL"),
                           writer_role=os.environ.get("AEGIS_WRITER_ROLE") or "aegis_writer"),
    "masker": PiiMasker(key=dg.EnvVar("AEGIS_PII_KEY")),
    "volume": SyntheticVolume(rows_per_day=dg.EnvVar.int("AEGIS_ROWS_PER_DAY")),
    "checkpoints": CheckpointStore(lake=lake),  # AEGIS_CHECKPOINT_KEY, if set, is read when used
    "recovery_policy": recovery_policy,
    "macro_api": MacroSeriesApi(lake=lake, base_url=os.environ.get(MacroSeriesApi.ENV_VAR) or DEFAULT_URL),
}

# By default every run executes its steps in its own process, one after the other: on two cores a process per
# step cost minutes (a day from the UI: 219 s with the default multiprocess executor, 101-115 s with a preloading
# forkserver, 18-22 s in process; see README "Fast from the UI"). AEGIS_EXECUTOR=celery sends them to workers.
defs = dg.Definitions(assets=assets, asset_checks=asset_checks,
                      jobs=[*jobs, *protection.restore_jobs, *protection.rewind_jobs, lake_restore_job,
                            lake_maintenance.maintenance_job,
                            *key_rotation.jobs, erasure.forget_customer],
                      schedules=[*schedules, quality_recheck, lake_maintenance.maintenance_schedule],
                      sensors=sensors, resources=resources, executor=executor_from_env())

"""Partitioned jobs over the medallion layers, selected by asset group."""

import dagster as dg

from resources.execution import restore_executor

ingest_job = dg.define_asset_job(
    "ingest_job", selection=dg.AssetSelection.groups("source", "bronze"),
    description="Source systems write the day; bronze lands it raw in the lake.",
)
transform_job = dg.define_asset_job(
    "transform_job", selection=dg.AssetSelection.groups("silver", "gold"),
    description="Silver cleans and masks; gold aggregates.",
)
publish_job = dg.define_asset_job(
    "publish_job", selection=dg.AssetSelection.groups("serving", "reports"),
    description="Gold goes to the warehouse; the reports are rebuilt from it.",
)

checkpoint_job = dg.define_asset_job(
    "checkpoint_job", selection=dg.AssetSelection.groups("checkpoints"),
    description="A verified checkpoint of every source table.",
)
recovery_job = dg.define_asset_job(
    "recovery_job", selection=dg.AssetSelection.groups("recovery"),
    # one process unless AEGIS_RESTORE_EXECUTOR says otherwise: a restore must not wait for a second Python
    executor_def=restore_executor(),
    description="Restores source tables; launched by source_table_watch with the lost table selected.",
)

lake_rebuild_job = dg.define_asset_job(
    "lake_rebuild_job", selection=dg.AssetSelection.groups("bronze", "silver", "gold"),
    executor_def=restore_executor(),
    description="Re-materialises one damaged lake partition from its upstream; launched by lake_partition_watch "
    "with the table's assets selected.",
)

DAILY_LAYERS = ("bronze", "silver", "gold", "serving")
quality_checks_job = dg.define_asset_job(
    "quality_checks_job", selection=dg.AssetSelection.groups(*DAILY_LAYERS),
    description="The daily layers with their checks. Its schedule (quality_checks_2330) launches only the "
    "checks, for the latest day; a check-only job cannot carry partitions in Dagster 1.13.",
)

jobs = [ingest_job, transform_job, publish_job, checkpoint_job, recovery_job, quality_checks_job, lake_rebuild_job]


"""Partitioned jobs over the medallion layers, selected by asset group."""

import dagster as dg

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

jobs = [ingest_job, transform_job, publish_job]

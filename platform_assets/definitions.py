"""The one place that assembles the code location: every layer's assets, jobs, schedules, resources."""

import dagster as dg

from platform_assets import bronze, gold, reports, serving, silver, source
from resources import Lake, PiiMasker, SourceDatabase, SyntheticVolume, Warehouse
from sensors.jobs import jobs
from sensors.schedules import schedules

assets = [*source.assets, *bronze.assets, *silver.assets, *gold.assets, *serving.assets, *reports.assets]

resources = {
    "source_db": SourceDatabase(url=dg.EnvVar("AEGIS_SOURCE_URL")),
    "lake": Lake(url=dg.EnvVar("AEGIS_LAKE_URL")),
    "warehouse": Warehouse(url=dg.EnvVar("AEGIS_WAREHOUSE_URL")),
    "masker": PiiMasker(key=dg.EnvVar("AEGIS_PII_KEY")),
    "volume": SyntheticVolume(rows_per_day=dg.EnvVar.int("AEGIS_ROWS_PER_DAY")),
}

defs = dg.Definitions(assets=assets, jobs=jobs, schedules=schedules, resources=resources)

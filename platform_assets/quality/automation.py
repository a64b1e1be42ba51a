"""When the daily layers run: declarative automation conditions, evaluated by the `daily_layers_automation`
sensor (RUNNING by default), instead of clock schedules.

- The source systems are read at 08:00 and 20:00 UTC (the evening run picks up late rows): source and bronze
  run on that clock — bronze also as soon as a source day is (re)delivered; the macro series (an external API)
  on that clock too, and as soon as the latest day is missing.
- Every later layer (silver + quarantine, gold, serving, reports) runs as soon as its day's upstream was
  updated and every blocking check of that upstream passed, so the documented rhythm (silver and gold by
  22:00, serving by 23:00) is the latest time by which each happens, not a wait. A day whose upstream failed a
  blocking check is not requested (and a run launched any other way is refused by the gate, gates.py).
Clocks remain only where a clock is the trigger: hourly checkpoints, the 23:30 re-check, 03:00 lake upkeep.
"""

import os

import dagster as dg

INGEST_CRON = "0 8,20 * * *"
INTERVAL_VAR = "AEGIS_AUTOMATION_INTERVAL_SECONDS"

source_condition = dg.AutomationCondition.on_cron(INGEST_CRON, "UTC")
# an external source (the macro series): on the same clock, and as soon as the latest day is missing
external_condition = source_condition | dg.AutomationCondition.on_missing()
ingest_condition = dg.AutomationCondition.on_cron(INGEST_CRON, "UTC") | dg.AutomationCondition.eager()
downstream_condition = dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()


def automation_sensor() -> dg.AutomationConditionSensorDefinition:
    interval = int(os.environ.get(INTERVAL_VAR, "30"))
    return dg.AutomationConditionSensorDefinition(
        "daily_layers_automation", target=dg.AssetSelection.groups("source", "bronze", "silver", "gold", "serving",
                                                                   "reports", "security"),
        default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=interval,
        description=f"Every {interval} s: materialises the latest day of each daily layer when its upstream is "
        "fresh and clean (source and bronze at 08:00 and 20:00 UTC).")

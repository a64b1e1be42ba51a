"""One calendar: daily partitions (UTC) from the platform's first day up to yesterday."""

import dagster as dg

FIRST_DAY = "2025-01-01"
daily = dg.DailyPartitionsDefinition(start_date=FIRST_DAY, timezone="UTC")

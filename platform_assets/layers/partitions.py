"""One calendar: daily partitions (UTC) from the platform's first day up to yesterday, and how fresh the
daily layers must stay given their schedules."""

import datetime as dt

import dagster as dg

FIRST_DAY = "2025-01-01"
daily = dg.DailyPartitionsDefinition(start_date=FIRST_DAY, timezone="UTC")

# gold (22:00) and serving (23:00) are rebuilt once a day: late after a missed run (+1 h), failing after +3 h
daily_freshness = dg.FreshnessPolicy.time_window(fail_window=dt.timedelta(hours=27),
                                                 warn_window=dt.timedelta(hours=25))

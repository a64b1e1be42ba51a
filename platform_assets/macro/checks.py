"""Checks of the macro flow: bronze says whether its data is fresh (WARN) and that every series answered; silver
meets its suite and accounts for every bronze row; gold/sales_vs_inflation adds up to the daily sales it read.
Its gold suite and the serving check come with the other served tables (quality.py)."""

import datetime as dt

import dagster as dg

from platform_assets.layers.inflation import periods
from platform_assets.layers.partitions import daily
from platform_assets.macro.indicators import BRONZE, GOLD, SILVER
from platform_assets.macro.series import API, NAME
from platform_assets.quality import expectations as ex
from platform_assets.quality.gates import gated
from resources import Lake
from resources.http.macro_api import SERIES

SILVER_SUITE = (ex.expect_unique(("series", "reference_date")), ex.expect_in_set("series", SERIES),
                ex.expect_not_null("reference_date"), ex.expect_not_null("value"))


@dg.asset_check(asset=BRONZE, name="macro_data_is_fresh", blocking=False, partitions_def=daily,
                description="WARN when a series of the day was served from an earlier answer because the API was "
                "unavailable: which series, how old, and why.")
@gated
def macro_data_is_fresh(context: dg.AssetCheckExecutionContext, lake: Lake) -> dg.AssetCheckResult:
    bronze = lake.read_partition("bronze", NAME, context.partition_key,
                                 columns=["series", "_source", "_fetched_at", "_fallback_reason"])
    now = dt.datetime.now(dt.UTC)
    stale = {}
    for row in bronze.to_pylist():
        if row["_source"] != API:
            stale[row["series"]] = (row["_fetched_at"], row["_fallback_reason"] or "")
    lines = [f"{series} served from the answer fetched {at:%Y-%m-%d %H:%M} UTC "
             f"({(now - at).total_seconds() / 3600:.1f} h old) because: {reason[:200]}"
             for series, (at, reason) in sorted(stale.items())]
    oldest = max(((now - at).total_seconds() / 3600 for at, _ in stale.values()), default=0.0)
    return dg.AssetCheckResult(
        passed=not stale, severity=dg.AssetCheckSeverity.WARN,
        description="; ".join(lines) or "every series fetched from the API in this materialisation",
        metadata={"stale_series": dg.MetadataValue.json(sorted(stale)), "stale_hours": round(oldest, 1)})


@dg.asset_check(asset=BRONZE, name="every_series_answered", blocking=True, partitions_def=daily,
                description="Each series (IPCA, Selic target) has observations for the day's window.")
@gated
def every_series_answered(context: dg.AssetCheckExecutionContext, lake: Lake) -> dg.AssetCheckResult:
    rows = lake.read_partition("bronze", NAME, context.partition_key, columns=["series"])["series"].to_pylist()
    counts = {series: rows.count(series) for series in SERIES}
    empty = [s for s, n in counts.items() if not n]
    return dg.AssetCheckResult(passed=not empty, severity=dg.AssetCheckSeverity.ERROR,
                               description=f"no observations of {', '.join(empty)}" if empty else "all answered",
                               metadata={"observations": dg.MetadataValue.json(counts)})


@dg.asset_check(asset=SILVER, name="expectations", blocking=True, partitions_def=daily,
                description=f"Great Expectations on the typed series: one value per series and date, all present; "
                f"and at most {ex.TOLERANCE:.0%} of the day's observations quarantined.")
@gated
def silver_expectations(context: dg.AssetCheckExecutionContext, lake: Lake) -> dg.AssetCheckResult:
    day = context.partition_key
    clean = lake.read_partition("silver", NAME, day)
    quarantined = lake.partition_stats("silver/quarantine", NAME, day).rows
    share = quarantined / max(clean.num_rows + quarantined, 1)
    result = ex.suite_result({"silver rows (strict)": ex.validate(ex.to_frame(clean), ex.gold_suite(SILVER_SUITE),
                                                                f"silver_{NAME}")},
                           quarantined=quarantined, quarantined_share=round(share, 4))
    if share > ex.TOLERANCE:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR,
                                   description=f"{quarantined} of {clean.num_rows + quarantined} observations "
                                   f"quarantined ({share:.1%} > {ex.TOLERANCE:.0%}); " + (result.description or ""),
                                   metadata=result.metadata)
    return result


@dg.asset_check(asset=SILVER, name="rows_reconcile", blocking=True, partitions_def=daily,
                description="Nothing dropped silently: bronze rows = silver rows + quarantined rows.")
@gated
def silver_rows_reconcile(context: dg.AssetCheckExecutionContext, lake: Lake) -> dg.AssetCheckResult:
    day = context.partition_key
    bronze, silver, quarantined = (lake.partition_stats(layer, NAME, day).rows
                                   for layer in ("bronze", "silver", "silver/quarantine"))
    return dg.AssetCheckResult(passed=bronze == silver + quarantined, severity=dg.AssetCheckSeverity.ERROR,
                               metadata={"bronze_rows": bronze, "silver_rows": silver, "quarantined": quarantined})


@dg.asset_check(asset=GOLD, name="matches_daily_sales", blocking=True, partitions_def=daily,
                description="The month-to-date revenue of every category adds up to the daily revenue of "
                "gold/sales_by_category_daily over the same days (no category lost in the join).")
@gated
def matches_daily_sales(context: dg.AssetCheckExecutionContext, lake: Lake) -> dg.AssetCheckResult:
    day = context.partition_key
    month, *_ = periods(day)
    gold = lake.read_partition("gold", GOLD.path[-1], day, columns=["revenue_mtd"])
    daily_sales = lake.read_days("gold", "sales_by_category_daily", month.isoformat(), day, columns=["revenue"])
    have, want = sum(gold["revenue_mtd"].to_pylist()), sum(daily_sales["revenue"].to_pylist())
    tolerance = 0.005 * gold.num_rows + 1e-9 * abs(want)  # each month-to-date total is rounded to the cent
    return dg.AssetCheckResult(passed=abs(have - want) <= tolerance, severity=dg.AssetCheckSeverity.ERROR,
                               metadata={"gold_revenue_mtd": have, "daily_revenue": want, "difference": have - want})


checks = [macro_data_is_fresh, every_series_answered, silver_expectations, silver_rows_reconcile,
          matches_daily_sales]

"""reports/*: the infra audit and the executive dashboard, built from the served warehouse tables."""


import base64
import datetime as dt

import dagster as dg

from platform_assets.layers.audit import audit_markdown, bottlenecks
from platform_assets.layers.dashboard import render_dashboard
from platform_assets.layers.metadata import stopwatch
from platform_assets.layers.partitions import daily
from platform_assets.layers.serving import DAY_COLUMN
from platform_assets.quality import gates
from platform_assets.quality.automation import downstream_condition
from resources import Lake, Warehouse

TREND_DAYS = 14


@dg.asset(
    key=["reports", "infra_audit"],
    deps=[dg.AssetKey(["serving", "server_latency_daily"])],
    group_name="reports",
    partitions_def=daily,
    kinds={"markdown"},
    automation_condition=downstream_condition,
    description="Report: latency bottlenecks and the instability ranking of the day's servers (markdown).",
)
def infra_audit(context: dg.AssetExecutionContext, lake: Lake, warehouse: Warehouse) -> dg.MaterializeResult:
    day = context.partition_key
    gates.enforce(context)
    with stopwatch() as clock:
        latency = warehouse.read("server_latency_daily", DAY_COLUMN, day, day)
        report = audit_markdown(day, latency)
        path = lake.write_bytes("reports", "infra_audit", day, "infra_audit.md", report.encode())
    found = bottlenecks(latency)
    return dg.MaterializeResult(metadata={
        "report": dg.MetadataValue.md(report),
        "bottlenecks": dg.MetadataValue.int(len(found)),
        "servers": dg.MetadataValue.int(latency.num_rows),
        "dagster/row_count": dg.MetadataValue.int(latency.num_rows),
        "bytes": dg.MetadataValue.int(len(report.encode())),
        "seconds": dg.MetadataValue.float(clock["seconds"]),
        "path": dg.MetadataValue.path(path),
    })


# Read when it is there, never waited for: an outage of the macro API costs one panel, not the report — in separate
# runs and in one run alike. So it is not a dependency (a dependency whose step failed would skip the dashboard in
# the same run); the dashboard is drawn again when the panel's data arrives later.
INFLATION = dg.AssetKey(["serving", "sales_vs_inflation"])
_redraw_for_inflation = (dg.AutomationCondition.asset_matches(INFLATION, dg.AutomationCondition.newly_updated())
                         & dg.AutomationCondition.in_latest_time_window() & ~dg.AutomationCondition.any_deps_missing()
                         & ~dg.AutomationCondition.any_deps_in_progress() & ~dg.AutomationCondition.in_progress()
                         & dg.AutomationCondition.all_deps_blocking_checks_passed()).with_label(
    "macro panel data arrived")
_dashboard_condition = downstream_condition | _redraw_for_inflation


@dg.asset(
    key=["reports", "executive_dashboard"],
    deps=[*(dg.AssetKey(["serving", t]) for t in
            ("server_latency_daily", "sales_by_category_daily", "video_views_by_network_daily"))],
    group_name="reports",
    partitions_def=daily,
    kinds={"matplotlib"},
    automation_condition=_dashboard_condition,
    description="Report: a PNG for the executive team with HTTP status classes, latency by server, the sales "
    f"trend over {TREND_DAYS} days, views by network, and month-to-date sales growth nominal and real against "
    "IPCA and the Selic target (that panel only when serving.sales_vs_inflation has the day: read when it is "
    "there, never waited for, so a macro API outage costs one panel even in the run that failed to fetch it; the "
    "dashboard is drawn again when that day's macro data is served later).\n\n"
    "To see it, click [Show Markdown] beside 'dashboard' in the latest materialization: Dagster shows "
    "markdown metadata inline only under 1,000 characters and cannot serve files from the lake, so an image "
    "always takes that one click. The PNG is also saved in the lake (see 'path').",
)
def executive_dashboard(context: dg.AssetExecutionContext, lake: Lake, warehouse: Warehouse) -> dg.MaterializeResult:
    day = context.partition_key
    gates.enforce(context)
    first = (dt.date.fromisoformat(day) - dt.timedelta(days=TREND_DAYS - 1)).isoformat()
    with stopwatch() as clock:
        latency = warehouse.read("server_latency_daily", DAY_COLUMN, day, day)
        sales = warehouse.read("sales_by_category_daily", DAY_COLUMN, first, day)
        views = warehouse.read("video_views_by_network_daily", DAY_COLUMN, day, day)
        inflation = (warehouse.read(INFLATION.path[-1], DAY_COLUMN, day, day)
                     if warehouse.has_table(INFLATION.path[-1]) else None)
        png = render_dashboard(day, latency, sales, views, inflation)
        path = lake.write_bytes("reports", "executive_dashboard", day, "dashboard.png", png)
    image = base64.b64encode(png).decode()
    return dg.MaterializeResult(metadata={  # no row count: a picture has none
        "dashboard": dg.MetadataValue.md(f"![executive dashboard {day}](data:image/png;base64,{image})"),
        "servers": dg.MetadataValue.int(latency.num_rows),
        "sales_days": dg.MetadataValue.int(len(set(sales["day"].to_pylist()))),
        "networks": dg.MetadataValue.int(views.num_rows),
        "inflation_panel": dg.MetadataValue.bool(bool(inflation is not None and inflation.num_rows)),
        "bytes": dg.MetadataValue.int(len(png)),
        "seconds": dg.MetadataValue.float(clock["seconds"]),
        "path": dg.MetadataValue.path(path),
    })


assets = [infra_audit, executive_dashboard]

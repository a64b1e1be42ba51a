"""The executive dashboard as a PNG: status codes, latency by server, sales trend, views by network."""

from __future__ import annotations

import io

import pyarrow as pa


def render_dashboard(day: str, latency: pa.Table, sales: pa.Table, views: pa.Table,
                     inflation: pa.Table | None = None) -> bytes:
    """Five panels in one PNG. `sales` may span several days (the trend); the others are one day. `inflation`
    (serving.sales_vs_inflation of the day) is optional: without it its panel says so."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(18, 8.5), dpi=90)
    FigureCanvasAgg(fig)
    fig.suptitle(f"Aegis — executive dashboard, {day}", fontsize=15, fontweight="bold")
    (status_ax, latency_ax, growth_ax), (sales_ax, views_ax, rates_ax) = fig.subplots(2, 3)

    classes = ["status_2xx", "status_3xx", "status_4xx", "status_5xx"]
    totals = [sum(latency[c].to_pylist()) for c in classes]
    if sum(totals):
        status_ax.pie(totals, autopct="%1.1f%%", startangle=90, pctdistance=0.8,
                      colors=["#4caf50", "#2196f3", "#ff9800", "#f44336"])
        status_ax.legend([c[-3:] for c in classes], loc="center left", bbox_to_anchor=(0.95, 0.5))
    status_ax.set_title("HTTP status classes")

    order = sorted(latency.to_pylist(), key=lambda r: r["server"])
    x = range(len(order))
    for offset, (col, label) in enumerate([("p50_latency_ms", "p50"), ("p95_latency_ms", "p95"),
                                           ("p99_latency_ms", "p99")]):
        latency_ax.bar([i + (offset - 1) * 0.27 for i in x], [r[col] for r in order], width=0.27, label=label)
    latency_ax.set_xticks(list(x), [r["server"] for r in order], rotation=45, fontsize=8)
    latency_ax.set_ylabel("ms")
    latency_ax.set_title("Latency by server")
    latency_ax.legend()

    by_day: dict = {}
    for r in sales.to_pylist():
        by_day[r["day"]] = by_day.get(r["day"], 0.0) + r["revenue"]
    days = sorted(by_day)
    sales_ax.plot([f"{d:%m-%d}" for d in days], [by_day[d] / 1000 for d in days], marker="o", color="#3f51b5")
    sales_ax.set_title("Sales trend (revenue, thousands)")
    sales_ax.tick_params(axis="x", rotation=30, labelsize=8)
    sales_ax.grid(alpha=0.3)

    networks = sorted(views.to_pylist(), key=lambda r: -r["views"])
    views_ax.barh([r["social_network"] for r in networks], [r["views"] for r in networks], color="#009688")
    views_ax.invert_yaxis()
    views_ax.set_title("Video views by network")

    _inflation_panels(growth_ax, rates_ax, inflation)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _inflation_panels(growth_ax, rates_ax, inflation: pa.Table | None) -> None:
    """Nominal and real month-to-date growth per category, and the IPCA and Selic figures they rest on."""
    growth_ax.set_title("Sales growth vs same days last month (%)")
    rates_ax.axis("off")
    rows = [r for r in (inflation.to_pylist() if inflation is not None else []) if r["nominal_growth"] is not None]
    if not rows:
        growth_ax.text(0.5, 0.5, "no macro data served for this day:\nthe macro indicators did not arrive\n"
                       "(see bronze/macro_indicators); drawn again when they do", ha="center", va="center")
        growth_ax.set_axis_off()
        return
    rows.sort(key=lambda r: r["category"])
    x = range(len(rows))
    growth_ax.bar([i - 0.2 for i in x], [100 * r["nominal_growth"] for r in rows], width=0.4, label="nominal")
    growth_ax.bar([i + 0.2 for i in x], [100 * r["real_growth"] if r["real_growth"] is not None else 0 for r in rows],
                  width=0.4, label="real (IPCA)")
    growth_ax.axhline(0, color="black", linewidth=0.8)
    growth_ax.set_xticks(list(x), [r["category"] for r in rows], rotation=30, fontsize=8)
    growth_ax.legend()
    first = rows[0]
    rates_ax.text(0.02, 0.9, "\n".join([
        f"IPCA {first['ipca_month']:%m/%Y}: {float(first['ipca_pct']):.2f} % in the month",
        f"Selic target on {first['selic_date']:%d/%m/%Y}: {float(first['selic_target_pct']):.2f} % a year",
        f"Month-to-date revenue: {sum(r['revenue_mtd'] for r in rows) / 1000:,.1f} thousand",
    ]), va="top", fontsize=12, family="monospace")

"""Infra audit logic: which servers are bottlenecks on a day, and the ranking as markdown."""

from __future__ import annotations

import statistics

import pyarrow as pa

P95_FACTOR = 1.5  # p95 this many times the fleet median marks a latency bottleneck
ERROR_RATE_LIMIT = 0.02  # more than 2 % of requests failing with 5xx marks an error bottleneck


def bottlenecks(latency: pa.Table) -> list[dict]:
    """Servers whose p95 latency or 5xx rate stands out from the fleet on their day, with the reasons."""
    rows = latency.to_pylist()
    if not rows:
        return []
    median_p95 = statistics.median(r["p95_latency_ms"] for r in rows)
    found = []
    for r in sorted(rows, key=lambda r: r["instability_rank"]):
        reasons = []
        if r["p95_latency_ms"] > P95_FACTOR * median_p95:
            reasons.append(f"p95 {r['p95_latency_ms']:.0f} ms > {P95_FACTOR}x fleet median {median_p95:.0f} ms")
        if r["error_rate"] > ERROR_RATE_LIMIT:
            reasons.append(f"5xx rate {r['error_rate']:.1%} > {ERROR_RATE_LIMIT:.0%}")
        if reasons:
            found.append({"server": r["server"], "region": r["region"], "reasons": "; ".join(reasons)})
    return found


def audit_markdown(day: str, latency: pa.Table) -> str:
    """The audit report: instability ranking and bottlenecks, as markdown."""
    rows = sorted(latency.to_pylist(), key=lambda r: r["instability_rank"])
    lines = [
        f"# Infra audit — {day}", "",
        f"{len(rows)} servers, {sum(r['requests'] for r in rows):,} requests.", "",
        "## Instability ranking", "",
        "| rank | server | region | requests | p50 ms | p95 ms | p99 ms | 5xx rate | cpu % | score |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['instability_rank']} | {r['server']} | {r['region']} | {r['requests']:,} | "
            f"{r['p50_latency_ms']:.1f} | {r['p95_latency_ms']:.1f} | {r['p99_latency_ms']:.1f} | "
            f"{r['error_rate']:.2%} | {r['mean_cpu_pct']:.1f} | {r['instability_score']:.1f} |"
        )
    found = bottlenecks(latency)
    lines += ["", "## Bottlenecks", ""]
    lines += [f"- **{b['server']}** ({b['region']}): {b['reasons']}" for b in found] or ["None found."]
    return "\n".join(lines) + "\n"

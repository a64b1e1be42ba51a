"""A protected table's recent history, from the change log: inserts, updates, deletes and truncates per minute
(drawn as a chart) and its largest transactions, each a moment a user can restore to just before — named as a
partition key of the table's `rewind_<table>` job, so picking it in the launchpad is the whole restore request."""

from __future__ import annotations

import base64
import datetime as dt
import io
import re

import pyarrow as pa
import pyarrow.compute as pc

OPS = {"I": "inserts", "U": "updates", "D": "deletes", "T": "truncates"}
_MOMENT = re.compile(r"^\d{8}T\d{6}Z-before-xid-(\d+)$")


def moments_name(table_id: str) -> str:
    """The dynamic partitions of the table's `rewind_<table>` job: one per moment worth restoring to."""
    return f"moments_{table_id.replace('/', '__')}"


def moment_key(transaction: dict) -> str:
    return f"{transaction['commit_time'].astimezone(dt.UTC):%Y%m%dT%H%M%S}Z-before-xid-{transaction['xid']}"


def xid_of(key: str) -> int:
    match = _MOMENT.match(key)
    if not match:
        raise ValueError(f"{key!r} is not a moment of the change log (YYYYMMDDTHHMMSSZ-before-xid-N)")
    return int(match.group(1))


def per_minute(changes: pa.Table) -> list[dict]:
    """{minute, inserts, updates, deletes, truncates} for every minute with changes, oldest first."""
    if not changes.num_rows:
        return []
    minutes = pc.floor_temporal(changes["commit_time"], unit="minute")
    counted = pa.table({"minute": minutes, "op": changes["op"]}).group_by(["minute", "op"]).aggregate(
        [([], "count_all")]).to_pylist()
    found: dict = {}
    for row in counted:
        if row["op"] in OPS:
            found.setdefault(row["minute"], dict.fromkeys(OPS.values(), 0))[OPS[row["op"]]] += row["count_all"]
    return [{"minute": minute, **counts} for minute, counts in sorted(found.items())]


def chart_markdown(rows: list[dict], title: str) -> str:
    """The activity as a stacked bar chart, inline in markdown (as the executive dashboard is). matplotlib is
    imported here: every process that loads the code location would otherwise pay for it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axis = plt.subplots(figsize=(8, 2.6), dpi=90)
    bottom = [0] * len(rows)
    labels = [r["minute"].strftime("%H:%M") for r in rows]
    for name, colour in zip(OPS.values(), ("#2e7d32", "#1565c0", "#c62828", "#6a1b9a"), strict=True):
        values = [r[name] for r in rows]
        axis.bar(labels, values, bottom=bottom, label=name, color=colour)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    axis.set_title(title, fontsize=9)
    axis.set_ylabel("rows changed", fontsize=8)
    axis.tick_params(labelsize=7)
    axis.legend(fontsize=7, ncols=4, loc="upper left")
    if len(labels) > 12:
        axis.set_xticks(labels[:: max(1, len(labels) // 12)])
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return f"![{title}](data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()})"

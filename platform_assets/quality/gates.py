"""Quality gates that hold across runs: a day of an asset is not built from an upstream day whose blocking
check failed, whatever launched the run (schedule, automation, sensor, backfill, a click in the UI).

Dagster stops downstream assets after a failed blocking check only inside the run that evaluated it, and the
layers run in separate runs. So every blocking check also records its verdict for its day as an observation
of the checked asset (`record`), and every downstream asset starts by reading its upstream days' latest
verdicts (`enforce`): an ERROR failure stops the step with a message naming the upstream, the check, why it
failed and what to do. The block lifts when the check passes again (the upstream re-materialised and checked,
or the check re-run). An operator may override one gate deliberately with the run tag
`aegis/override_gate=<asset>:<check>` (comma-separated for several, e.g. `bronze/sales:schema_contract`);
every override is recorded on the `quality_gate_log` asset, shown in the UI.
"""

import datetime as dt
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dagster as dg

from resources import gate_verdicts as verdicts

OVERRIDE_TAG = "aegis/override_gate"
GATE_LOG = dg.AssetKey("quality_gate_log")


@dataclass(frozen=True)
class Block:
    upstream: dg.AssetKey
    check: str
    run_id: str
    reason: str
    at: dt.datetime

    @property
    def name(self) -> str:
        return f"{self.upstream.to_user_string()}:{self.check}"


def record(context: dg.AssetCheckExecutionContext, result: dg.AssetCheckResult) -> dg.AssetCheckResult:
    """Keep the verdict of a blocking check for its asset and day, where any later run can read it."""
    spec = context.check_specs[0]
    verdicts.record(context.instance, spec.asset_key, context.partition_key if context.has_partition_key else None,
                    spec.name, result, context.run.run_id)
    return result


def gated(check: Callable[..., dg.AssetCheckResult]) -> Callable[..., dg.AssetCheckResult]:
    """Apply under `@dg.asset_check(...)`: the check's verdict is recorded for later runs and for alerts."""

    @functools.wraps(check)
    def recorded(context: dg.AssetCheckExecutionContext, *args, **kwargs) -> dg.AssetCheckResult:
        return record(context, check(context, *args, **kwargs))

    return recorded


def blocks(instance: dg.DagsterInstance, upstream: Sequence[dg.AssetKey], day: str) -> list[Block]:
    return [Block(key, v.check, v.run_id, v.reason, v.at) for key in upstream
            for v in sorted(verdicts.latest(instance, key, day).values(), key=lambda v: v.check)
            if v.verdict == verdicts.FAILED]


def overridden(tags: dict[str, str]) -> set[str]:
    return {name.strip() for name in tags.get(OVERRIDE_TAG, "").split(",") if name.strip()}


def use_code_location(assets: Sequence[object]) -> None:
    """definitions.py hands the assembled graph over: every gate judges all the ancestors of its day in the code
    location, whatever subset of it a run materialises (the layer modules cannot import definitions.py: it
    imports them)."""
    _location[:] = [a for a in assets if isinstance(a, dg.AssetsDefinition)]
    _ancestors.clear()


def ancestors(key: dg.AssetKey) -> frozenset[dg.AssetKey]:
    """Every asset upstream of `key` (transitively): a failed gate anywhere above a day blocks it, not only one
    step above."""
    if key not in _ancestors:
        _ancestors[key] = frozenset(dg.AssetSelection.assets(key).upstream(include_self=False).resolve(_location))
    return _ancestors[key]


_location: list[dg.AssetsDefinition] = []
_ancestors: dict[dg.AssetKey, frozenset[dg.AssetKey]] = {}


def enforce(context: dg.AssetExecutionContext) -> None:
    """Stop this step when a blocking check of an upstream day failed and no override names it; audit
    overrides."""
    day = context.partition_key
    deps = {d for k in context.selected_asset_keys for d in context.assets_def.asset_deps[k]}
    upstream = sorted(deps.union(*(ancestors(k) for k in deps if _location)), key=str)
    found = blocks(context.instance, upstream, day)
    allowed = overridden(context.run.tags)
    for block in found:
        if block.name in allowed:
            _audit(context, block, day)
    refused = [b for b in found if b.name not in allowed]
    if not refused:
        return
    targets = ", ".join(k.to_user_string() for k in sorted(context.selected_asset_keys, key=str))
    lines = [f"- {b.name} failed for {day} (run {b.run_id[:8]}, {b.at:%Y-%m-%d %H:%M} UTC): {b.reason[:300]}"
             for b in refused]
    raise dg.Failure(
        description=f"Quality gate: {targets} for {day} is not built from upstream data that failed a blocking "
        "check:\n" + "\n".join(lines) + "\nFix the upstream data and re-materialise the upstream asset for this "
        "day (its checks run with it), or re-run the failed check once the data is right. To build anyway, "
        f"launch with the run tag {OVERRIDE_TAG}=" + ",".join(b.name for b in refused) + " (audited on "
        "quality_gate_log).",
        metadata={"blocked_by": dg.MetadataValue.json([b.name for b in refused]), "partition": day},
        allow_retries=False)


def _audit(context: dg.AssetExecutionContext, block: Block, day: str) -> None:
    targets = ", ".join(k.to_user_string() for k in sorted(context.selected_asset_keys, key=str))
    context.log.warning(f"quality gate {block.name} for {day} OVERRIDDEN by the run tag {OVERRIDE_TAG}: building "
                        f"{targets} from data that failed: {block.reason[:300]}")
    context.log_event(dg.AssetMaterialization(asset_key=GATE_LOG, metadata={
        "overridden_gate": dg.MetadataValue.text(block.name),
        "partition": dg.MetadataValue.text(day),
        "built_anyway": dg.MetadataValue.text(targets),
        "failed_because": dg.MetadataValue.text(block.reason[:1000]),
        "failed_in_run": dg.MetadataValue.text(block.run_id),
        "override_run": dg.MetadataValue.text(context.run_id),
        "launched_by": dg.MetadataValue.text(context.run.tags.get("dagster/user")
                                             or context.run.tags.get("dagster/schedule_name")
                                             or context.run.tags.get("dagster/sensor_name") or "unknown"),
        "at (UTC)": dg.MetadataValue.text(dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")),
    }))


gate_log = dg.AssetSpec(
    GATE_LOG, group_name="quality",
    description="Quality gate log: every deliberate override of a failed blocking check (run tag "
    "aegis/override_gate) — which gate, which day, what was built anyway, why the check had failed, which run. "
    "Reported by the overriding run; not materialised by hand.",
)

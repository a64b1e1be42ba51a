"""Verdicts of blocking quality checks, kept where any later run and any sensor can read them.

Each evaluation is an observation of the checked asset's day on the Dagster instance, written and read
through public API only (`report_runless_asset_event`, `fetch_observations`): the quality gates read the
latest verdict per check of an upstream day; the alert sensor reads every verdict since its cursor.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg

CHECK, VERDICT, RUN, REASON = "aegis/gate_check", "aegis/gate_verdict", "aegis/gate_run_id", "aegis/gate_reason"
PASSED, WARNED, FAILED = "passed", "warned", "failed"
MATERIALISATION, NOT_MATERIALISED = "(materialisation)", "not materialised"  # a step that failed, run went on
RECENT = 200  # observations looked at per asset and day


@dataclass(frozen=True)
class Verdict:
    asset_key: dg.AssetKey
    partition: str | None
    check: str
    verdict: str  # passed | warned | failed (ERROR)
    run_id: str
    reason: str
    at: dt.datetime
    storage_id: int


def record(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None, check: str,
           result: dg.AssetCheckResult, run_id: str) -> None:
    verdict = PASSED if result.passed else (WARNED if result.severity == dg.AssetCheckSeverity.WARN else FAILED)
    instance.report_runless_asset_event(dg.AssetObservation(asset_key=key, partition=partition, metadata={
        CHECK: check, VERDICT: verdict, RUN: run_id, REASON: (result.description or "")[:1000]}))


def record_failed_materialisation(instance: dg.DagsterInstance, keys: Sequence[dg.AssetKey], partition: str | None,
                                  run_id: str, reason: str) -> None:
    """A materialisation that failed in a run that goes on (the step is retried): alerted like a failed check,
    never a gate."""
    for key in keys:
        instance.report_runless_asset_event(dg.AssetObservation(asset_key=key, partition=partition, metadata={
            CHECK: MATERIALISATION, VERDICT: NOT_MATERIALISED, RUN: run_id, REASON: reason[:1000]}))


def _verdicts(records) -> list[Verdict]:
    found = []
    for entry in records:
        observation = entry.asset_observation
        metadata = observation.metadata
        if CHECK in metadata:
            found.append(Verdict(observation.asset_key, observation.partition, metadata[CHECK].value,
                                 metadata[VERDICT].value, metadata[RUN].value, metadata[REASON].value,
                                 dt.datetime.fromtimestamp(entry.timestamp, dt.UTC), entry.storage_id))
    return found


def latest(instance: dg.DagsterInstance, key: dg.AssetKey, day: str) -> dict[str, Verdict]:
    """The newest verdict of each check of `key` for `day`."""
    records = instance.fetch_observations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[day]),
                                          limit=RECENT).records
    newest: dict[str, Verdict] = {}
    for verdict in _verdicts(records):  # newest first
        newest.setdefault(verdict.check, verdict)
    return newest


def since(instance: dg.DagsterInstance, keys: Sequence[dg.AssetKey], after: int | None,
          limit: int = 100) -> list[Verdict]:
    """Every verdict on `keys` recorded after storage id `after`, oldest first."""
    found = []
    for key in keys:
        records = instance.fetch_observations(dg.AssetRecordsFilter(asset_key=key, after_storage_id=after),
                                              limit=limit, ascending=True).records
        found += _verdicts(records)
    return sorted(found, key=lambda v: v.storage_id)

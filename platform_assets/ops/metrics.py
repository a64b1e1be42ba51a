"""`make metrics`: Prometheus / OpenMetrics metrics on a local port (prometheus-client), read at each scrape from
the lake and the Dagster instance (DAGSTER_HOME) — nothing is kept in the process:

- aegis_checkpoint_age_seconds{table}: age of the newest verified checkpoint of every protected table (+Inf: none)
- aegis_restore_duration_seconds{table}: a summary (count = restores, sum = seconds) of the restores
- aegis_check_failures_total{asset,check,severity}: failed (ERROR) and warned check evaluations
- aegis_macro_api_breaker_state{state}: 1 for the breaker's current state; aegis_macro_api_breaker_failures
- aegis_macro_api_latency_seconds: the newest bronze/macro_indicators fetch; aegis_macro_api_errors_total{kind}:
  failed attempts that were retried, and series served from a fallback
- aegis_capture_streaming, aegis_capture_lag_bytes, aegis_capture_rpo_seconds, aegis_capture_rpo_target_seconds:
  the change capture (resources/capture/health.py: the slot for PostgreSQL, Litestream's replica for SQLite)
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
from prometheus_client import start_http_server
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector

from platform_assets.definitions import asset_checks
from platform_assets.ops.health import checkpoint_ages, macro_api, setting
from platform_assets.protection.protected import resolve
from resources import CheckpointStore, Lake, SourceDatabase
from resources import gate_verdicts as verdicts
from resources.capture.health import capture_health
from resources.env_file import apply_env_file
from resources.http.macro_api import SERIES

HISTORY = 1000  # materialisations read per asset and scrape
_STATES = ("closed", "half-open", "open")
_MACRO = dg.AssetKey(["bronze", "macro_indicators"])


class AegisCollector(Collector):
    def __init__(self, instance: dg.DagsterInstance | None) -> None:
        self.instance = instance

    def collect(self) -> Iterator:
        """Every section on its own: one that cannot be read (a backend down) is counted in
        aegis_scrape_errors{section} and the others are still served."""
        tables = [t.id for t in resolve(setting("AEGIS_SOURCE_URL"), lake_url=setting("AEGIS_LAKE_URL"))[0].tables]
        sections = [("checkpoints", lambda: self._ages(tables)), ("breaker", self._breaker),
                    ("capture", self._capture)]
        if self.instance is not None:
            sections += [("restores", lambda: self._restores(tables)), ("checks", self._checks),
                         ("macro", self._macro)]
        errors = GaugeMetricFamily("aegis_scrape_errors", "1 when a section could not be read at this scrape",
                                   labels=["section"])
        for name, section in sections:
            try:
                families = list(section())
            except Exception:  # noqa: BLE001 - a scrape reports what it can read
                errors.add_metric([name], 1.0)
                continue
            errors.add_metric([name], 0.0)
            yield from families
        yield errors

    def _ages(self, tables: list[str]) -> Iterator:
        ages = GaugeMetricFamily("aegis_checkpoint_age_seconds", "Age of the newest verified checkpoint (+Inf: none)",
                                 labels=["table"])
        store = CheckpointStore(lake=Lake(url=setting("AEGIS_LAKE_URL")), encryption_key="")
        for table, age in checkpoint_ages(store, tables).items():
            ages.add_metric([table], age.total_seconds() if age is not None else math.inf)
        yield ages

    def _capture(self) -> Iterator:
        health = capture_health(SourceDatabase(url=setting("AEGIS_SOURCE_URL")),
                                Lake(url=setting("AEGIS_LAKE_URL")))
        yield GaugeMetricFamily("aegis_capture_streaming", "1 when the capture keeps up (PostgreSQL: streams the slot)",
                                value=1.0 if health.streaming else 0.0)
        if health.kind == "postgres":
            yield GaugeMetricFamily("aegis_capture_lag_bytes", "WAL bytes committed on the source, not in the lake",
                                    value=float(health.lag_bytes) if health.lag_bytes is not None else math.inf)
        yield GaugeMetricFamily("aegis_capture_rpo_seconds", "Seconds of committed work a loss now would take",
                                value=health.rpo_seconds if health.rpo_seconds is not None else math.inf)
        yield GaugeMetricFamily("aegis_capture_rpo_target_seconds", "AEGIS_RPO_SECONDS", value=health.target_seconds)

    def _breaker(self) -> Iterator:
        status = macro_api().breaker_status()
        state = GaugeMetricFamily("aegis_macro_api_breaker_state", "1 for the macro API breaker's state",
                                  labels=["state"])
        for name in _STATES:
            state.add_metric([name], 1.0 if status["state"] == name else 0.0)
        yield state
        yield GaugeMetricFamily("aegis_macro_api_breaker_failures", "Consecutive failed fetches counted by the breaker",
                                value=float(status["failures"] or 0))

    def _materialisations(self, key: dg.AssetKey) -> list:
        return self.instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=HISTORY).records

    def _restores(self, tables: list[str]) -> Iterator:
        summary = SummaryMetricFamily("aegis_restore_duration_seconds", "Restores and their duration (verify, load, "
                                      "compare, swap)", labels=["table"])
        for table in tables:
            seconds = [sum(float(v.value) for k, v in record.asset_materialization.metadata.items()
                           if k in ("verify_seconds", "load_seconds", "compare_seconds", "swap_seconds"))
                       for record in self._materialisations(dg.AssetKey(["recovery", *table.split("/")]))]
            summary.add_metric([table], count_value=len(seconds), sum_value=sum(seconds))
        yield summary

    def _checks(self) -> Iterator:
        keys = sorted({spec.asset_key for check in asset_checks for spec in check.check_specs}, key=str)
        counted = Counter((v.asset_key.to_user_string(), v.check, v.verdict)
                          for v in verdicts.since(self.instance, keys, None, limit=HISTORY)
                          if v.verdict in (verdicts.FAILED, verdicts.WARNED))
        failures = CounterMetricFamily("aegis_check_failures", "Check evaluations that failed (ERROR) or warned",
                                       labels=["asset", "check", "severity"])
        for (asset, check, verdict), count in sorted(counted.items()):
            failures.add_metric([asset, check, "ERROR" if verdict == verdicts.FAILED else "WARN"], count)
        yield failures

    def _macro(self) -> Iterator:
        records = self._materialisations(_MACRO)
        latency = GaugeMetricFamily("aegis_macro_api_latency_seconds", "Seconds the newest macro fetch took")
        errors = CounterMetricFamily("aegis_macro_api_errors", "Macro API failures: retried attempts, and series "
                                     "served from a fallback", labels=["kind"])
        retried = fallbacks = 0
        for record in records:
            meta = record.asset_materialization.metadata
            served = [r for r in (meta["fallback"].value.split(", ") if "fallback" in meta else []) if r != "none"]
            fallbacks += len(served)
            fetched = len(SERIES) - len(served)  # attempts counts the fetches that answered; one try each at least
            retried += max(int(meta["attempts"].value) - fetched, 0) if "attempts" in meta else 0
        if records and "latency_seconds" in records[0].asset_materialization.metadata:
            latency.add_metric([], float(records[0].asset_materialization.metadata["latency_seconds"].value))
        errors.add_metric(["retried"], retried)
        errors.add_metric(["fallback"], fallbacks)
        yield latency
        yield errors


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Aegis metrics for Prometheus (OpenMetrics)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9464)
    args = parser.parse_args(argv)
    for note in apply_env_file(Path(".env")):
        print(f"WARN {note}", flush=True)
    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else None
    REGISTRY.register(AegisCollector(instance))
    start_http_server(args.port, addr=args.host)
    print(f"serving Aegis metrics on http://{args.host}:{args.port}/metrics"
          + ("" if instance else " (DAGSTER_HOME unset: checkpoint and breaker metrics only)"), flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()

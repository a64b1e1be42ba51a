"""Materialise the whole graph headless, partition by partition, and summarise it per layer.

`python -m platform_assets.ops.runner --days 2 --rows 10000` (what `make demo` runs) builds everything on a
fresh temporary directory with the embedded stack. Tests call `run_graph` with their own resources.
"""

import argparse
import datetime as dt
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from platform_assets.definitions import asset_checks, assets
from platform_assets.layers.partitions import daily
from resources import CheckpointStore, Lake, PiiMasker, RecoveryPolicy, SourceDatabase, SyntheticVolume, Warehouse
from resources.http.macro_api import DEFAULT_URL, MacroSeriesApi
from resources.http.sgs_mirror import SyntheticSgs

LAYERS = ("source", "bronze", "silver", "gold", "serving", "reports")
MEDALLION = dg.AssetSelection.groups(*LAYERS)


@dataclass
class LayerSummary:
    assets: int = 0
    rows: int = 0
    bytes: int = 0
    seconds: float = 0.0


@dataclass
class GraphSummary:
    days: list[str]
    wall_seconds: float = 0.0
    layers: dict[str, LayerSummary] = field(default_factory=lambda: {name: LayerSummary() for name in LAYERS})

    def add(self, result: dg.ExecuteInProcessResult) -> None:
        for event in result.get_asset_materialization_events():
            materialization = event.event_specific_data.materialization
            layer = self.layers.setdefault(materialization.asset_key.path[0], LayerSummary())
            meta = materialization.metadata
            layer.assets += 1
            layer.rows += int(meta["dagster/row_count"].value) if "dagster/row_count" in meta else 0
            layer.bytes += int(meta["bytes"].value) if "bytes" in meta else 0
            layer.seconds += float(meta["seconds"].value) if "seconds" in meta else 0.0

    def table(self) -> str:
        lines = [f"Aegis graph for {', '.join(self.days)} ({self.wall_seconds:.1f} s wall)", "",
                 f"| {'layer':<11} | {'assets':>6} | {'rows':>12} | {'bytes':>14} | {'seconds':>8} |",
                 f"|{'-' * 13}|{'-' * 8}|{'-' * 14}|{'-' * 16}|{'-' * 10}|"]
        for name, s in self.layers.items():
            lines.append(f"| {name:<11} | {s.assets:>6} | {s.rows:>12,} | {s.bytes:>14,} | {s.seconds:>8.2f} |")
        return "\n".join(lines)


def embedded_resources(root: Path, rows_per_day: int, pii_key: str = "dev-only-demo-key",
                       macro_url: str | None = None) -> dict:
    """The embedded stack (SQLite source, local lake, DuckDB warehouse) under one directory; the macro series
    from `macro_url`, else AEGIS_MACRO_API_URL, else the central bank."""
    lake = Lake(url=f"file://{root}/lake")
    return {
        "source_db": SourceDatabase(url=f"sqlite:///{root}/source.db"),
        "lake": lake,
        "checkpoints": CheckpointStore(lake=lake, encryption_key=""),
        "warehouse": Warehouse(url=f"duckdb:///{root}/warehouse.duckdb"),
        "masker": PiiMasker(key=pii_key),
        "volume": SyntheticVolume(rows_per_day=rows_per_day),
        "recovery_policy": RecoveryPolicy(),
        "macro_api": MacroSeriesApi(lake=lake, base_url=macro_url or os.environ.get(MacroSeriesApi.ENV_VAR)
                                    or DEFAULT_URL),
    }


def check_partitions(days: Sequence[str]) -> None:
    """Refuse days outside the daily partitions, saying which range is valid."""
    keys = daily.get_partition_keys()
    for day in days:
        if day not in set(keys):
            raise ValueError(f"partition {day!r} is outside the daily partitions {keys[0]} .. {keys[-1]}")


def run_graph(resources: dict, days: Sequence[str], instance: dg.DagsterInstance,
              selection: str | dg.AssetSelection | None = None, checkpoint: bool = False,
              log_level: str = "INFO") -> GraphSummary:
    """Materialise the daily layers (or `selection`) for each day, in process, adding up what each layer
    did; with `checkpoint`, then take a verified checkpoint of every source table. Console logging stops
    at `log_level` (INFO: what each asset did, without Dagster's per-step DEBUG events). Without a selection,
    the daily layers: never the recovery assets, which restore tables."""
    selection = selection or MEDALLION
    check_partitions(days)
    logging = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    summary = GraphSummary(days=list(days))
    started = time.perf_counter()
    for day in days:
        summary.add(dg.materialize([*assets, *asset_checks], resources=resources, instance=instance,
                                   partition_key=day, selection=selection, raise_on_error=True,
                                   run_config=logging))
    if checkpoint:
        summary.add(dg.materialize([*assets, *asset_checks], resources=resources, instance=instance,
                                   selection=dg.AssetSelection.groups("checkpoints"), raise_on_error=True,
                                   run_config=logging))
    summary.wall_seconds = time.perf_counter() - started
    return summary


def last_days(count: int, today: dt.date | None = None) -> list[str]:
    """The `count` most recent complete days (daily partitions end yesterday)."""
    today = today or dt.datetime.now(dt.UTC).date()
    return [(today - dt.timedelta(days=n)).isoformat() for n in range(count, 0, -1)]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=2, help="how many recent days to build (default 2)")
    parser.add_argument("--rows", type=int, default=10_000, help="rows per table per day (default 10000)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory and print it")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="aegis-demo-"))
    (workdir / "dagster_home").mkdir()
    # the demo's data is synthetic, its macro series too (unless AEGIS_MACRO_API_URL names a real API)
    with (dg.instance_for_test(temp_dir=str(workdir / "dagster_home")) as instance,
          SyntheticSgs() as synthetic_sgs):
        macro_url = os.environ.get(MacroSeriesApi.ENV_VAR) or synthetic_sgs
        summary = run_graph(embedded_resources(workdir, args.rows, macro_url=macro_url), last_days(args.days),
                            instance, checkpoint=True)
    print(summary.table())
    print(f"\n{args.rows:,} rows per table per day; data in {workdir}" if args.keep else "")
    if not args.keep:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

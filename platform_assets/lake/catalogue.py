"""Every Delta table of the lake, once: where it lives (layer/table), its asset key, and which assets rebuild
a partition of it from upstream (silver and its quarantine are written by one step)."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from platform_assets.layers.gold import SERVED_TABLES
from platform_assets.layers.tables import SOURCE_TABLES
from platform_assets.macro.series import NAME as MACRO


@dataclass(frozen=True)
class LakeTable:
    layer: str  # bronze | silver | silver/quarantine | gold
    name: str
    key: dg.AssetKey
    rebuilt_by: tuple[dg.AssetKey, ...]  # materialised together to rebuild a partition from upstream

    @property
    def label(self) -> str:
        return f"{self.layer}/{self.name}"


def _catalogue() -> tuple[LakeTable, ...]:
    tables = []
    for name in (*SOURCE_TABLES, MACRO):
        silver = (dg.AssetKey(["silver", name]), dg.AssetKey(["silver", f"{name}_quarantine"]))
        tables += [LakeTable("bronze", name, dg.AssetKey(["bronze", name]), (dg.AssetKey(["bronze", name]),)),
                   LakeTable("silver", name, silver[0], silver),
                   LakeTable("silver/quarantine", name, silver[1], silver)]
    tables += [LakeTable("gold", spec.name, dg.AssetKey(["gold", spec.name]), (dg.AssetKey(["gold", spec.name]),))
               for spec in SERVED_TABLES]
    return tuple(tables)


LAKE_TABLES = _catalogue()


def lake_table(label: str) -> LakeTable:
    """The table named `<layer>/<table>` (e.g. silver/sales, silver/quarantine/sales, gold/fact_sales)."""
    for table in LAKE_TABLES:
        if table.label == label:
            return table
    raise ValueError(f"unknown lake table {label!r}; the lake holds: {', '.join(t.label for t in LAKE_TABLES)}")

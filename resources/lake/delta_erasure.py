"""Erasing a person's rows from a lake table for good: every day that holds them is rewritten without them (one
Delta commit each), then exactly the files those commits replaced are deleted, so no earlier version's file
still holds the rows (time travel to those days before the erasure ends there — the price of erasing). No
general vacuum: a concurrent writer's not yet committed files are never touched."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from resources.lake.delta_tables import PARTITION, open_table
from resources.lake.lake import Lake


def _theirs(column: pa.ChunkedArray, value: str) -> pa.ChunkedArray:
    return pc.fill_null(pc.equal(pc.cast(column, pa.string()), value), False)


def erase_rows(lake: Lake, layer: str, table: str, column: str, value: str, run_id: str) -> dict[str, int]:
    """Remove every row whose `column` (as text) equals `value`; returns rows removed per day."""
    loc = lake.location(layer, table)
    existing = open_table(loc)
    if existing is None:
        return {}
    found = existing.to_pyarrow_table(columns=[column, PARTITION])
    days = sorted(set(found.filter(_theirs(found[column], value))[PARTITION].to_pylist()))
    removed, replaced = {}, set()
    for day in days:
        held = set(open_table(loc).file_uris(partition_filters=[(PARTITION, "=", day)]))
        rows = lake.read_partition(layer, table, day)
        kept = rows.filter(pc.invert(_theirs(rows[column], value)))
        lake.write_partition(layer, table, day, kept, kept.schema, run_id=run_id)
        removed[day] = rows.num_rows - kept.num_rows
        replaced |= held - set(open_table(loc).file_uris(partition_filters=[(PARTITION, "=", day)]))
    lake.delete_files(replaced)
    return removed

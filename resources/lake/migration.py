"""Convert a lake written in the pre-Delta layout (a `_commit.json` per partition) into Delta tables, once.

    make migrate-lake            # or: python -m resources.lake.migration [--lake URL]

For every `<layer>/<table>` holding `_commit.json` files, each committed day is read from the files its commit
names and written as one Delta commit of that day. Then every old file — the committed parts, the commit file,
and parts no commit named (left by crashed writers) — is moved under `<lake>/_pre_delta/<layer>/<table>/…`:
nothing is deleted. Re-running converts what is left (a day is replaced, never duplicated).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from resources.lake import delta_tables as delta
from resources.lake.lake import LEGACY_COMMIT_FILE, Lake

LAYERS = ("bronze", "silver", "silver/quarantine", "gold")
SET_ASIDE = "_pre_delta"
OLD_PART = re.compile(r"^part-[0-9a-f]{12}-\d{5}\.parquet$")  # Delta's own are part-00000-<uuid>-c000.<codec>.parquet


def legacy_tables(lake: Lake) -> list[tuple[str, str]]:
    """(layer, table) of every table directory that still holds old commit files."""
    fs, root = lake.filesystem()
    found = []
    for layer in LAYERS:
        selector = pafs.FileSelector(f"{root}/{layer}", allow_not_found=True)
        for info in fs.get_file_info(selector):
            if info.type != pafs.FileType.Directory or info.base_name in ("quarantine", "_delta_log"):
                continue
            inside = fs.get_file_info(pafs.FileSelector(info.path, recursive=True))
            if any(i.base_name == LEGACY_COMMIT_FILE for i in inside):
                found.append((layer, info.base_name))
    return found


def migrate_table(lake: Lake, layer: str, table: str, say=print) -> int:
    """Convert one table; returns the number of days converted."""
    fs, root = lake.filesystem()
    table_root = lake.table_root(layer, table)
    days = 0
    for info in sorted(fs.get_file_info(pafs.FileSelector(table_root)), key=lambda i: i.base_name):
        if info.type != pafs.FileType.Directory or not info.base_name.startswith("date="):
            continue
        day = info.base_name.removeprefix("date=")
        commit_path = f"{info.path}/{LEGACY_COMMIT_FILE}"
        if fs.get_file_info(commit_path).type != pafs.FileType.File:
            continue
        with fs.open_input_stream(commit_path) as f:
            commit = json.loads(f.read())
        parts = [pq.read_table(f"{info.path}/{entry['name']}", filesystem=fs, partitioning=None)
                 for entry in commit["files"]]
        rows = pa.concat_tables(parts, promote_options="permissive") if len(parts) > 1 else parts[0]
        if rows.num_rows != commit["rows"]:
            raise RuntimeError(f"{layer}/{table} date={day}: the commit names {commit['rows']} rows but its files hold "
                               f"{rows.num_rows}; nothing was converted for this day")
        delta.write_partition(lake.location(layer, table), day, rows, rows.schema)  # Lake's would refuse: old layout
        old = [i for i in fs.get_file_info(pafs.FileSelector(info.path))
               if i.base_name == LEGACY_COMMIT_FILE or OLD_PART.match(i.base_name)]
        aside = f"{root}/{SET_ASIDE}/{layer}/{table}/date={day}"
        if lake.is_local:
            os.makedirs(aside, exist_ok=True)
        for entry in sorted(old, key=lambda i: i.base_name == LEGACY_COMMIT_FILE):  # the commit file last
            fs.move(entry.path, f"{aside}/{entry.base_name}")
        say(f"{layer}/{table} date={day}: {rows.num_rows} rows -> Delta; {len(old)} old file(s) set aside in {aside}")
        days += 1
    return days


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lake", default=os.environ.get(Lake.ENV_VAR, "file://data/lake"),
                        help=f"the lake URL (default: ${Lake.ENV_VAR} or file://data/lake)")
    args = parser.parse_args(argv)
    lake = Lake(url=args.lake)
    tables = legacy_tables(lake)
    if not tables:
        print(f"{lake.parsed.display}: nothing to convert (no table in the old layout)")
        return 0
    for layer, table in tables:
        days = migrate_table(lake, layer, table)
        print(f"{layer}/{table}: {days} day(s) converted")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Health and upkeep of the lake's Delta tables: find damaged partitions, compact small files, vacuum.

A partition is damaged when a data file its newest version names is missing, or has another size than the
Delta log recorded (truncated, replaced). Compaction rewrites a day's small files into fewer (a new
version; the rows are unchanged); vacuum deletes files no version within the time-travel retention needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

import pyarrow.fs as pafs
from deltalake.exceptions import CommitFailedError

from resources.lake.delta_tables import WRITER, DeltaLocation, LakeWriteConflict, open_table, partition_files


@dataclass(frozen=True)
class Damage:
    day: str
    version: int  # the newest version, whose files are damaged
    problems: tuple[str, ...]  # "date=…/part-….parquet: missing" / "…: 1234 bytes, the log says 5678"


@dataclass(frozen=True)
class StoredFiles:
    files: int
    bytes: int


def stored_files(fs: pafs.FileSystem, root: str) -> dict[str, int]:
    """Every Parquet file under a table's root on the storage (referenced or not): relative path -> size."""
    selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
    return {info.path[len(root.rstrip("/")) + 1:]: info.size for info in fs.get_file_info(selector)
            if info.type == pafs.FileType.File and info.path.endswith(".parquet")
            and "/_delta_log/" not in f"/{info.path[len(root):]}"}


def damaged_partitions(loc: DeltaLocation, fs: pafs.FileSystem, root: str) -> list[Damage]:
    """The days of the newest version whose data files are missing or not the size the log recorded."""
    table = open_table(loc)
    if table is None:
        return []
    present = stored_files(fs, root)
    damaged = []
    for day, files in sorted(partition_files(table).items()):
        problems = []
        for file in files:
            size = present.get(unquote(file.path))
            if size is None:
                problems.append(f"{unquote(file.path)}: missing")
            elif size != file.size:
                problems.append(f"{unquote(file.path)}: {size} bytes, the Delta log says {file.size}")
        if problems:
            damaged.append(Damage(day, table.version(), tuple(problems)))
    return damaged


def intact_at(loc: DeltaLocation, fs: pafs.FileSystem, root: str, day: str, version: int) -> bool:
    """Whether every data file the day had at `version` is still stored with the size the log recorded."""
    table = open_table(loc, version)
    files = partition_files(table, day).get(day, []) if table else []
    present = stored_files(fs, root)
    return all(present.get(unquote(f.path)) == f.size for f in files)


def referenced(loc: DeltaLocation) -> StoredFiles:
    """The files and bytes the newest version reads."""
    table = open_table(loc)
    files = [f for day_files in (partition_files(table).values() if table else []) for f in day_files]
    return StoredFiles(len(files), sum(f.size for f in files))


def compact(loc: DeltaLocation, target_size: int | None = None) -> dict:
    """Rewrite each day's small files into fewer; returns delta-rs's metrics (files added/removed)."""
    table = open_table(loc)
    if table is None:
        return {}
    try:
        return table.optimize.compact(target_size=target_size, writer_properties=WRITER)
    except CommitFailedError as exc:
        raise LakeWriteConflict(f"{loc.label}: a writer committed during compaction; nothing was compacted, the "
                                f"next run will ({str(exc).splitlines()[0]})") from None


def vacuum(loc: DeltaLocation, retention_hours: int) -> list[str]:
    """Delete the files no version of the last `retention_hours` needs (and files no version ever named).
    Never below the time-travel promise."""
    if retention_hours < loc.retention_hours:
        raise ValueError(f"{loc.label}: vacuum retention {retention_hours} h is below the lake's time-travel "
                         f"promise of {loc.retention_hours} h (AEGIS_LAKE_RETENTION_HOURS); versions a restore "
                         "may ask for would lose their files")
    table = open_table(loc)
    if table is None:
        return []
    return table.vacuum(retention_hours=retention_hours, dry_run=False, enforce_retention_duration=False)

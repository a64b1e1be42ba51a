"""One Delta Lake table of the lake (delta-rs): partitioned by a string `date`, a day replaced in one commit.

Every write is a predicate overwrite of one partition (`date = 'YYYY-MM-DD'`): the commit removes the day's
old files and adds the new ones atomically, so readers see one version or the other and re-runs never
duplicate. Concurrent writers are arbitrated by the Delta log (put-if-absent of the next commit file): two
writers of different days both commit; of the same day, the one that commits second fails with
`LakeWriteConflict` and nothing of it is visible. Each commit carries Aegis's own facts about the partition
it wrote (rows, an order-independent fingerprint of the rows, the run) in its commit info, so history can
say which version of a day holds which rows.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError

from resources.fingerprints import fingerprint_of
from resources.identifiers import check_day

PARTITION = "date"
ROWS, FINGERPRINT, DAY, RUN, RESTORED_FROM = ("aegis.rows", "aegis.fingerprint", "aegis.partition", "aegis.run_id",
                                             "aegis.restored_from_version")
WRITE = "aegis.write_id"
FACT = "aegis.fact."  # facts the writer states about the day it wrote (e.g. duplicates removed)
HISTORY_DEPTH = 100  # commits looked at to find a version or a time (each is one read; on S3 one GET)
RECENT_DEPTH = 30  # commits looked at after every write, for the day's versions in the asset's metadata
WRITER = WriterProperties(compression="ZSTD")


class PartitionNotFoundError(FileNotFoundError):
    """The lake holds no committed version of the asked partition."""


class LakeWriteConflict(RuntimeError):
    """Another writer committed the same partition while this one was writing; nothing of this write is visible."""


class TimeTravelError(ValueError):
    """A version or time the lake cannot (or no longer promises to) go back to."""


@dataclass(frozen=True)
class DeltaLocation:
    uri: str
    storage_options: dict[str, str] = field(repr=False)  # may carry credentials: never printed
    label: str  # "<layer>/<table>", for messages
    retention_hours: int  # how far back time travel is promised (vacuum never removes what it needs)


@dataclass(frozen=True)
class PartitionVersion:
    version: int
    timestamp: dt.datetime
    operation: str
    rows: int | None
    fingerprint: str | None
    run_id: str | None
    facts: dict[str, int]  # what the writer stated about this version of the day


def open_table(loc: DeltaLocation, version: int | None = None) -> DeltaTable | None:
    """The Delta table at `loc` (at `version`), or None when nothing was written there yet."""
    try:
        return DeltaTable(loc.uri, version=version, storage_options=loc.storage_options)
    except TableNotFoundError:
        return None


def _predicate(day: str) -> str:
    return f"{PARTITION} = '{check_day(day)}'"


def _with_day(batches: Iterable[pa.RecordBatch], schema: pa.Schema, day: str, counted: list[int],
              failed: list[BaseException], label: str) -> Iterator[pa.RecordBatch]:
    """The batches with the partition column; an error of the producer is kept in `failed` (delta-rs would
    otherwise hand it back flattened into its own error text)."""
    out = schema.append(pa.field(PARTITION, pa.string()))
    try:
        for batch in batches:
            if batch.num_rows == 0:
                continue
            batch = _fitted(batch, schema, label) if batch.schema != schema else batch
            counted[0] += batch.num_rows
            yield pa.RecordBatch.from_arrays([*batch.columns, pa.array([day] * batch.num_rows, pa.string())],
                                             schema=out)
    except BaseException as exc:
        failed.append(exc)
        raise


def _fitted(batch: pa.RecordBatch | pa.Table, schema: pa.Schema, label: str) -> pa.RecordBatch | pa.Table:
    """The batch in the table's column types; a value that does not fit is a clear error (nothing is written)."""
    try:
        return batch.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        changed = [f"{f.name}: {f.type} arriving, the table holds {schema.field(f.name).type}"
                   for f in batch.schema if f.type != schema.field(f.name).type]
        raise ValueError(f"{label}: the rows do not fit the Delta table's columns ({'; '.join(changed)}): "
                         f"{str(exc).splitlines()[0][:200]}. A column changed type at the source? Nothing was "
                         "written; the table keeps its last good version.") from None


def write_partition(loc: DeltaLocation, day: str, data: pa.Table | Iterable[pa.RecordBatch], schema: pa.Schema,
                    run_id: str | None = None, restored_from: int | None = None,
                    facts: dict[str, int] | None = None,
                    before_creating: Callable[[], None] | None = None) -> tuple[int, int, str | None]:
    """Replace the day with `data` in one commit; (version, rows, fingerprint). A whole table's fingerprint is
    recorded in the commit (so history can tell which versions hold equal rows); streamed batches are
    written as they come and carry none (delta-rs takes the commit info before the stream is read).
    `before_creating` runs when there is no table yet (it may refuse by raising)."""
    if PARTITION in schema.names:
        raise ValueError(f"{loc.label}: the column {PARTITION!r} is reserved for the lake's partition; rename it")
    existing = open_table(loc)
    if existing is not None:
        schema = _conformed(loc, existing, schema)
    elif before_creating is not None:
        before_creating()
    write_id = uuid.uuid4().hex  # finds this commit's version afterwards, whoever else committed meanwhile
    custom = {DAY: day, RUN: run_id or "", WRITE: write_id,
              **{FACT + name: str(value) for name, value in (facts or {}).items()}}
    fingerprint = None
    if isinstance(data, pa.Table):
        data = _fitted(data, schema, loc.label) if data.schema != schema else data
        fingerprint = fingerprint_of([data])
        custom.update({ROWS: str(data.num_rows), FINGERPRINT: fingerprint})
        data = data.to_batches()
    if restored_from is not None:
        custom[RESTORED_FROM] = str(restored_from)
    counted, failed = [0], []
    stream = pa.RecordBatchReader.from_batches(schema.append(pa.field(PARTITION, pa.string())),
                                               _with_day(data, schema, day, counted, failed, loc.label))
    try:
        write_deltalake(existing if existing is not None else loc.uri, stream, partition_by=[PARTITION],
                        mode="overwrite", predicate=_predicate(day), storage_options=loc.storage_options,
                        writer_properties=WRITER,
                        configuration=_table_properties(loc) if existing is None else None,
                        commit_properties=CommitProperties(custom_metadata=custom))
    except CommitFailedError as exc:
        now = open_table(loc)
        raise LakeWriteConflict(
            f"{loc.label} date={day}: another writer committed this table while this run was writing the "
            f"partition (the table is now at version {now.version() if now else '?'}); nothing of this run's "
            f"write is visible — run it again to replace the day. Delta said: {str(exc).splitlines()[0]}"
        ) from None
    except Exception:
        if failed:  # the rows' producer failed: nothing was committed; say what really went wrong
            raise failed[0] from None
        raise
    return _version_of(loc, write_id), counted[0], fingerprint


def _version_of(loc: DeltaLocation, write_id: str) -> int:
    for entry in open_table(loc).history(RECENT_DEPTH):
        if entry.get(WRITE) == write_id:
            return entry["version"]
    raise RuntimeError(f"{loc.label}: the commit just written is not among the last {RECENT_DEPTH} versions")


def _table_properties(loc: DeltaLocation) -> dict[str, str]:
    """Retention promises other engines see too (Spark's VACUUM honours deletedFileRetentionDuration)."""
    return {"delta.deletedFileRetentionDuration": f"interval {loc.retention_hours} hours",
            "delta.logRetentionDuration": f"interval {max(loc.retention_hours, 30 * 24)} hours"}


def _conformed(loc: DeltaLocation, table: DeltaTable, schema: pa.Schema) -> pa.Schema:
    """The table's schema when the incoming one has the same columns (batches are cast to it); else an error."""
    current = pa.schema(table.schema().to_arrow())
    current = current.remove(current.get_field_index(PARTITION))
    if current.names != schema.names:
        added, dropped = set(schema.names) - set(current.names), set(current.names) - set(schema.names)
        raise ValueError(f"{loc.label}: the rows' columns differ from the table's (new: {sorted(added)}, missing: "
                         f"{sorted(dropped)}, order: {schema.names} vs {current.names}); the lake does not change a "
                         "table's columns silently")
    return current


def read_partition(loc: DeltaLocation, day: str, columns: list[str] | None = None,
                   version: int | None = None) -> pa.Table:
    """The day's rows (without the partition column), at the newest or the given version."""
    table = _require(loc, day, version)
    if columns is None:
        columns = [name for name in pa.schema(table.schema().to_arrow()).names if name != PARTITION]
    rows = table.to_pyarrow_table(partitions=[(PARTITION, "=", check_day(day))], columns=columns)
    if rows.num_rows == 0 and not _ever_written(table, day):
        raise PartitionNotFoundError(f"no committed partition {loc.label}/date={day} in the lake"
                                     + (f" at version {version}" if version is not None else "")
                                     + "; materialise it first")
    return rows


def read_days(loc: DeltaLocation, first: str, last: str, columns: list[str] | None = None) -> pa.Table:
    """The rows of every day from `first` to `last` the table holds, with their `date` (none: no rows)."""
    table = _require(loc, first, None)
    return table.to_pyarrow_table(partitions=[(PARTITION, ">=", check_day(first)), (PARTITION, "<=", check_day(last))],
                                  columns=columns)


def _require(loc: DeltaLocation, day: str, version: int | None) -> DeltaTable:
    try:
        table = open_table(loc, version)
    except Exception as exc:  # a version whose log is gone, or that does not exist yet
        if version is None:
            raise
        raise TimeTravelError(f"{loc.label}: version {version} cannot be loaded ({str(exc).splitlines()[0]})") from None
    if table is None:
        raise PartitionNotFoundError(f"no committed partition {loc.label}/date={day} in the lake (no Delta table "
                                     f"at {loc.uri}); materialise it first")
    return table


def _ever_written(table: DeltaTable, day: str) -> bool:
    """Whether a commit of this day exists (an empty day is a commit without files)."""
    return any(entry.get(DAY) == day or _predicate(day) == entry.get("operationParameters", {}).get("predicate")
               for entry in table.history(HISTORY_DEPTH))


@dataclass(frozen=True)
class DataFile:
    path: str  # relative to the table's root
    size: int
    rows: int


def partition_files(table: DeltaTable, day: str | None = None) -> dict[str, list[DataFile]]:
    """The data files of the table's loaded version, per day (or of one day)."""
    actions = pa.table(table.get_add_actions(flatten=True))
    files: dict[str, list[DataFile]] = {}
    for row in actions.select(["path", "size_bytes", "num_records", f"partition.{PARTITION}"]).to_pylist():
        if day is None or row[f"partition.{PARTITION}"] == day:
            files.setdefault(row[f"partition.{PARTITION}"], []).append(
                DataFile(row["path"], row["size_bytes"], row["num_records"] or 0))
    return files


def partition_versions(loc: DeltaLocation, day: str, limit: int = 10,
                       depth: int = RECENT_DEPTH) -> list[PartitionVersion]:
    """The newest commits (among the last `depth`) that wrote the day, newest first, with rows and fingerprint."""
    table = open_table(loc)
    if table is None:
        return []
    versions = []
    for entry in table.history(depth):
        predicate = entry.get("operationParameters", {}).get("predicate")
        if entry.get(DAY) != day and predicate != _predicate(day):
            continue
        metrics = entry.get("operationMetrics", {})
        rows = entry.get(ROWS)
        versions.append(PartitionVersion(
            version=entry["version"], timestamp=dt.datetime.fromtimestamp(entry["timestamp"] / 1000, dt.UTC),
            operation=entry.get("operation", "?") + (f" (restore of v{entry[RESTORED_FROM]})"
                                                    if entry.get(RESTORED_FROM) else ""),
            rows=int(rows) if rows is not None else metrics.get("num_added_rows"),
            fingerprint=entry.get(FINGERPRINT), run_id=entry.get(RUN) or None,
            facts={k.removeprefix(FACT): int(v) for k, v in entry.items() if k.startswith(FACT)}))
        if len(versions) == limit:
            break
    return versions


def check_within_retention(loc: DeltaLocation, version: int, when: dt.datetime,
                           now: dt.datetime | None = None) -> None:
    """Refuse a version older than the time-travel promise: vacuum may already have removed its files."""
    horizon = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(hours=loc.retention_hours)
    if when < horizon:
        raise TimeTravelError(
            f"{loc.label}: version {version} ({when:%Y-%m-%d %H:%M:%S} UTC) is older than the lake's time-travel "
            f"retention of {loc.retention_hours} h (AEGIS_LAKE_RETENTION_HOURS): its files may have been vacuumed. "
            "Pick a newer version (listed in the asset's metadata).")


def version_at(loc: DeltaLocation, as_of: dt.datetime) -> int:
    """The newest version committed at or before `as_of`."""
    table = _require(loc, "", None)
    for entry in table.history(HISTORY_DEPTH):
        if dt.datetime.fromtimestamp(entry["timestamp"] / 1000, dt.UTC) <= as_of:
            return entry["version"]
    raise TimeTravelError(f"{loc.label}: no version at or before {as_of.isoformat()} among the last "
                          f"{HISTORY_DEPTH} commits")


def commit_time(loc: DeltaLocation, version: int) -> dt.datetime:
    table = _require(loc, "", None)
    if version > table.version() or version < 0:
        raise TimeTravelError(f"{loc.label}: no version {version} (the table is at version {table.version()})")
    for entry in table.history(HISTORY_DEPTH):
        if entry["version"] == version:
            return dt.datetime.fromtimestamp(entry["timestamp"] / 1000, dt.UTC)
    raise TimeTravelError(f"{loc.label}: version {version} is beyond the last {HISTORY_DEPTH} commits")


def restore_table(loc: DeltaLocation, version: int) -> dict:
    """Delta RESTORE of the whole table to `version` (a new commit; history keeps everything after it)."""
    check_within_retention(loc, version, commit_time(loc, version))
    table = _require(loc, "", None)
    try:
        return table.restore(version, commit_properties=CommitProperties(
            custom_metadata={RESTORED_FROM: str(version)}))
    except CommitFailedError as exc:
        raise LakeWriteConflict(f"{loc.label}: another writer committed during the restore to version {version}; "
                                f"nothing was restored — run it again ({str(exc).splitlines()[0]})") from None
    except Exception as exc:
        raise TimeTravelError(f"{loc.label}: cannot restore version {version}: {str(exc).splitlines()[0]}") from None


def restore_partition(loc: DeltaLocation, day: str, version: int, run_id: str | None = None) -> tuple[int, int]:
    """Put the day back as it was at `version`, in one new commit; (new version, rows)."""
    check_within_retention(loc, version, commit_time(loc, version))
    try:
        rows = read_partition(loc, day, version=version)
    except (OSError, FileNotFoundError) as exc:
        if isinstance(exc, PartitionNotFoundError):
            raise
        raise TimeTravelError(f"{loc.label} date={day}: the files of version {version} are gone or damaged "
                              f"({str(exc).splitlines()[0][:200]})") from None
    new_version, count, _ = write_partition(loc, day, rows, rows.schema, run_id=run_id, restored_from=version)
    return new_version, count

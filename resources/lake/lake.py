"""The lake: the medallion layers as Delta Lake tables, on the local disk or S3.

Each `<layer>/<table>` is one Delta table at `<lake>/<layer>/<table>` (quarantine at
`<lake>/silver/quarantine/<table>`), partitioned by a string column `date` (YYYY-MM-DD); what a table is and
does lives in `resources/delta_tables.py` and `resources/delta_maintenance.py`. Small files beside a
partition (reports, images) stay plain files at `<lake>/<layer>/<table>/date=YYYY-MM-DD/<name>`, and the
checkpoint store writes its own verified format through `filesystem()` / `write_file()`.

On S3 Delta commits need conditional writes (If-None-Match): the first write checks that the object store
honours them and refuses to write otherwise, unless AEGIS_LAKE_SINGLE_WRITER=true says that writers of one
table are serialised (each lake writer then runs in the Dagster pool `lake_<layer>_<table>`, limit 1).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

import dagster as dg
import pyarrow as pa
import pyarrow.fs as pafs

from resources.identifiers import check_day, check_identifier, check_lake_layer
from resources.lake import delta_maintenance as maintenance
from resources.lake import delta_tables as delta
from resources.lake.delta_tables import LakeWriteConflict, PartitionNotFoundError, PartitionVersion, TimeTravelError
from resources.lake.files import LakeFiles, LakeUnreachableError, reachable
from resources.lake.settings import DEFAULT_RETENTION_HOURS, check_conditional_writes
from resources.urls import ConfigurationError, ParsedUrl, absolute, parse_url

SCHEMES = {"file": "file://relative/dir or file:///absolute/dir", "s3": "s3://bucket/prefix"}
LEGACY_COMMIT_FILE = "_commit.json"  # the lake's own commit file before Delta Lake (see lake_migration.py)
__all__ = ["Lake", "LakeUnreachableError", "LakeWriteConflict", "LegacyLakeError", "PartitionNotFoundError",
           "PartitionVersion", "TimeTravelError", "WriteStats"]


class LegacyLakeError(RuntimeError):
    """A table of the lake is still in the pre-Delta layout; the message says how to convert it."""


@dataclass(frozen=True)
class WriteStats:
    rows: int
    bytes: int
    files: int
    path: str
    version: int | None = None  # the Delta version that holds the partition as written


class Lake(LakeFiles, dg.ConfigurableResource):
    """The data lake: Delta tables per layer/table, partitioned by day, on a local disk (`file://`) or S3."""

    url: str
    endpoint_url: str | None = None  # S3-compatible servers (SeaweedFS, MinIO); else AWS_ENDPOINT_URL
    retention_hours: int = DEFAULT_RETENTION_HOURS  # time travel is promised this far back; vacuum keeps it
    ENV_VAR: ClassVar[str] = "AEGIS_LAKE_URL"

    @property
    def parsed(self) -> ParsedUrl:
        return parse_url(self.url, self.ENV_VAR, SCHEMES)

    @property
    def is_local(self) -> bool:
        return self.parsed.scheme == "file"

    def filesystem(self) -> tuple[pafs.FileSystem, str]:
        """The pyarrow file system and the root path inside it."""
        parsed = self.parsed
        if parsed.scheme == "file":
            return pafs.LocalFileSystem(), absolute(parsed.location)
        endpoint = self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
        options: dict = {"region": os.environ.get("AWS_REGION", "us-east-1"), "connect_timeout": 5,
                         "request_timeout": 30}
        if endpoint:
            scheme, _, host = endpoint.partition("://")
            if not host:
                raise ConfigurationError(f"AWS_ENDPOINT_URL={endpoint!r}: expected http(s)://host:port")
            options.update(endpoint_override=host, scheme=scheme)
        return pafs.S3FileSystem(**options), parsed.location

    def _display(self, path: str) -> str:
        """Where a path lives, for humans: a file path or an s3:// URL."""
        return path if self.is_local else f"s3://{path}"

    def table_root(self, layer: str, table: str) -> str:
        """The table's directory inside `filesystem()`."""
        _, root = self.filesystem()
        return "/".join([root, *check_lake_layer(layer), check_identifier(table, "table name")])

    def internal_uri(self, *parts: str) -> tuple[str, dict[str, str]]:
        """URI and storage options of an internal Delta table at `<lake>/_aegis/<parts…>`."""
        _, root = self.filesystem()
        path = "/".join([root, "_aegis", *(check_identifier(p, "internal table name") for p in parts)])
        return (path if self.is_local else f"s3://{path}"), self._options()

    def changes_uri(self) -> tuple[str, dict[str, str]]:
        """URI and storage options of the change log's Delta table (`<lake>/changes/log`)."""
        _, root = self.filesystem()
        return (f"{root}/changes/log" if self.is_local else f"s3://{root}/changes/log"), self._options()

    def location(self, layer: str, table: str) -> delta.DeltaLocation:
        root = self.table_root(layer, table)
        return delta.DeltaLocation(uri=root if self.is_local else f"s3://{root}", storage_options=self._options(),
                                   label=f"{layer}/{table}", retention_hours=self.retention_hours)

    def _options(self) -> dict[str, str]:
        if self.is_local:
            return {}
        endpoint = self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
        options = {"AWS_REGION": os.environ.get("AWS_REGION", "us-east-1"), "timeout": "30s",
                   "connect_timeout": "5s", "max_retries": "2", "retry_timeout": "20s"}
        if endpoint:
            options.update(AWS_ENDPOINT_URL=endpoint,
                           AWS_ALLOW_HTTP="true" if endpoint.startswith("http:") else "false")
        return options

    def partition_dir(self, layer: str, table: str, partition: str) -> str:
        return f"{self.table_root(layer, table)}/date={check_day(partition)}"

    def _refuse_legacy(self, layer: str, table: str) -> None:
        """A table directory without a Delta log but with the old per-partition commit files is not overwritten."""
        fs, _ = self.filesystem()
        root = self.table_root(layer, table)
        selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
        if any(info.base_name == LEGACY_COMMIT_FILE for info in fs.get_file_info(selector)):
            raise LegacyLakeError(
                f"{layer}/{table} at {self._display(root)} is in the lake's old layout (a _commit.json per "
                "partition), not a Delta table. Convert the lake once with `make migrate-lake` (python -m "
                "resources.lake.migration; it keeps every committed row and sets the rest aside), then re-run.")

    @reachable
    def write_partition(self, layer: str, table: str, partition: str,
                        data: pa.Table | Iterable[pa.RecordBatch], schema: pa.Schema,
                        run_id: str | None = None, facts: dict[str, int] | None = None) -> WriteStats:
        """Replace the day with `data` (a table, or streamed record batches) in one Delta commit; `facts` are
        kept in that commit (read back with `versions`)."""
        loc = self.location(layer, table)
        check_day(partition)

        def before_creating() -> None:  # only when the table does not exist yet
            self._refuse_legacy(layer, table)
            self._check_conditional_writes()

        version, rows, _ = delta.write_partition(loc, partition, data, schema, run_id=run_id, facts=facts,
                                                 before_creating=before_creating)
        return self._stats(loc, layer, table, partition, version, rows)

    def _stats(self, loc: delta.DeltaLocation, layer: str, table: str, partition: str, version: int,
               rows: int | None = None) -> WriteStats:
        files = delta.partition_files(delta.open_table(loc, version), partition).get(partition, [])
        return WriteStats(rows=sum(f.rows for f in files) if rows is None else rows, bytes=sum(f.size for f in files),
                          files=len(files), path=self._display(self.partition_dir(layer, table, partition)),
                          version=version)

    @reachable
    def read_partition(self, layer: str, table: str, partition: str, columns: list[str] | None = None,
                       version: int | None = None) -> pa.Table:
        """The day's rows as one Arrow table (newest version, or `version`)."""
        loc = self.location(layer, table)
        check_day(partition)
        try:
            return delta.read_partition(loc, partition, columns, version)
        except PartitionNotFoundError:
            if version is None:
                self._refuse_legacy(layer, table)
            raise

    @reachable
    def read_days(self, layer: str, table: str, first: str, last: str, columns: list[str] | None = None) -> pa.Table:
        """The rows of every day in [first, last] (with their `date`), newest version; the table must exist."""
        return delta.read_days(self.location(layer, table), first, last, columns)

    @reachable
    def partition_stats(self, layer: str, table: str, partition: str) -> WriteStats:
        loc = self.location(layer, table)
        existing = delta.open_table(loc)
        if existing is None:
            self.read_partition(layer, table, partition)  # raises the clear error
        return self._stats(loc, layer, table, partition, existing.version())

    @reachable
    def versions(self, layer: str, table: str, partition: str, limit: int = 10,
                 depth: int = delta.RECENT_DEPTH) -> list[PartitionVersion]:
        """The newest versions that wrote the day (among the table's last `depth` commits), newest first."""
        return delta.partition_versions(self.location(layer, table), check_day(partition), limit, depth)

    @reachable
    def restore_partition(self, layer: str, table: str, partition: str, version: int,
                          run_id: str | None = None) -> WriteStats:
        loc = self.location(layer, table)
        new_version, rows = delta.restore_partition(loc, check_day(partition), version, run_id)
        return self._stats(loc, layer, table, partition, new_version, rows)

    @reachable
    def restore_table(self, layer: str, table: str, version: int) -> dict:
        return delta.restore_table(self.location(layer, table), version)

    @reachable
    def damaged_partitions(self, layer: str, table: str) -> list[maintenance.Damage]:
        fs, _ = self.filesystem()
        return maintenance.damaged_partitions(self.location(layer, table), fs, self.table_root(layer, table))

    @reachable
    def partition_intact(self, layer: str, table: str, partition: str, version: int) -> bool:
        fs, _ = self.filesystem()
        return maintenance.intact_at(self.location(layer, table), fs, self.table_root(layer, table), partition,
                                     version)

    @reachable
    def stored(self, layer: str, table: str) -> maintenance.StoredFiles:
        """Every data file stored under the table (any version's, or no version's) and their bytes."""
        fs, _ = self.filesystem()
        sizes = maintenance.stored_files(fs, self.table_root(layer, table))
        return maintenance.StoredFiles(len(sizes), sum(sizes.values()))

    @reachable
    def referenced(self, layer: str, table: str) -> maintenance.StoredFiles:
        return maintenance.referenced(self.location(layer, table))

    @reachable
    def compact(self, layer: str, table: str) -> dict:
        return maintenance.compact(self.location(layer, table))

    @reachable
    def vacuum(self, layer: str, table: str, retention_hours: int | None = None) -> list[str]:
        return maintenance.vacuum(self.location(layer, table),
                                  self.retention_hours if retention_hours is None else retention_hours)

    def _check_conditional_writes(self) -> None:
        if not self.is_local:
            check_conditional_writes(self.ENV_VAR, self.parsed.display, self.parsed.location, self.endpoint_url)

"""Parquet files on the local disk or S3, addressed by layer/table/partition (hive layout).

A partition is `<root>/<layer>/<table>/date=YYYY-MM-DD/` holding `part-<batch>-NNNNN.parquet` files and a
`_commit.json` naming the files of the current version. The commit file is written last, so a
re-run replaces a partition atomically on a local disk and on S3 alike: readers follow the commit
file and never see a half-written version; files of older versions are removed after the commit.
"""

from __future__ import annotations

import functools
import json
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

import dagster as dg
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from resources.identifiers import check_day, check_identifier
from resources.urls import ConfigurationError, ParsedUrl, absolute, parse_url

SCHEMES = {"file": "file://relative/dir or file:///absolute/dir", "s3": "s3://bucket/prefix"}
COMMIT_FILE = "_commit.json"
ROWS_PER_FILE = 2_000_000


class PartitionNotFoundError(FileNotFoundError):
    """The lake holds no committed version of the asked partition."""


class LakeUnreachableError(ConnectionError):
    """The object store behind the lake did not answer; the message names the variable."""


def _reachable(method):
    """Turn the S3 client's network errors into one that names AEGIS_LAKE_URL and the endpoint."""

    @functools.wraps(method)
    def wrapper(self: Lake, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except OSError as exc:
            if "NETWORK_CONNECTION" not in str(exc) and "curlCode" not in str(exc):
                raise
            endpoint = self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"
            raise LakeUnreachableError(
                f"{self.ENV_VAR}={self.parsed.display}: cannot reach the object store at {endpoint}: "
                f"{str(exc).split('Details:')[-1].strip()}"
            ) from None

    return wrapper


@dataclass(frozen=True)
class WriteStats:
    rows: int
    bytes: int
    files: int
    path: str


class Lake(dg.ConfigurableResource):
    """The data lake: Parquet per layer/table/day, on a local disk (`file://`) or S3 (`s3://`)."""

    url: str
    endpoint_url: str | None = None  # S3-compatible servers (SeaweedFS, MinIO); else AWS_ENDPOINT_URL
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

    def partition_dir(self, layer: str, table: str, partition: str) -> str:
        _, root = self.filesystem()
        table = check_identifier(table, "table name")
        return "/".join([root, *_segments(layer), table, f"date={check_day(partition)}"])

    @_reachable
    def write_partition(
        self, layer: str, table: str, partition: str, batches: Iterable[pa.RecordBatch], schema: pa.Schema
    ) -> WriteStats:
        """Stream record batches into a new version of the partition and commit it."""
        fs, _ = self.filesystem()
        directory = self.partition_dir(layer, table, partition)
        _ensure_dir(fs, directory)
        version = uuid.uuid4().hex[:12]
        files: list[dict] = []
        writer, name, rows_in_file = None, "", 0
        try:
            for batch in batches:
                if batch.num_rows == 0:
                    continue
                if writer is None or rows_in_file >= ROWS_PER_FILE:
                    if writer is not None:
                        writer.close()
                        files.append({"name": name, "rows": rows_in_file})
                    name = f"part-{version}-{len(files):05d}.parquet"
                    # given the path (not a stream) the writer owns the stream and closes it, which is
                    # what completes an S3 multipart upload
                    writer = pq.ParquetWriter(f"{directory}/{name}", schema, filesystem=fs, compression="zstd")
                    rows_in_file = 0
                writer.write_batch(batch)
                rows_in_file += batch.num_rows
            if writer is None:  # an empty partition is still a committed version, with a schema
                name = f"part-{version}-00000.parquet"
                pq.write_table(schema.empty_table(), f"{directory}/{name}", filesystem=fs, compression="zstd")
            else:
                writer.close()
            files.append({"name": name, "rows": rows_in_file})
        except BaseException:
            for entry in [*files, {"name": name}]:
                _delete_quietly(fs, f"{directory}/{entry['name']}")
            raise
        sizes = {info.base_name: info.size for info in fs.get_file_info(pafs.FileSelector(directory))}
        for entry in files:
            entry["bytes"] = sizes[entry["name"]]
        commit = {"version": version, "files": files, "rows": sum(f["rows"] for f in files)}
        self._write_atomic(fs, f"{directory}/{COMMIT_FILE}", json.dumps(commit).encode())
        for info in fs.get_file_info(pafs.FileSelector(directory)):
            if info.base_name.startswith("part-") and not info.base_name.startswith(f"part-{version}-"):
                _delete_quietly(fs, info.path)
        return WriteStats(rows=commit["rows"], bytes=sum(f["bytes"] for f in files), files=len(files),
                          path=self._display(directory))

    @_reachable
    def read_partition(self, layer: str, table: str, partition: str, columns: list[str] | None = None) -> pa.Table:
        """The committed version of a partition as one Arrow table."""
        fs, _ = self.filesystem()
        directory = self.partition_dir(layer, table, partition)
        commit = self._commit(fs, directory, layer, table, partition)
        # partitioning=None: the hive directory name must not come back as an extra `date` column
        tables = [pq.read_table(f"{directory}/{f['name']}", filesystem=fs, columns=columns, partitioning=None)
                  for f in commit["files"]]
        return pa.concat_tables(tables) if len(tables) > 1 else tables[0]

    @_reachable
    def partition_stats(self, layer: str, table: str, partition: str) -> WriteStats:
        fs, _ = self.filesystem()
        directory = self.partition_dir(layer, table, partition)
        commit = self._commit(fs, directory, layer, table, partition)
        return WriteStats(rows=commit["rows"], bytes=sum(f["bytes"] for f in commit["files"]),
                          files=len(commit["files"]), path=self._display(directory))

    @_reachable
    def has_partition(self, layer: str, table: str, partition: str) -> bool:
        fs, _ = self.filesystem()
        info = fs.get_file_info(f"{self.partition_dir(layer, table, partition)}/{COMMIT_FILE}")
        return info.type == pafs.FileType.File

    @_reachable
    def write_bytes(self, layer: str, table: str, partition: str, name: str, data: bytes) -> str:
        """A small file (a report, an image) beside a partition; returns where it went."""
        fs, _ = self.filesystem()
        directory = self.partition_dir(layer, table, partition)
        _ensure_dir(fs, directory)
        path = f"{directory}/{_file_name(name)}"
        self._write_atomic(fs, path, data)
        return self._display(path)

    @_reachable
    def read_bytes(self, layer: str, table: str, partition: str, name: str) -> bytes:
        fs, _ = self.filesystem()
        with fs.open_input_stream(f"{self.partition_dir(layer, table, partition)}/{_file_name(name)}") as f:
            return f.read()

    def _commit(self, fs: pafs.FileSystem, directory: str, layer: str, table: str, partition: str) -> dict:
        try:
            with fs.open_input_stream(f"{directory}/{COMMIT_FILE}") as f:
                return json.loads(f.read())
        except (FileNotFoundError, OSError) as exc:
            if isinstance(exc, FileNotFoundError) or "NotFound" in str(exc) or "No such" in str(exc):
                raise PartitionNotFoundError(
                    f"no committed partition {layer}/{table}/date={partition} in the lake "
                    f"({self.ENV_VAR}={self.parsed.display}); materialise it first"
                ) from None
            raise

    def write_file(self, path: str, data: bytes) -> None:
        """Write a whole file at a path of this lake's file system, all or nothing."""
        fs, _ = self.filesystem()
        if self.is_local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        self._write_atomic(fs, path, data)

    def _write_atomic(self, fs: pafs.FileSystem, path: str, data: bytes) -> None:
        """Local: write a temporary file then rename. S3: a single PUT is already all-or-nothing."""
        if self.is_local:
            tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        else:
            with fs.open_output_stream(path) as f:
                f.write(data)


def _segments(layer: str) -> list[str]:
    return [check_identifier(part, "lake layer") for part in layer.split("/")]


def _file_name(name: str) -> str:
    stem, dot, ext = name.rpartition(".")
    check_identifier(stem if dot else name, "file name")
    if dot and not ext.isalnum():
        raise ValueError(f"invalid file name {name!r}")
    return name


def _ensure_dir(fs: pafs.FileSystem, directory: str) -> None:
    if isinstance(fs, pafs.LocalFileSystem):
        fs.create_dir(directory, recursive=True)


def _delete_quietly(fs: pafs.FileSystem, path: str) -> None:
    try:
        fs.delete_file(path)
    except (FileNotFoundError, OSError):
        pass

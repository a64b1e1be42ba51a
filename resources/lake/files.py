"""Plain files in the lake, beside the Delta tables: small files next to a partition (reports, images, raw API
bodies), whole files the checkpoint store writes, files Delta names that an erasure deletes — and the one
translation of an unreachable object store into an error naming AEGIS_LAKE_URL. Mixed into `Lake`."""

from __future__ import annotations

import functools
import os
import re
import uuid
from collections.abc import Iterable

import pyarrow.fs as pafs

from resources.identifiers import check_identifier

ANSI = re.compile(r"\x1b\[[0-9;]*m|↳")  # delta-rs colours its error chains


class LakeUnreachableError(ConnectionError):
    """The object store behind the lake did not answer; the message names the variable."""


def reachable(method):
    """Turn the S3 client's network errors into one that names AEGIS_LAKE_URL and the endpoint."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except OSError as exc:
            text = str(exc)
            endpoint = self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"
            if "169.254.169.254" in text:  # no credentials anywhere: the client asked the cloud metadata service
                raise LakeUnreachableError(
                    f"{self.ENV_VAR}={self.parsed.display}: no S3 credentials found (set AWS_ACCESS_KEY_ID and "
                    f"AWS_SECRET_ACCESS_KEY, or a profile or role) for the object store at {endpoint}") from None
            if not any(sign in text for sign in ("NETWORK_CONNECTION", "curlCode", "error sending request",
                                                 "Connection refused", "dns error", "tcp connect")):
                raise
            raise LakeUnreachableError(
                f"{self.ENV_VAR}={self.parsed.display}: cannot reach the object store at {endpoint}: "
                f"{' '.join(re.sub(ANSI, '', text).split('Details:')[-1].split())[-300:]}"
            ) from None

    return wrapper


class LakeFiles:
    """Needs `filesystem()`, `partition_dir()`, `is_local` and `_display()` of the Lake it is mixed into."""

    @reachable
    def write_bytes(self, layer: str, table: str, partition: str, name: str, data: bytes) -> str:
        """A small file (a report, an image) beside a partition; returns where it went."""
        fs, _ = self.filesystem()
        directory = self.partition_dir(layer, table, partition)
        _ensure_dir(fs, directory)
        path = f"{directory}/{_file_name(name)}"
        self._write_atomic(fs, path, data)
        return self._display(path)

    @reachable
    def read_bytes(self, layer: str, table: str, partition: str, name: str) -> bytes:
        fs, _ = self.filesystem()
        with fs.open_input_stream(f"{self.partition_dir(layer, table, partition)}/{_file_name(name)}") as f:
            return f.read()

    def delete_files(self, uris: Iterable[str]) -> None:
        """Delete files named as Delta names them (a local path, file:// or s3:// URI)."""
        fs, _ = self.filesystem()
        for uri in uris:
            path = uri.removeprefix("file://").removeprefix("s3://")
            try:
                fs.delete_file(path)
            except FileNotFoundError:
                pass

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


def _file_name(name: str) -> str:
    stem, dot, ext = name.rpartition(".")
    check_identifier(stem if dot else name, "file name")
    if dot and not ext.isalnum():
        raise ValueError(f"invalid file name {name!r}")
    return name


def _ensure_dir(fs: pafs.FileSystem, directory: str) -> None:
    if isinstance(fs, pafs.LocalFileSystem):
        fs.create_dir(directory, recursive=True)

"""Verified backups of source tables: manifested, checksummed, optionally encrypted Parquet on the lake.

Layout and format: see `resources/checkpoint_format.py`. Verification results, leases and the
recovery audit log live beside the checkpoints, never inside a manifest.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import ClassVar

import dagster as dg
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from resources.checkpoint_format import (
    ENCRYPTION_ALGORITHM,
    FINGERPRINT_ALGORITHM,
    FORMAT,
    FORMAT_VERSION,
    CheckpointKeyError,
    Fingerprint,
    check_checkpoint_id,
    checkpoint_time,
    column_encodings,
    decrypt,
    encrypt,
    key_id,
    new_checkpoint_id,
    parse_key,
    schema_from_text,
    schema_to_text,
    seal,
    unseal,
)
from resources.identifiers import check_identifier
from resources.lake import Lake
from resources.prefetch import prefetched
from resources.source_database import SourceDatabase

MANIFEST = "manifest.json"
LEVELS = ("quick", "full", "deep")
WRITE_CHUNK_ROWS = 65_536


class CheckpointNotFoundError(LookupError):
    """No (complete) checkpoint matches what was asked."""


@dataclass
class Verification:
    table: str
    checkpoint_id: str
    level: str
    ok: bool
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    verified_at: str = ""


class CheckpointStore(dg.ConfigurableResource):
    """Checkpoints of source tables under `<lake>/checkpoints/`, local disk or S3 alike."""

    lake: Lake
    rows_per_file: int = 1_000_000
    codec: str = "zstd"  # or "snappy"
    encryption_key: str | None = None  # None: read AEGIS_CHECKPOINT_KEY at use (never shown in the UI)
    KEY_VAR: ClassVar[str] = "AEGIS_CHECKPOINT_KEY"

    # ------------------------------------------------------------ paths and keys

    def _fs(self) -> tuple[pafs.FileSystem, str]:
        fs, root = self.lake.filesystem()
        return fs, f"{root}/checkpoints"

    def _dir(self, table: str, checkpoint_id: str | None = None) -> str:
        _, root = self._fs()
        path = f"{root}/{check_identifier(table, 'table name')}"
        return path if checkpoint_id is None else f"{path}/{check_checkpoint_id(checkpoint_id)}"

    def _key(self) -> bytes | None:
        text = self.encryption_key if self.encryption_key is not None else os.environ.get(self.KEY_VAR)
        return parse_key(text, self.KEY_VAR)

    def _write(self, path: str, data: bytes) -> None:
        self.lake.write_file(path, data)

    def _read(self, path: str) -> bytes:
        fs, _ = self._fs()
        with fs.open_input_stream(path) as f:
            return f.read()

    def _list_dir(self, path: str) -> list[pafs.FileInfo]:
        fs, _ = self._fs()
        try:
            return fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        except FileNotFoundError:
            return []

    # ------------------------------------------------------------ write

    def write(self, source_db: SourceDatabase, table: str, checkpoint_id: str | None = None) -> dict:
        """Stream `table` into a new checkpoint; the manifest is written last and returned."""
        if self.codec not in ("zstd", "snappy"):
            raise ValueError(f"unsupported checkpoint codec {self.codec!r}: use zstd or snappy")
        key = self._key()  # fails before anything is written when encryption is configured but unusable
        checkpoint_id = check_checkpoint_id(checkpoint_id or new_checkpoint_id())
        directory = self._dir(table, checkpoint_id)
        definition = source_db.describe(table)
        fingerprint, files = Fingerprint(), []
        with source_db.read_table(table) as reader:
            schema = pa.schema([pa.field(f.name, f.type) for f in reader.schema])
            with prefetched(_rechunked(reader, schema)) as chunks:
                part = _PartWriter(schema, self.codec)
                for chunk in chunks:
                    fingerprint.update(chunk)
                    part.write(chunk)
                    if part.rows >= self.rows_per_file:
                        files.append(self._store_part(part, table, checkpoint_id, len(files), key))
                        part = _PartWriter(schema, self.codec)
                if part.rows or not files:
                    files.append(self._store_part(part, table, checkpoint_id, len(files), key))
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "id": checkpoint_id, "table": table,
            "created_at": checkpoint_time(checkpoint_id).isoformat(),
            "source": {"kind": source_db.kind, "ddl": definition.ddl, "indexes": list(definition.indexes)},
            "schema": schema_to_text(schema),
            "columns": [{"name": f.name, "type": str(f.type)} for f in schema],
            "rows": sum(f["rows"] for f in files), "files": files,
            "fingerprint": {"algorithm": FINGERPRINT_ALGORITHM, "value": fingerprint.hexdigest()},
            "codec": self.codec,
            "encryption": {"algorithm": ENCRYPTION_ALGORITHM, "key_id": key_id(key)} if key else None,
            "producer": f"aegis-platform {_producer_version()}",
        }
        self._write(f"{directory}/{MANIFEST}", seal(manifest))
        return manifest

    def _store_part(self, part: _PartWriter, table: str, checkpoint_id: str, number: int,
                    key: bytes | None) -> dict:
        name = f"part-{number:05d}.parquet"
        data = part.finish()
        if key is not None:
            data = encrypt(key, data, associated=f"{table}/{checkpoint_id}/{name}".encode())
        self._write(f"{self._dir(table, checkpoint_id)}/{name}", data)
        return {"path": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "rows": part.rows}

    # ------------------------------------------------------------ read

    def tables(self) -> list[str]:
        _, root = self._fs()
        return sorted(i.base_name for i in self._list_dir(root) if i.type == pafs.FileType.Directory
                      and not i.base_name.startswith("_"))

    def list(self, table: str) -> list[str]:
        """Complete checkpoints of `table` (those with a manifest), oldest first."""
        ids = []
        for info in self._list_dir(self._dir(table)):
            if info.type != pafs.FileType.Directory:
                continue
            try:
                check_checkpoint_id(info.base_name)
            except ValueError:
                continue
            if any(i.base_name == MANIFEST for i in self._list_dir(info.path)):
                ids.append(info.base_name)
        return sorted(ids)

    def manifest(self, table: str, checkpoint_id: str) -> dict:
        try:
            data = self._read(f"{self._dir(table, checkpoint_id)}/{MANIFEST}")
        except FileNotFoundError:
            raise CheckpointNotFoundError(f"checkpoint {checkpoint_id} of {table!r} has no manifest") from None
        manifest = unseal(data)
        if manifest["id"] != checkpoint_id or manifest["table"] != table:
            raise ValueError(f"manifest of {table}/{checkpoint_id} describes {manifest['table']}/{manifest['id']}")
        return manifest

    def candidates(self, table: str, as_of: dt.datetime | None = None) -> list[str]:
        """Checkpoints to restore from, newest first (only those taken at or before `as_of`)."""
        ids = self.list(table)
        if as_of is not None:
            ids = [i for i in ids if checkpoint_time(i) <= as_of.astimezone(dt.UTC)]
        return ids[::-1]

    def key_for(self, table: str, checkpoint_id: str, manifest: dict) -> bytes | None:
        """The key that opens this checkpoint (None when it is plain), or an error saying what is wrong."""
        if not manifest["encryption"]:
            return None
        wanted, key = manifest["encryption"]["key_id"], self._key()
        if key is None:
            raise CheckpointKeyError(
                f"checkpoint {checkpoint_id} of {table!r} is encrypted (key id {wanted}); "
                f"set {self.KEY_VAR} to read it")
        if key_id(key) != wanted:
            raise CheckpointKeyError(
                f"checkpoint {checkpoint_id} of {table!r} was encrypted with key id {wanted}, "
                f"but {self.KEY_VAR} has key id {key_id(key)}")
        return key

    def read_batches(self, table: str, checkpoint_id: str, manifest: dict) -> Iterator[pa.RecordBatch]:
        """Decode a checkpoint part by part (decrypting each), so memory is bounded by one part."""
        key = self.key_for(table, checkpoint_id, manifest)
        for entry in manifest["files"]:
            data = self._read(f"{self._dir(table, checkpoint_id)}/{_part_name(entry)}")
            if key is not None:
                data = decrypt(key, data, associated=f"{table}/{checkpoint_id}/{entry['path']}".encode())
            yield from pq.ParquetFile(io.BytesIO(data)).iter_batches(batch_size=WRITE_CHUNK_ROWS)

    def reader(self, table: str, checkpoint_id: str, manifest: dict) -> pa.RecordBatchReader:
        schema = schema_from_text(manifest["schema"])
        return pa.RecordBatchReader.from_batches(schema, self.read_batches(table, checkpoint_id, manifest))

    # ------------------------------------------------------------ verify

    def verify(self, table: str, checkpoint_id: str, level: str = "full", record: bool = True) -> Verification:
        """quick: manifest seal, files present with their sizes; full: + sha256 and Parquet row counts;
        deep: + decode every row and recompute the fingerprint."""
        if level not in LEVELS:
            raise ValueError(f"unknown verify level {level!r}: use one of {', '.join(LEVELS)}")
        started = dt.datetime.now(dt.UTC)
        result = Verification(table=table, checkpoint_id=check_checkpoint_id(checkpoint_id), level=level, ok=True)
        try:
            manifest = self.manifest(table, checkpoint_id)
            _check_files(self, table, checkpoint_id, manifest, level, result.problems)
            if level == "deep" and not result.problems:
                fp = Fingerprint()
                for batch in self.read_batches(table, checkpoint_id, manifest):
                    fp.update(batch)
                if fp.hexdigest() != manifest["fingerprint"]["value"]:
                    result.problems.append("content fingerprint differs from the manifest")
        except (ValueError, LookupError, OSError, CheckpointKeyError) as exc:
            result.problems.append(str(exc))
        result.ok = not result.problems
        result.verified_at = dt.datetime.now(dt.UTC).isoformat()
        result.seconds = round((dt.datetime.now(dt.UTC) - started).total_seconds(), 3)
        if record:
            self._record_verification(result)
        return result

    def _record_verification(self, result: Verification) -> None:
        _, root = self._fs()
        path = f"{root}/_verifications/{result.table}/{result.checkpoint_id}-{result.level}.json"
        self._write(path, json.dumps(asdict(result), indent=2).encode())

    def latest_verified(self, table: str, level: str = "full") -> str | None:
        for checkpoint_id in self.candidates(table):
            if self.verify(table, checkpoint_id, level).ok:
                return checkpoint_id
        return None

    # ------------------------------------------------------------ retention and garbage

    def lease(self, table: str, checkpoint_id: str) -> str:
        """Mark a checkpoint as being read (by a restore): retention will not delete it."""
        _, root = self._fs()
        path = f"{root}/_leases/{table}/{check_checkpoint_id(checkpoint_id)}-{uuid.uuid4().hex[:8]}.json"
        self._write(path, json.dumps({"since": dt.datetime.now(dt.UTC).isoformat()}).encode())
        return path

    def release(self, lease_path: str) -> None:
        fs, _ = self._fs()
        try:
            fs.delete_file(lease_path)
        except (FileNotFoundError, OSError):
            pass

    def _leased(self, table: str) -> set[str]:
        _, root = self._fs()
        return {i.base_name.rsplit("-", 1)[0] for i in self._list_dir(f"{root}/_leases/{table}")}

    def apply_retention(self, table: str, keep_last: int, keep_within: dt.timedelta,
                        dry_run: bool = True, now: dt.datetime | None = None) -> list[str]:
        """Delete checkpoints beyond the newest `keep_last` and older than `keep_within`; returns them.

        Never deletes the newest verified checkpoint, nor one a restore is reading."""
        if keep_last < 1:
            raise ValueError("keep_last must be at least 1")
        now = now or dt.datetime.now(dt.UTC)
        ids = self.candidates(table)
        protected = set(ids[:keep_last]) | self._leased(table)
        newest_verified = self.latest_verified(table, "full")
        if newest_verified:
            protected.add(newest_verified)
        doomed = [i for i in ids if i not in protected and now - checkpoint_time(i) > keep_within]
        if not dry_run:
            for checkpoint_id in doomed:
                self._delete_dir(self._dir(table, checkpoint_id))
        return doomed

    def collect_garbage(self, table: str, min_age: dt.timedelta = dt.timedelta(hours=1),
                        dry_run: bool = True, now: dt.datetime | None = None) -> list[str]:
        """Directories left by crashed writes (no manifest), older than `min_age`; deleted unless dry run."""
        now = now or dt.datetime.now(dt.UTC)
        complete = set(self.list(table))
        orphans = []
        for info in self._list_dir(self._dir(table)):
            name = info.base_name
            try:
                started = checkpoint_time(name)
            except ValueError:
                continue
            if info.type == pafs.FileType.Directory and name not in complete and now - started > min_age:
                orphans.append(name)
        if not dry_run:
            for name in orphans:
                self._delete_dir(self._dir(table, name))
        return sorted(orphans)

    def _delete_dir(self, path: str) -> None:
        fs, _ = self._fs()
        fs.delete_dir(path)

    # ------------------------------------------------------------ recovery audit log

    def append_audit(self, table: str, record: dict) -> str:
        _, root = self._fs()
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        path = f"{root}/_audit/{check_identifier(table, 'table name')}/{stamp}-{uuid.uuid4().hex[:6]}.json"
        self._write(path, json.dumps(record, indent=2, default=str).encode())
        return path

    def audit_log(self, table: str, limit: int = 20) -> list[dict]:
        """The newest recovery records of `table`, newest first."""
        _, root = self._fs()
        entries = sorted((i for i in self._list_dir(f"{root}/_audit/{check_identifier(table, 'table name')}")
                          if i.base_name.endswith(".json")), key=lambda i: i.base_name, reverse=True)
        return [json.loads(self._read(i.path)) for i in entries[:limit]]


def _rechunked(reader: pa.RecordBatchReader, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """Regroup streamed batches into chunks of WRITE_CHUNK_ROWS rows: one Parquet row group each."""
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for batch in reader:
        pending.append(pa.RecordBatch.from_arrays(batch.columns, schema=schema))
        pending_rows += batch.num_rows
        if pending_rows >= WRITE_CHUNK_ROWS:
            yield pa.Table.from_batches(pending, schema=schema).combine_chunks().to_batches()[0]
            pending, pending_rows = [], 0
    if pending_rows:
        yield pa.Table.from_batches(pending, schema=schema).combine_chunks().to_batches()[0]


class _PartWriter:
    """One Parquet part encoded as its chunks arrive: memory holds compressed bytes, not the rows.
    Column encodings are chosen from the part's first chunk (see `column_encodings`)."""

    def __init__(self, schema: pa.Schema, codec: str) -> None:
        self._schema, self._codec = schema, codec
        self._sink = pa.BufferOutputStream()
        self._writer: pq.ParquetWriter | None = None
        self.rows = 0

    def write(self, chunk: pa.RecordBatch) -> None:
        if self._writer is None:
            self._writer = self._open(column_encodings(chunk))
        self._writer.write_batch(chunk)
        self.rows += chunk.num_rows

    def finish(self) -> bytes:
        (self._writer or self._open({})).close()
        return self._sink.getvalue().to_pybytes()

    def _open(self, encodings: dict[str, str]) -> pq.ParquetWriter:
        dictionary = [name for name in self._schema.names if name not in encodings]
        return pq.ParquetWriter(self._sink, self._schema, compression=self._codec, use_dictionary=dictionary,
                                column_encoding=encodings or None)


def _part_name(entry: dict) -> str:
    name = entry["path"]
    if not isinstance(name, str) or "/" in name or not name.startswith("part-") or ".." in name:
        raise ValueError(f"manifest names an unexpected file {name!r}")
    return name


def _check_files(store: CheckpointStore, table: str, checkpoint_id: str, manifest: dict, level: str,
                 problems: list[str]) -> None:
    directory = store._dir(table, checkpoint_id)
    present = {i.base_name: i.size for i in store._list_dir(directory)}
    for entry in manifest["files"]:
        name = _part_name(entry)
        if name not in present:
            problems.append(f"{name} is missing")
            continue
        if present[name] != entry["bytes"]:
            problems.append(f"{name} has {present[name]} bytes, the manifest says {entry['bytes']}")
            continue
        if level == "quick":
            continue
        data = store._read(f"{directory}/{name}")
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            problems.append(f"{name} sha256 differs from the manifest")
            continue
        key = store.key_for(table, checkpoint_id, manifest)
        if key is not None:
            data = decrypt(key, data, associated=f"{table}/{checkpoint_id}/{name}".encode())
        rows = pq.ParquetFile(io.BytesIO(data)).metadata.num_rows
        if rows != entry["rows"]:
            problems.append(f"{name} holds {rows} rows, the manifest says {entry['rows']}")
    if sum(e["rows"] for e in manifest["files"]) != manifest["rows"]:
        problems.append("file row counts do not add up to the manifest's row count")


def _producer_version() -> str:
    try:
        return version("aegis-platform")
    except PackageNotFoundError:
        return "unknown"

"""Verified backups of source tables: manifested, checksummed, optionally encrypted Parquet on the lake.

Layout and format: see `resources/checkpoint_format.py`. Verification results, leases and the
recovery audit log live beside the checkpoints, never inside a manifest (leases, retention, garbage and
the recovery log: `resources/checkpoint_housekeeping.py`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
from collections.abc import Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import ClassVar

import dagster as dg
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from resources.checkpoints.format import (
    ENCRYPTION_ALGORITHM,
    FORMAT,
    FORMAT_VERSION,
    CheckpointKeyError,
    check_checkpoint_id,
    checkpoint_time,
    decrypt,
    encrypt,
    key_id,
    new_checkpoint_id,
    schema_from_text,
    schema_to_text,
    seal,
    unseal,
)
from resources.checkpoints.housekeeping import CheckpointHousekeeping
from resources.checkpoints.keys import KEY_VAR, RING_VAR, Keyring, parse_ring
from resources.checkpoints.parts import WRITE_CHUNK_ROWS, PartWriter, rechunked
from resources.checkpoints.rekey import CheckpointRekeying
from resources.checkpoints.sealing import seal_batch, sealed_schema, subjects_of, unseal_batch
from resources.checkpoints.subject_keys import SubjectKeys
from resources.checkpoints.verification import LEVELS, CheckpointVerification, Verification, part_name
from resources.databases.source_database import SourceDatabase
from resources.databases.table_capture import Captured
from resources.databases.table_refs import TableRef, check_table_id
from resources.fingerprints import FINGERPRINT_ALGORITHM, Fingerprint
from resources.identifiers import check_identifier
from resources.lake.lake import Lake
from resources.prefetch import prefetched
from resources.subjects import Sealing, sealing_for

MANIFEST = "manifest.json"
__all__ = ["LEVELS", "MANIFEST", "CheckpointNotFoundError", "CheckpointStore", "Verification"]


class CheckpointNotFoundError(LookupError):
    """No (complete) checkpoint matches what was asked."""


class CheckpointStore(CheckpointVerification, CheckpointHousekeeping, CheckpointRekeying, dg.ConfigurableResource):
    """Checkpoints of source tables under `<lake>/checkpoints/`, local disk or S3 alike."""

    lake: Lake
    rows_per_file: int = 1_000_000
    codec: str = "zstd"  # or "snappy"
    encryption_key: str | None = None  # None: the keyring of the environment, read at use (never shown in the UI)
    KEY_VAR: ClassVar[str] = KEY_VAR
    RING_VAR: ClassVar[str] = RING_VAR

    # ------------------------------------------------------------ paths and keys

    def _fs(self) -> tuple[pafs.FileSystem, str]:
        fs, root = self.lake.filesystem()
        return fs, f"{root}/checkpoints"

    def _dir(self, table: str, checkpoint_id: str | None = None) -> str:
        _, root = self._fs()
        path = f"{root}/{check_table_id(table)}"
        return path if checkpoint_id is None else f"{path}/{check_checkpoint_id(checkpoint_id)}"

    def keyring(self) -> Keyring:
        """AEGIS_CHECKPOINT_KEYS (+ AEGIS_CHECKPOINT_KEY), or the one key configured on the resource."""
        if self.encryption_key is not None:
            return parse_ring(None, self.encryption_key)
        return parse_ring(os.environ.get(RING_VAR), os.environ.get(KEY_VAR))

    def _key(self) -> bytes | None:
        """The key new checkpoints are encrypted with (None: not encrypted)."""
        return self.keyring().current_key

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

    def write(self, source_db: SourceDatabase, table: str | TableRef, checkpoint_id: str | None = None) -> dict:
        """Take a checkpoint of one table (a platform table's name, or a protected table's reference)."""
        ref = table if isinstance(table, TableRef) else TableRef(None, check_identifier(table, "table name"))
        self._key()  # an unusable key fails before the database is even read
        with source_db.capture([ref]) as captured:
            return self.write_captured(captured[ref.id], checkpoint_id)

    def write_captured(self, captured: Captured, checkpoint_id: str | None = None,
                       together: Sequence[Captured] = ()) -> dict:
        """Stream a captured table (see `SourceDatabase.capture`) into a new checkpoint; the manifest is
        written last and returned. The database's own fingerprint seals the values; a second one over the
        Arrow data lets deep verification re-check the files without a database. `together`: the tables of a
        consistency group captured from the same snapshot, whose rows and fingerprints the manifest records."""
        if self.codec not in ("zstd", "snappy"):
            raise ValueError(f"unsupported checkpoint codec {self.codec!r}: use zstd or snappy")
        key = self._key()  # fails before anything is written when encryption is configured but unusable
        table = captured.ref.id
        checkpoint_id = check_checkpoint_id(checkpoint_id or new_checkpoint_id())
        schema, content, files = captured.schema, Fingerprint(), []
        sealing = sealing_for(table, schema)
        stored = schema
        if sealing:  # each person's values under their own key: erasable without rewriting the checkpoint
            stored, people, known = sealed_schema(schema, sealing), SubjectKeys(self.lake), None
        with prefetched(rechunked(captured.batches(), schema)) as chunks:
            part = PartWriter(stored, self.codec)
            for chunk in chunks:
                if sealing:
                    known = people.load(table) if known is None else known
                    keys = people.ensure(table, {s for s in subjects_of(chunk, sealing) if s is not None}, known)
                    chunk = seal_batch(chunk, table, sealing, keys)
                content.update(chunk)
                part.write(chunk)
                if part.rows >= self.rows_per_file:
                    files.append(self._store_part(part, table, checkpoint_id, len(files), key))
                    part = PartWriter(stored, self.codec)
            if part.rows or not files:
                files.append(self._store_part(part, table, checkpoint_id, len(files), key))
        rows = sum(f["rows"] for f in files)
        if rows != captured.rows:
            raise ValueError(f"read {rows} rows of {captured.ref.label}, the snapshot holds {captured.rows}")
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "id": checkpoint_id, "table": table,
            "created_at": checkpoint_time(checkpoint_id).isoformat(),
            "source": captured.definition,
            "schema": schema_to_text(stored),
            "sealed": {"subject": sealing.subject, "columns": list(sealing.columns), "schema": schema_to_text(schema),
                       "fingerprint_without_personal": captured.fingerprint_without_personal} if sealing else None,
            "columns": [{"name": c["name"], "type": c["type"], "travel": c["travel"]}
                        for c in captured.definition["columns"]],
            "rows": rows, "files": files,
            "fingerprint": {"algorithm": captured.definition["fingerprint_algorithm"],
                            "value": captured.fingerprint},
            "content_fingerprint": {"algorithm": FINGERPRINT_ALGORITHM, "value": content.hexdigest()},
            "codec": self.codec,
            "encryption": {"algorithm": ENCRYPTION_ALGORITHM, "key_id": key_id(key)} if key else None,
            "producer": f"aegis-platform {_producer_version()}",
            "consistency_group": {"tables": [c.ref.id for c in together],
                                  "snapshot": {c.ref.id: {"rows": c.rows, "fingerprint": c.fingerprint}
                                               for c in together}} if len(together) > 1 else None,
        }
        self._write(f"{self._dir(table, checkpoint_id)}/{MANIFEST}", seal(manifest))
        return manifest

    def _store_part(self, part: PartWriter, table: str, checkpoint_id: str, number: int,
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
        found = []
        for info in self._list_dir(root):
            if info.type != pafs.FileType.Directory or info.base_name.startswith("_"):
                continue
            inner = [i for i in self._list_dir(info.path) if i.type == pafs.FileType.Directory]
            if any(_is_checkpoint_id(i.base_name) for i in inner) or not inner:
                found.append(info.base_name)
            else:  # a schema directory: ops/orders
                found.extend(f"{info.base_name}/{i.base_name}" for i in inner)
        return sorted(found)

    def list(self, table: str) -> list[str]:
        """Complete checkpoints of `table` (those with a manifest), oldest first: one listing of the table's
        directory tree (one request on S3, however many checkpoints there are)."""
        fs, _ = self._fs()
        root = self._dir(table)
        try:
            infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True, recursive=True))
        except FileNotFoundError:
            return []
        prefix, ids = root.rstrip("/") + "/", set()
        for info in infos:
            parts = info.path[len(prefix):].split("/") if info.path.startswith(prefix) else []
            if len(parts) == 2 and parts[1] == MANIFEST and info.type == pafs.FileType.File \
                    and _is_checkpoint_id(parts[0]):
                ids.add(parts[0])
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

    def newest_manifest(self, table: str) -> dict | None:
        """The manifest of the newest checkpoint whose manifest can be read (None when there is none)."""
        for checkpoint_id in self.candidates(table):
            try:
                return self.manifest(table, checkpoint_id)
            except (ValueError, LookupError, OSError):
                continue
        return None

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
        wanted, ring = manifest["encryption"]["key_id"], self.keyring()
        key = ring.key(wanted)
        if key is None:
            held = ring.describe() or "no key"
            raise CheckpointKeyError(
                f"checkpoint {checkpoint_id} of {table!r} was encrypted with key id {wanted}, which is not in "
                f"{RING_VAR} / {KEY_VAR} (they hold: {held}); add that key to the ring to read it")
        return key

    def read_batches(self, table: str, checkpoint_id: str, manifest: dict, unseal: bool = True,
                     erased: list[int] | None = None) -> Iterator[pa.RecordBatch]:
        """Decode a checkpoint part by part (decrypting each), so memory is bounded by one part. Sealed personal
        values are opened with their person's key (NULL where it was destroyed; `erased[0]` counts those rows),
        unless `unseal` is False (the bytes as stored, for verification)."""
        key = self.key_for(table, checkpoint_id, manifest)
        sealed = manifest.get("sealed") if unseal else None
        keys = SubjectKeys(self.lake).load(table) if sealed else {}
        original = schema_from_text(sealed["schema"]) if sealed else None
        sealing = Sealing(sealed["subject"], tuple(sealed["columns"])) if sealed else None
        for entry in manifest["files"]:
            data = self._read(f"{self._dir(table, checkpoint_id)}/{part_name(entry)}")
            if key is not None:
                data = decrypt(key, data, associated=f"{table}/{checkpoint_id}/{entry['path']}".encode())
            for batch in pq.ParquetFile(io.BytesIO(data)).iter_batches(batch_size=WRITE_CHUNK_ROWS):
                if sealing:
                    batch, gone = unseal_batch(batch, table, sealing, keys, original)
                    if erased is not None:
                        erased[0] += gone
                yield batch

    def reader(self, table: str, checkpoint_id: str, manifest: dict) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(restored_schema(manifest),
                                                 self.read_batches(table, checkpoint_id, manifest))

def restored_schema(manifest: dict) -> pa.Schema:
    """The rows' schema as restored (a sealed checkpoint stores its personal columns as ciphertext)."""
    return schema_from_text((manifest.get("sealed") or {}).get("schema") or manifest["schema"])


def _is_checkpoint_id(name: str) -> bool:
    try:
        check_checkpoint_id(name)
    except ValueError:
        return False
    return True


def _producer_version() -> str:
    try:
        return version("aegis-platform")
    except PackageNotFoundError:
        return "unknown"

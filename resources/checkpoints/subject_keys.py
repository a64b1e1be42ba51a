"""Per-person keys for sealed personal columns (resources/checkpoints/sealing.py), kept in the lake as a small Delta
table per subject table: `<lake>/_aegis/subject_keys/<table>` (subject, key).

- Adding keys is an append: two checkpoints adding a key for the same new person at once both commit; the
  person then has two keys, and each sealed value opens with the one it was sealed with (AES-GCM says which).
  A key is committed before any checkpoint part sealed with it is written.
- Destroying a person's keys deletes their rows (a Delta commit rewriting the files that held them) and then
  deletes exactly those replaced files, so no file of the table's history holds a destroyed key — without a
  general vacuum that could remove a concurrent writer's not yet committed file. Only the subject column
  carries statistics in the Delta log, never a key.
"""

from __future__ import annotations

import os

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from resources.lake.lake import Lake

SCHEMA = pa.schema([("subject", pa.string()), ("key", pa.binary())])
_PROPERTIES = {"delta.dataSkippingNumIndexedCols": "1"}  # statistics for `subject` only


class SubjectKeys:
    def __init__(self, lake: Lake) -> None:
        self.lake = lake

    def _uri(self, table: str) -> tuple[str, dict[str, str]]:
        return self.lake.internal_uri("subject_keys", table.replace("/", "__"))

    def _open(self, table: str) -> DeltaTable | None:
        uri, options = self._uri(table)
        try:
            return DeltaTable(uri, storage_options=options)
        except Exception:  # noqa: BLE001 - no table yet (the error type differs between local and S3)
            return None

    def load(self, table: str) -> dict[str, list[bytes]]:
        found: dict[str, list[bytes]] = {}
        existing = self._open(table)
        if existing is not None:
            rows = existing.to_pyarrow_table(columns=["subject", "key"])
            for subject, key in zip(rows["subject"].to_pylist(), rows["key"].to_pylist(), strict=True):
                found.setdefault(subject, []).append(key)
        return found

    def ensure(self, table: str, subjects: set[str], known: dict[str, list[bytes]]) -> dict[str, bytes]:
        """A key for every subject (`known` is updated with the ones created, committed before returning)."""
        new = {s: os.urandom(32) for s in sorted(subjects) if s not in known}
        if new:
            uri, options = self._uri(table)
            write_deltalake(uri, pa.table({"subject": list(new), "key": list(new.values())}, schema=SCHEMA),
                            mode="append", storage_options=options, configuration=_PROPERTIES)
            for subject, key in new.items():
                known[subject] = [key]
        return {s: known[s][0] for s in subjects}

    def destroy(self, table: str, subject: str) -> int:
        """Delete every key of `subject` and every file that ever held one; returns how many keys there were."""
        existing = self._open(table)
        if existing is None:
            return 0
        count = sum(1 for s in existing.to_pyarrow_table(columns=["subject"])["subject"].to_pylist() if s == subject)
        if count:
            before = set(existing.file_uris())
            existing.delete(f"subject = '{subject.replace(chr(39), chr(39) * 2)}'")
            self.lake.delete_files(before - set(self._open(table).file_uris()))
        return count

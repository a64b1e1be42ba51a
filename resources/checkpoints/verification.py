"""Is a checkpoint still what its manifest says? Three levels — quick (manifest seal, files present with their
sizes), full (+ sha256 and Parquet row counts), deep (+ decode every row and recompute the content
fingerprint) — and the record of each verification, kept beside the checkpoints. Mixed into
`CheckpointStore`, whose paths, keys and file access it uses."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from dataclasses import asdict, dataclass, field

import pyarrow.parquet as pq

from resources.checkpoints.format import CheckpointKeyError, check_checkpoint_id, decrypt
from resources.checkpoints.housekeeping import flat
from resources.fingerprints import Fingerprint

LEVELS = ("quick", "full", "deep")


@dataclass
class Verification:
    table: str
    checkpoint_id: str
    level: str
    ok: bool
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    verified_at: str = ""



class CheckpointVerification:
    def verify(self, table: str, checkpoint_id: str, level: str = "full", record: bool = True) -> Verification:
        """quick: manifest seal, files present with their sizes; full: + sha256 and Parquet row counts;
        deep: + decode every row and recompute the fingerprint."""
        if level not in LEVELS:
            raise ValueError(f"unknown verify level {level!r}: use one of {', '.join(LEVELS)}")
        started = dt.datetime.now(dt.UTC)
        result = Verification(table=table, checkpoint_id=check_checkpoint_id(checkpoint_id), level=level, ok=True)
        try:
            manifest = self.manifest(table, checkpoint_id)
            check_files(self, table, checkpoint_id, manifest, level, result.problems)
            if level == "deep" and not result.problems:
                fp = Fingerprint()
                for batch in self.read_batches(table, checkpoint_id, manifest, unseal=False):  # the bytes as stored
                    fp.update(batch)
                if fp.hexdigest() != manifest["content_fingerprint"]["value"]:
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
        path = f"{root}/_verifications/{flat(result.table)}/{result.checkpoint_id}-{result.level}.json"
        self._write(path, json.dumps(asdict(result), indent=2).encode())

    def last_verification(self, table: str, checkpoint_id: str) -> Verification | None:
        """The most recent verification recorded for a checkpoint (any level), or None."""
        _, root = self._fs()
        directory = f"{root}/_verifications/{flat(table)}"
        found = []
        for level in LEVELS:
            try:
                found.append(Verification(**json.loads(self._read(
                    f"{directory}/{check_checkpoint_id(checkpoint_id)}-{level}.json"))))
            except (OSError, ValueError, TypeError):
                continue
        return max(found, key=lambda v: v.verified_at, default=None)

    def latest_verified(self, table: str, level: str = "full") -> str | None:
        for checkpoint_id in self.candidates(table):
            if self.verify(table, checkpoint_id, level).ok:
                return checkpoint_id
        return None


def part_name(entry: dict) -> str:
    name = entry["path"]
    if not isinstance(name, str) or "/" in name or not name.startswith("part-") or ".." in name:
        raise ValueError(f"manifest names an unexpected file {name!r}")
    return name


def check_files(store: CheckpointVerification, table: str, checkpoint_id: str, manifest: dict, level: str,
                 problems: list[str]) -> None:
    directory = store._dir(table, checkpoint_id)
    present = {i.base_name: i.size for i in store._list_dir(directory)}
    for entry in manifest["files"]:
        name = part_name(entry)
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

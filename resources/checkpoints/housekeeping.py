"""What keeps a checkpoint store tidy and accountable: leases (a restore is reading this checkpoint),
retention (which checkpoints go, and why the others stay), garbage left by crashed writers, and the
recovery log of every restore. Mixed into `CheckpointStore`, whose paths and file access it uses."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid

import pyarrow.fs as pafs

from resources.checkpoints.format import check_checkpoint_id, checkpoint_time
from resources.checkpoints.retention import retention_reasons, retirement_reasons
from resources.databases.table_refs import check_table_id

LEASE_HOURS = 6  # longer than any restore; a lease older than this was left by a crashed one
_LEASE = re.compile(r"^(\d{8}T\d{12}Z-[0-9a-f]{6})-(\d{8}T\d{6}Z)-[0-9a-f]{8}\.json$")


def flat(table: str) -> str:
    """A table id as one path segment (`ops/orders` → `ops.orders`) for the store's own bookkeeping."""
    return check_table_id(table).replace("/", ".")


class CheckpointHousekeeping:
    def lease(self, table: str, checkpoint_id: str) -> str:
        """Mark a checkpoint as being read (by a restore): retention will not delete it."""
        _, root = self._fs()
        now = dt.datetime.now(dt.UTC)
        name = f"{check_checkpoint_id(checkpoint_id)}-{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}.json"
        path = f"{root}/_leases/{flat(table)}/{name}"
        self._write(path, json.dumps({"since": now.isoformat()}).encode())
        return path

    def release(self, lease_path: str) -> None:
        fs, _ = self._fs()
        try:
            fs.delete_file(lease_path)
        except (FileNotFoundError, OSError):
            pass

    def leased(self, table: str, now: dt.datetime | None = None) -> set[str]:
        """Checkpoints a restore is reading. A lease expires after LEASE_HOURS: a restore that crashed
        does not pin its checkpoint forever."""
        _, root = self._fs()
        now, leased = now or dt.datetime.now(dt.UTC), set()
        for info in self._list_dir(f"{root}/_leases/{flat(table)}"):
            match = _LEASE.match(info.base_name)
            if match and now - dt.datetime.strptime(match.group(2), "%Y%m%dT%H%M%SZ").replace(
                    tzinfo=dt.UTC) < dt.timedelta(hours=LEASE_HOURS):
                leased.add(match.group(1))
        return leased

    def retention(self, table: str, keep_last: int, keep_within: dt.timedelta,
                  now: dt.datetime | None = None, retired: bool = False) -> dict[str, str | None]:
        """Each complete checkpoint of `table`, newest first, with why retention keeps it (None: it goes). A
        `retired` table (no longer configured) keeps each checkpoint only for `keep_within`."""
        if retired:
            return retirement_reasons(self.candidates(table), keep_within, self.leased(table),
                                      now or dt.datetime.now(dt.UTC))
        return retention_reasons(self.candidates(table), keep_last, keep_within,
                                 self.latest_verified(table, "full"), self.leased(table),
                                 now or dt.datetime.now(dt.UTC))

    def apply_retention(self, table: str, keep_last: int, keep_within: dt.timedelta,
                        dry_run: bool = True, now: dt.datetime | None = None) -> list[str]:
        """Delete checkpoints beyond the newest `keep_last` and older than `keep_within`; returns them.

        Never deletes the newest verified checkpoint, nor one a restore is reading."""
        reasons = self.retention(table, keep_last, keep_within, now)
        return [i for i, reason in reasons.items() if reason is None] if dry_run else self.expire(table, reasons)

    def expire(self, table: str, reasons: dict[str, str | None]) -> list[str]:
        """Delete the checkpoints `retention` gave no reason to keep; returns them."""
        doomed = [checkpoint_id for checkpoint_id, reason in reasons.items() if reason is None]
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
        path = f"{root}/_audit/{flat(table)}/{stamp}-{uuid.uuid4().hex[:6]}.json"
        self._write(path, json.dumps(record, indent=2, default=str).encode())
        return path

    def audit_log(self, table: str, limit: int = 20) -> list[dict]:
        """The newest recovery records of `table`, newest first."""
        _, root = self._fs()
        entries = sorted((i for i in self._list_dir(f"{root}/_audit/{flat(table)}")
                          if i.base_name.endswith(".json")), key=lambda i: i.base_name, reverse=True)
        return [json.loads(self._read(i.path)) for i in entries[:limit]]

    def audit_log_all(self, limit: int = 100) -> list[dict]:
        """The newest recovery records of every table, newest first."""
        _, root = self._fs()
        entries = [i for directory in self._list_dir(f"{root}/_audit") if directory.type == pafs.FileType.Directory
                   for i in self._list_dir(directory.path) if i.base_name.endswith(".json")]
        entries.sort(key=lambda i: i.base_name, reverse=True)
        return [json.loads(self._read(i.path)) for i in entries[:limit]]

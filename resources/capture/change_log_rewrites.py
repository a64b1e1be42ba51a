"""Rewriting the change log where people's rights or keys require it: `forget_customer` blanking one person's
personal values in every change of theirs, and key rotation sealing every change again under the current key.
Each rewrites a table's part of the log in one commit and deletes exactly the files it replaced, so no earlier
version keeps what was removed."""

from __future__ import annotations

import json

import pyarrow as pa
from deltalake import write_deltalake

from resources.capture.change_log import SCHEMA, delta_table, location, read, scan, seal, stamped
from resources.checkpoints.keys import Keyring
from resources.lake.lake import Lake


def erase_subject(lake: Lake, relation: str, subject_column: str, personal: tuple[str, ...], subject: str,
                  keyring: Keyring | None) -> int:
    """Blank one person's personal values in every change of `relation` (new and old rows whose subject column is
    `subject`), the partition rewritten in one commit and exactly the files it replaced deleted — so no earlier
    version holds them. A replay then restores that person without their personal values, as a checkpoint whose
    person key was destroyed does. Returns the changes touched."""
    loc = location(lake)
    if delta_table(loc) is None:
        return 0
    rows = read(loc, relation, keyring=keyring).to_pylist()
    touched = 0
    for row in rows:
        if not row["columns"]:
            continue
        names = [c[0] for c in json.loads(row["columns"])["columns"]]
        if subject_column not in names:
            continue
        at, blank = names.index(subject_column), [names.index(c) for c in personal if c in names]
        hit = False
        for side in ("new", "old"):
            values = row[side]
            if values is not None and values[at] == subject:
                for i in blank:
                    values[i] = None
                hit = True
        touched += hit
    if not touched:
        return 0
    if keyring is not None:
        seal(rows, keyring)
    _rewrite(lake, relation, rows)
    return touched


def _rewrite(lake: Lake, relation: str, rows: list[dict]) -> None:
    """Replace a relation's part of the log with `rows` in one commit, and delete exactly the files it replaced
    (no earlier version keeps them). Changes appended meanwhile by the capture are in files of their own: kept."""
    loc = location(lake)
    log = delta_table(loc)
    held = set(log.file_uris(partition_filters=[("relation", "=", relation)]))
    write_deltalake(log, stamped(pa.Table.from_pylist(rows, schema=SCHEMA)), mode="overwrite",
                    partition_by=["relation"], predicate=f"relation = '{relation.replace(chr(39), chr(39) * 2)}'",
                    storage_options=loc.storage_options)
    now = delta_table(loc)
    lake.delete_files(held - set(now.file_uris(partition_filters=[("relation", "=", relation)])))


def sealed_with(lake: Lake, key_id: str) -> dict[str, int]:
    """How many changes of each relation are sealed with key `key_id`."""
    found = scan(location(lake), ["relation"], [("key_id", "=", key_id)])
    counted = found.group_by("relation").aggregate([([], "count_all")]).to_pylist() if found.num_rows else []
    return {row["relation"]: row["count_all"] for row in counted}


def rekey(lake: Lake, keyring: Keyring) -> dict[str, int]:
    """Seal again, under the ring's current key, every change sealed with another one (each relation's part
    rewritten in one commit, the replaced files deleted); returns the changes moved per relation."""
    current = keyring.current
    if current is None:
        return {}
    found = scan(location(lake), ["relation", "key_id"], [("key_id", "!=", current)])
    moved = {}
    for relation in sorted(set(found["relation"].to_pylist())):
        rows = read(location(lake), relation, keyring=keyring).to_pylist()
        moved[relation] = sum(1 for row in rows if row["key_id"] not in (None, current))
        seal(rows, keyring)
        _rewrite(lake, relation, rows)
    return moved

"""Restoring the tables of a consistency group: together, from checkpoints one snapshot wrote (they share a
checkpoint id), or one of them alone — and then saying when its partners have changed since, because their
rows may refer to rows the restore did not bring back (or be referred to by rows it removed)."""

from __future__ import annotations

import datetime as dt

from resources import CheckpointStore, SourceDatabase
from resources.checkpoints.format import check_checkpoint_id
from resources.checkpoints.store import CheckpointNotFoundError
from resources.databases.table_refs import TableRef


def common_candidates(store: CheckpointStore, tables: list[str], checkpoint_id: str | None = None,
                      as_of: dt.datetime | None = None) -> list[str]:
    """Checkpoints every one of `tables` has — one snapshot each, since ids are unique per run — newest
    first (exactly `checkpoint_id` when given)."""
    if checkpoint_id:
        check_checkpoint_id(checkpoint_id)
        missing = [t for t in tables if checkpoint_id not in store.list(t)]
        if missing:
            raise CheckpointNotFoundError(f"checkpoint {checkpoint_id} was not taken of {', '.join(missing)}: a "
                                          "group is restored from a checkpoint taken of all its tables at once")
        return [checkpoint_id]
    first, *others = [store.candidates(t, as_of) for t in tables]
    others = [set(ids) for ids in others]
    common = [i for i in first if all(i in ids for ids in others)]
    if not common:
        when = f" at or before {as_of.isoformat()}" if as_of else ""
        raise CheckpointNotFoundError(f"no checkpoint of {', '.join(tables)} was taken together{when}; restore "
                                      "them one at a time, or checkpoint them together first")
    return common


def partners_changed(store: CheckpointStore, source_db: SourceDatabase, table: str, checkpoint_id: str,
                     partners: list[TableRef]) -> list[str]:
    """Warnings for the partners of `table` that are not as they were when `checkpoint_id` was taken."""
    snapshot = (store.manifest(table, checkpoint_id).get("consistency_group") or {}).get("snapshot", {})
    warnings = []
    for partner in partners:
        if not source_db.table_exists(partner):
            warnings.append(f"{partner.label}, of the same consistency group, is missing too: restore them "
                            "together so both come back to the same moment")
            continue
        then = snapshot.get(partner.id)
        if then is None:
            warnings.append(f"checkpoint {checkpoint_id} of {table} was taken without {partner.label} (same "
                            "consistency group): cannot tell whether its rows still match")
            continue
        rows, fingerprint = source_db.fingerprint(partner)
        if (rows, fingerprint) != (then["rows"], then["fingerprint"]):
            warnings.append(
                f"{partner.label} (same consistency group) has changed since checkpoint {checkpoint_id} "
                f"({rows:,} rows now, {then['rows']:,} then): its rows may refer to rows of {table} this restore "
                f"did not bring back. To bring both to that moment, restore them together (select both "
                f"recovery assets; {partner.label} is then replaced and kept aside)")
    return warnings

"""Restore a source table from a checkpoint, as explicit steps (like Litestream's restore):

    verify → set aside (a table in the way, when allowed) → create → load → compare → complete → record

All database work happens in one transaction: until it commits, the live table is untouched and the
restored one invisible; any failure rolls everything back. `create` gives the table its exact schema in its
own place (or, beside the live table, the same columns); `load` writes every value with its exact type;
`compare` checks the row count and the database's own fingerprint of the rows against the checkpoint's;
`complete` adds what follows the rows (constraints, indexes, triggers, policies, sequences, the foreign
keys of other tables). A table in the way is never dropped: it is renamed aside (when the caller allowed it
to be replaced, see `platform_assets/safeguard.py`). When a checkpoint fails, the restore falls back to the
next older one (unless one was asked for by id).
"""

import datetime as dt
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pyarrow as pa

from platform_assets.protection import point_in_time
from platform_assets.protection.point_in_time import Cut
from platform_assets.protection.safeguard import aside_suffix
from resources.checkpoints.format import check_checkpoint_id
from resources.checkpoints.store import CheckpointNotFoundError, CheckpointStore, restored_schema
from resources.databases.source_database import SourceDatabase
from resources.databases.table_refs import TableRef, check_table_id
from resources.databases.table_restorer import Restorer
from resources.identifiers import check_identifier
from resources.prefetch import prefetched


class RestoreError(RuntimeError):
    """One checkpoint could not be restored; the live table was left as it was."""


class RestoreFailedError(RuntimeError):
    """No checkpoint could be restored; the live table was left as it was."""


@dataclass
class Part:
    """One table of a restore: its id, the name to restore it under, what to rename a table in the way to."""

    table: str
    target: str
    aside: str | None = None


@dataclass
class RestorePlan:
    table: str
    target: str
    candidates: list[str]  # newest first; the first that survives every step wins
    explicit: bool  # a checkpoint was asked for by id: no fallback


@dataclass
class RestoreOutcome:
    table: str
    target: str
    checkpoint_id: str
    rows: int
    fingerprint: str
    seconds: dict[str, float]
    failed_attempts: list[dict] = field(default_factory=list)
    kept_aside: dict | None = None  # the table that was in the way: {"table": its new name, "rows": …}
    warnings: list[str] = field(default_factory=list)  # schema objects that could not be re-created as they were
    replayed: dict | None = None  # the change log's changes applied after the checkpoint (a restore to a commit)


def plan_restore(store: CheckpointStore, table: str, checkpoint_id: str | None = None,
                 as_of: dt.datetime | None = None, target_table: str | None = None) -> RestorePlan:
    check_table_id(table)
    if target_table:
        check_identifier(target_table, "target table name")
    if checkpoint_id:
        check_checkpoint_id(checkpoint_id)
        if checkpoint_id not in store.list(table):
            raise CheckpointNotFoundError(f"no complete checkpoint {checkpoint_id} of {table!r}")
        candidates = [checkpoint_id]
    else:
        candidates = store.candidates(table, as_of)
        if not candidates:
            when = f" taken at or before {as_of.isoformat()}" if as_of else ""
            raise CheckpointNotFoundError(f"no checkpoint of {table!r}{when} to restore from")
    return RestorePlan(table, target_table or original_name(store, table, candidates), candidates,
                       explicit=bool(checkpoint_id))


def original_name(store: CheckpointStore, table: str, candidates: list[str]) -> str:
    """The table's name in the database, from the first readable manifest (ids may be slugs of it)."""
    for checkpoint_id in candidates:
        try:
            return TableRef.from_json(store.manifest(table, checkpoint_id)["source"]["table"]).name
        except (ValueError, LookupError, OSError, KeyError):
            continue
    return table.rsplit("/", 1)[-1]  # no manifest can be read: every candidate will fail verification anyway


def restore(store: CheckpointStore, source_db: SourceDatabase, plan: RestorePlan, aside: str | None = None,
            log: Callable[[str], None] = print, cut: Cut | None = None) -> RestoreOutcome:
    """Try the plan's checkpoints in order until one restores completely. A table at the target is renamed
    `aside` in the restore's transaction; without `aside`, a present target fails the restore."""
    return restore_group(store, source_db, [Part(plan.table, plan.target, aside)], plan.candidates, plan.explicit,
                         log, cut)[0]


def restore_group(store: CheckpointStore, source_db: SourceDatabase, parts: list[Part], candidates: list[str],
                  explicit: bool, log: Callable[[str], None] = print, cut: Cut | None = None) -> list[RestoreOutcome]:
    """Restore the parts together from the first of `candidates` (checkpoint ids every part has, newest
    first) that restores completely; with `explicit`, only the first is tried."""
    failures: list[dict] = []
    label = " + ".join(p.table for p in parts)
    for checkpoint_id in candidates:
        try:
            outcomes = restore_together(store, source_db, parts, checkpoint_id, cut)
        except Exception as exc:  # noqa: BLE001 - any failure of one checkpoint means: try the previous one
            failures.append({"checkpoint_id": checkpoint_id, "error": f"{type(exc).__name__}: {exc}"})
            log(f"checkpoint {checkpoint_id} of {label} could not be restored ({exc}); the live "
                f"table{'s are' if len(parts) > 1 else ' is'} untouched"
                + ("" if explicit else ", trying the previous one"))
            if explicit:
                break
            continue
        for outcome in outcomes:
            outcome.failed_attempts = failures
        return outcomes
    raise RestoreFailedError(
        f"could not restore {label} from any of {len(candidates)} checkpoint(s); the live "
        f"table{'s were' if len(parts) > 1 else ' was'} left as {'they were' if len(parts) > 1 else 'it was'}: "
        + "; ".join(f"{f['checkpoint_id']}: {f['error']}" for f in failures))


def restore_one(store: CheckpointStore, source_db: SourceDatabase, table: str, target: str,
                checkpoint_id: str, aside: str | None = None) -> RestoreOutcome:
    return restore_together(store, source_db, [Part(table, target, aside)], checkpoint_id)[0]


def restore_together(store: CheckpointStore, source_db: SourceDatabase, parts: list[Part],
                     checkpoint_id: str, cut: Cut | None = None) -> list[RestoreOutcome]:
    """Restore every part from checkpoint `checkpoint_id` (of each table: one snapshot when the tables are a
    consistency group) in one transaction, then (with a `cut`) replay the change log up to it. `parts` come in
    completion order: referenced tables first."""
    seconds: dict[str, dict[str, float]] = {p.table: {} for p in parts}
    leases = [store.lease(p.table, checkpoint_id) for p in parts]
    try:
        manifests = {}
        for part in parts:
            with _timed(seconds[part.table], "verify"):
                manifests[part.table] = verify(store, part.table, checkpoint_id)
        places = {p.table: TableRef.from_json(manifests[p.table]["source"]["table"]).renamed(p.target) for p in parts}
        kept, fingerprints, warnings, replayed = {}, {}, {p.table: [] for p in parts}, {}
        with source_db.restoring() as restorer:
            for part in parts:
                manifest, place = manifests[part.table], places[part.table]
                first = len(restorer.warnings)
                erased = [0]
                with _timed(seconds[part.table], "load"):
                    kept[part.table] = set_aside(restorer, place, part.aside)
                    restorer.create(manifest["source"], place, _in_place(manifest, part))
                    load_rows(store, restorer, manifest, place, erased)
                with _timed(seconds[part.table], "compare"):
                    fingerprints[part.table] = compare(restorer, manifest, place, erased[0])
                if cut is not None:
                    with _timed(seconds[part.table], "replay"):
                        replayed[part.table] = point_in_time.replay(
                            store, restorer, manifest, place, cut, None if erased[0] else fingerprints[part.table])
                        fingerprints[part.table] = (replayed[part.table].get("fingerprint")
                                                    or restorer.fingerprint(manifest["source"], place)[1])
                if erased[0]:
                    restorer.warnings.append(f"{part.table}: {erased[0]} row(s) of erased people restored without "
                                             "their personal values (their keys were destroyed)")
                warnings[part.table] += restorer.warnings[first:]
            for part in parts:
                first = len(restorer.warnings)
                with _timed(seconds[part.table], "swap"):
                    others = [places[p.table] for p in parts if p is not part]
                    restorer.complete(manifests[part.table]["source"], places[part.table],
                                      _in_place(manifests[part.table], part), others)
                    if restorer.kind == "postgres" and _in_place(manifests[part.table], part):
                        point_in_time.mark_restored(restorer, manifests[part.table], places[part.table], cut)
                warnings[part.table] += restorer.warnings[first:]
            with _timed(seconds[parts[-1].table], "swap"):
                restorer.commit()
    finally:
        for lease in leases:
            store.release(lease)
    return [RestoreOutcome(p.table, p.target, checkpoint_id,
                           replayed[p.table]["rows"] if p.table in replayed else manifests[p.table]["rows"],
                           fingerprints[p.table],
                           seconds[p.table], kept_aside=kept[p.table], warnings=warnings[p.table],
                           replayed=replayed.get(p.table)) for p in parts]


def _in_place(manifest: dict, part: Part) -> bool:
    return part.target == TableRef.from_json(manifest["source"]["table"]).name


def set_aside(restorer: Restorer, place: TableRef, aside: str | None) -> dict | None:
    """Rename a table at `place` to `aside`, when the caller allowed it to be replaced; returns what was kept
    aside. A present table this restore may not replace fails it, and nothing is changed."""
    if not restorer.exists(place):
        return None
    if aside is None:
        raise RestoreError(f"table {place.label!r} exists and this restore may not replace it; nothing was "
                           "changed (restore beside it with another target table, or allow replacing it)")
    return {"table": aside, "rows": restorer.set_aside(place, aside, aside_suffix(aside))}


def verify(store: CheckpointStore, table: str, checkpoint_id: str) -> dict:
    """Full verification (checksums, row counts) before a single row is loaded."""
    result = store.verify(table, checkpoint_id, "full")
    if not result.ok:
        raise RestoreError(f"checkpoint {checkpoint_id} failed verification: {'; '.join(result.problems)}")
    return store.manifest(table, checkpoint_id)


def load_rows(store: CheckpointStore, restorer: Restorer, manifest: dict, place: TableRef,
              erased: list[int] | None = None) -> None:
    """Decode the checkpoint on a worker thread while the database ingests the previous batch."""
    schema = restored_schema(manifest)
    with prefetched(store.read_batches(manifest["table"], manifest["id"], manifest, erased=erased)) as batches:
        restorer.load(manifest["source"], place, pa.RecordBatchReader.from_batches(schema, batches))


def compare(restorer: Restorer, manifest: dict, place: TableRef, erased: int = 0) -> str:
    """The loaded rows must match the checkpoint: their count, and the fingerprint the database computes over
    its own values (no conversion on the way in or out can pass as verified). When people were erased, the
    fingerprint is that of every row without the personal columns (taken on the checkpoint's snapshot): every
    non-personal value is checked by the database; every personal value left was authenticated by its own
    person's key (AES-GCM) as it was opened."""
    if erased:
        sealed = manifest["sealed"]
        rows, fingerprint = restorer.fingerprint(manifest["source"], place, sealed["columns"])
        if rows != manifest["rows"] or fingerprint != sealed["fingerprint_without_personal"]:
            raise RestoreError(f"loaded rows differ from the checkpoint outside the erased personal values: "
                               f"{rows} rows (checkpoint {manifest['rows']}), fingerprint without personal columns "
                               f"{fingerprint} (checkpoint {sealed['fingerprint_without_personal']})")
        return f"{fingerprint} (without personal columns; {erased} erased)"
    rows, fingerprint = restorer.fingerprint(manifest["source"], place)
    if rows != manifest["rows"]:
        raise RestoreError(f"loaded {rows} rows, the checkpoint holds {manifest['rows']}")
    if fingerprint != manifest["fingerprint"]["value"]:
        raise RestoreError("loaded rows differ from the checkpoint: the database's fingerprint of the restored "
                           f"rows is {fingerprint}, the checkpoint's {manifest['fingerprint']['value']}")
    return fingerprint


def record(store: CheckpointStore, outcome: RestoreOutcome, **context) -> dict:
    """Append who/what/when to the recovery log the UI shows."""
    entry = {"at": dt.datetime.now(dt.UTC).isoformat(), "table": outcome.table, "target": outcome.target,
             "checkpoint_id": outcome.checkpoint_id, "rows": outcome.rows, "fingerprint": outcome.fingerprint,
             "seconds": outcome.seconds, "failed_attempts": outcome.failed_attempts,
             "warnings": outcome.warnings, **({"replayed": outcome.replayed} if outcome.replayed else {}), **context}
    store.append_audit(outcome.table, entry)
    return entry


@contextmanager
def _timed(seconds: dict[str, float], step: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds[step] = round(seconds.get(step, 0.0) + time.perf_counter() - started, 3)

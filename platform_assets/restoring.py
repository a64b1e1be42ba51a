"""Restore a source table from a checkpoint, as explicit steps (like Litestream's restore):

    verify → load_into_temporary → compare → swap (setting a present table aside) → record

All database work happens in one transaction: until `swap` commits, the live table is untouched and
the temporary table `<table>__restore_<suffix>` is invisible; any failure rolls both back. A table in
the way is never dropped: it is renamed aside (when the caller allowed it to be replaced, see
`platform_assets/safeguard.py`) in that same transaction. When a checkpoint fails, the restore falls
back to the next older one (unless one was asked for by id).
"""

import datetime as dt
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pyarrow as pa

from platform_assets.safeguard import aside_suffix
from resources.checkpoint_format import Fingerprint, check_checkpoint_id, schema_from_text
from resources.checkpoint_store import CheckpointNotFoundError, CheckpointStore
from resources.identifiers import check_identifier
from resources.prefetch import prefetched
from resources.source_database import SourceDatabase, TableDefinition


class RestoreError(RuntimeError):
    """One checkpoint could not be restored; the live table was left as it was."""


class RestoreFailedError(RuntimeError):
    """No checkpoint could be restored; the live table was left as it was."""


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


def plan_restore(store: CheckpointStore, table: str, checkpoint_id: str | None = None,
                 as_of: dt.datetime | None = None, target_table: str | None = None) -> RestorePlan:
    check_identifier(table, "table name")
    target = check_identifier(target_table or table, "target table name")
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
    return RestorePlan(table, target, candidates, explicit=bool(checkpoint_id))


def restore(store: CheckpointStore, source_db: SourceDatabase, plan: RestorePlan, aside: str | None = None,
            log: Callable[[str], None] = print) -> RestoreOutcome:
    """Try the plan's checkpoints in order until one restores completely. A table at the target is renamed
    `aside` in the restore's transaction; without `aside`, a present target fails the restore."""
    failures: list[dict] = []
    for checkpoint_id in plan.candidates:
        try:
            outcome = restore_one(store, source_db, plan.table, plan.target, checkpoint_id, aside)
        except Exception as exc:  # noqa: BLE001 - any failure of one checkpoint means: try the previous one
            failures.append({"checkpoint_id": checkpoint_id, "error": f"{type(exc).__name__}: {exc}"})
            log(f"checkpoint {checkpoint_id} of {plan.table} could not be restored ({exc}); "
                f"the live table is untouched" + ("" if plan.explicit else ", trying the previous one"))
            if plan.explicit:
                break
            continue
        outcome.failed_attempts = failures
        return outcome
    raise RestoreFailedError(
        f"could not restore {plan.table!r} from any of {len(plan.candidates)} checkpoint(s); the live table "
        f"was left as it was: " + "; ".join(f"{f['checkpoint_id']}: {f['error']}" for f in failures))


def restore_one(store: CheckpointStore, source_db: SourceDatabase, table: str, target: str,
                checkpoint_id: str, aside: str | None = None) -> RestoreOutcome:
    seconds: dict[str, float] = {}
    lease = store.lease(table, checkpoint_id)
    try:
        with _timed(seconds, "verify"):
            manifest = verify(store, table, checkpoint_id)
        definition = TableDefinition(ddl=manifest["source"]["ddl"], indexes=tuple(manifest["source"]["indexes"]))
        temporary = temporary_name(target, checkpoint_id)
        with source_db.transaction() as conn:
            _present_and_replaceable(source_db, conn, target, aside)
            with _timed(seconds, "load"):
                load_into_temporary(store, source_db, conn, manifest, definition, temporary)
            with _timed(seconds, "compare"):
                fingerprint = compare(source_db, conn, temporary, manifest)
            with _timed(seconds, "swap"):
                kept = swap(source_db, conn, temporary, target, definition.indexes_on(table, target), aside)
                conn.commit()
    finally:
        store.release(lease)
    return RestoreOutcome(table, target, checkpoint_id, manifest["rows"], fingerprint, seconds, kept_aside=kept)


def _present_and_replaceable(source_db: SourceDatabase, conn, target: str, aside: str | None) -> bool:
    """Whether a table is at `target`; one there that this restore may not replace (no `aside`) fails it."""
    present = source_db.exists_in(conn, target)
    if present and aside is None:
        raise RestoreError(f"table {target!r} exists and this restore may not replace it; nothing was changed "
                           "(restore beside it with another target table, or allow replacing it)")
    return present


def verify(store: CheckpointStore, table: str, checkpoint_id: str) -> dict:
    """Full verification (checksums, row counts) before a single row is loaded."""
    result = store.verify(table, checkpoint_id, "full")
    if not result.ok:
        raise RestoreError(f"checkpoint {checkpoint_id} failed verification: {'; '.join(result.problems)}")
    return store.manifest(table, checkpoint_id)


def load_into_temporary(store: CheckpointStore, source_db: SourceDatabase, conn, manifest: dict,
                        definition: TableDefinition, temporary: str) -> None:
    """Decode the checkpoint on a worker thread while the database ingests the previous batch."""
    schema = schema_from_text(manifest["schema"])
    with prefetched(store.read_batches(manifest["table"], manifest["id"], manifest)) as batches:
        reader = pa.RecordBatchReader.from_batches(schema, batches)
        source_db.load_into_temporary(conn, definition, temporary, reader)


def compare(source_db: SourceDatabase, conn, temporary: str, manifest: dict) -> str:
    """The loaded rows must match the checkpoint: count, column names and types, content fingerprint."""
    expected = schema_from_text(manifest["schema"])
    fp, rows = Fingerprint(), 0
    with source_db.read_in(conn, temporary) as reader:
        loaded = pa.schema([pa.field(f.name, f.type) for f in reader.schema])
        if loaded.names != expected.names or [f.type for f in loaded] != [f.type for f in expected]:
            raise RestoreError(f"loaded schema {loaded} differs from the checkpoint's {expected}")
        with prefetched(reader) as batches:
            for batch in batches:
                fp.update(batch)
                rows += batch.num_rows
    if rows != manifest["rows"]:
        raise RestoreError(f"loaded {rows} rows, the checkpoint holds {manifest['rows']}")
    if fp.hexdigest() != manifest["fingerprint"]["value"]:
        raise RestoreError("loaded rows differ from the checkpoint (content fingerprint mismatch)")
    return fp.hexdigest()


def swap(source_db: SourceDatabase, conn, temporary: str, target: str, indexes: list[str],
         aside: str | None = None) -> dict | None:
    """Set a table at `target` aside (when allowed), then rename `temporary` into its place; returns what was
    kept aside. Checked again here: a table may have appeared at `target` while the checkpoint loaded."""
    kept = None
    if _present_and_replaceable(source_db, conn, target, aside):
        kept = {"table": aside, "rows": source_db.set_aside(conn, target, aside, aside_suffix(aside))}
    source_db.swap(conn, temporary, target, indexes)
    return kept


def record(store: CheckpointStore, outcome: RestoreOutcome, **context) -> dict:
    """Append who/what/when to the recovery log the UI shows."""
    entry = {"at": dt.datetime.now(dt.UTC).isoformat(), "table": outcome.table, "target": outcome.target,
             "checkpoint_id": outcome.checkpoint_id, "rows": outcome.rows, "fingerprint": outcome.fingerprint,
             "seconds": outcome.seconds, "failed_attempts": outcome.failed_attempts, **context}
    store.append_audit(outcome.table, entry)
    return entry


def temporary_name(target: str, checkpoint_id: str) -> str:
    return check_identifier(f"{target[:40]}__restore_{checkpoint_id.rsplit('-', 1)[1]}", "temporary table name")


@contextmanager
def _timed(seconds: dict[str, float], step: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds[step] = round(time.perf_counter() - started, 3)

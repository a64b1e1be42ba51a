"""What a restore run is asked for (its run config) and the moment it resolves to: the time checkpoints are chosen
by, and where the change log's replay stops."""

import datetime as dt

import dagster as dg

from platform_assets.protection.point_in_time import before_transaction, cut_for
from resources.checkpoints.store import CheckpointStore
from resources.databases.source_database import SourceDatabase
from resources.databases.table_refs import TableRef


class RestoreConfig(dg.Config):
    checkpoint_id: str | None = None  # exactly this checkpoint (no fallback); default: the newest that verifies
    as_of: str | None = None  # ISO 8601 time: the newest checkpoint taken at or before it (+ the change log up to it)
    replay: bool = True  # where the change capture runs: apply every change committed after the checkpoint
    before_transaction: int | None = None  # PostgreSQL: to the commit just before this transaction (its xid)
    target_table: str | None = None  # restore beside the live table, under this name
    replace_live_table: bool = False  # replace a present, healthy table; it is kept aside, never dropped
    dry_run: bool = False  # show the plan and whether it would be refused; change nothing


def parse_time(text: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"as_of {text!r} is not an ISO 8601 time (e.g. 2026-11-22T14:00:00Z)") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def moment(checkpoints: CheckpointStore, source_db: SourceDatabase, refs: list[TableRef], config: RestoreConfig):
    """The time checkpoints are chosen by, and (called when the restore starts) where the change log stops."""
    as_of = parse_time(config.as_of) if config.as_of else None
    if config.before_transaction is not None:
        if config.as_of or config.checkpoint_id:
            raise dg.Failure(description="before_transaction chooses the moment: give it without as_of or "
                             "checkpoint_id", allow_retries=False)
        cut = before_transaction(checkpoints, source_db, refs, config.before_transaction)
        return cut.as_of, lambda: cut
    if not config.replay or config.checkpoint_id:
        return as_of, lambda: None
    return as_of, lambda: cut_for(checkpoints, source_db, refs, as_of)

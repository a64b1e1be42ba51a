"""A restore never discards data.

A restore into a table that does not exist simply creates it. A table that is there is replaced only when
it has shrunk below the alert share of its newest checkpoint, or when the run says `replace_live_table:
true`; anything else is refused with what would be lost and how to restore beside it instead. Whatever a
restore replaces is first kept aside — renamed `<table>__replaced_<UTC time>` in the restore's own
transaction — listed in the recovery log, and dropped only by retention after `keep_replaced_days`.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import duckdb
import numpy as np

from resources import CheckpointStore, RecoveryPolicy, SourceDatabase
from resources.databases.table_refs import ASIDE_SUFFIX, TableRef
from resources.fingerprints import row_hashes

_STAMP = "%Y%m%d_%H%M%S"  # lower case: PostgreSQL users can name the table without quotes
_ASIDE = re.compile(r"^(?P<prefix>[A-Za-z_][A-Za-z0-9_]*)" + ASIDE_SUFFIX + "$")
PREFIX_LENGTH = 37  # + "__replaced_" (11) + the time (15) = 63, the longest identifier


@dataclass(frozen=True)
class Verdict:
    action: str  # "create" (nothing there), "replace" (set the present table aside first) or "refuse"
    reason: str


@dataclass(frozen=True)
class Loss:
    """What replacing the live table with a checkpoint would discard, as the database holds it now."""

    live_rows: int
    only_live: int  # rows of the live table the checkpoint does not hold: lost by a replace
    only_checkpoint: int  # rows of the checkpoint the live table no longer holds: brought back
    newest_write: str | None  # when the newest row was written, where the database knows it
    columns_differ: bool = False


def aside_name(table: str, now: dt.datetime) -> str:
    return f"{table[:PREFIX_LENGTH]}__replaced_{now.astimezone(dt.UTC):{_STAMP}}"


def aside_suffix(name: str) -> str:
    """The time part of a name made by `aside_name`; it also renames the aside table's indexes."""
    return _ASIDE.match(name).group("stamp")


def aside_time(name: str, table: str) -> dt.datetime | None:
    """When `name` was set aside from `table` by a restore, or None when it is no such table."""
    match = _ASIDE.match(name)
    if not match or match.group("prefix") != table[:PREFIX_LENGTH]:
        return None
    return dt.datetime.strptime(match.group("stamp"), _STAMP).replace(tzinfo=dt.UTC)


def asides_of(tables: set[str], table: str) -> dict[str, dt.datetime]:
    """The tables restores set aside from `table`, with when each was set aside."""
    return {name: when for name in sorted(tables) if (when := aside_time(name, table))}


def expired_asides(tables: set[str], table: str, keep: dt.timedelta, now: dt.datetime) -> list[str]:
    """Tables set aside from `table` longer ago than `keep`: retention drops them."""
    return [name for name, when in asides_of(tables, table).items() if now - when > keep]


def judge(table: str, target: str, target_rows: int | None, newest_checkpoint_rows: int | None,
          policy: RecoveryPolicy, replace_live_table: bool) -> Verdict:
    """May a restore of `table` write `target`, which holds `target_rows` rows now (None: absent)?"""
    if target_rows is None:
        return Verdict("create", f"{target} does not exist")
    if replace_live_table:
        return Verdict("replace", "the run asked for it (replace_live_table: true)")
    if target == table and newest_checkpoint_rows is not None and policy.is_shrunk(target_rows,
                                                                                 newest_checkpoint_rows):
        return Verdict("replace", f"{table} has shrunk to {target_rows:,} rows, below "
                       f"{policy.shrink_alert_share:.0%} of its newest checkpoint ({newest_checkpoint_rows:,})")
    if target != table:
        return Verdict("refuse", f"the target table {target} already exists ({target_rows:,} rows)")
    return Verdict("refuse", f"{table} is present and not shrunk ({target_rows:,} rows)")


def measure_loss(store: CheckpointStore, source_db: SourceDatabase, table: str, target: TableRef | str,
                 manifest: dict) -> Loss:
    """Compare every row of `target` with the checkpoint (row hashes of the exact values, as multisets)."""
    target = target if isinstance(target, TableRef) else TableRef(None, target)
    con = duckdb.connect()
    checkpoint_hashes = np.concatenate([np.zeros(0, np.uint64)] + [
        row_hashes(con, batch).to_numpy() for batch in store.read_batches(table, manifest["id"], manifest)])
    live_hashes = [np.zeros(0, np.uint64)]
    with source_db.capture([target]) as captured:
        live = next(iter(captured.values()))
        columns_differ = [(c["name"], c["type"], c["travel"]) for c in live.definition["columns"]] != [
            (c["name"], c["type"], c["travel"]) for c in manifest["columns"]]
        for batch in live.batches():
            live_hashes.append(row_hashes(con, batch).to_numpy())
    live = np.concatenate(live_hashes)
    if columns_differ:  # renamed, added or retyped columns: no row can match, every row would be replaced
        return Loss(len(live), len(live), len(checkpoint_hashes), source_db.newest_commit_time(target), True)
    only_live, only_checkpoint = multiset_difference(live, checkpoint_hashes)
    return Loss(len(live), only_live, only_checkpoint, source_db.newest_commit_time(target))


def multiset_difference(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """How many elements of `a` are not matched in `b`, and of `b` not in `a`, counting repeats."""
    values_a, counts_a = np.unique(a, return_counts=True)
    values_b, counts_b = np.unique(b, return_counts=True)
    at = np.searchsorted(values_b, values_a)
    found = at < len(values_b)
    found[found] = values_b[at[found]] == values_a[found]
    common = int(np.minimum(counts_a[found], counts_b[at[found]]).sum())
    return len(a) - common, len(b) - common


def refusal_message(table: str, target: str, verdict: Verdict, checkpoint_id: str, checkpoint_rows: int | None,
                    loss: Loss | None, policy: RecoveryPolicy) -> str:
    into = "" if target == table else f" into {target}"
    lines = [f"Refused to restore {table}{into}: {verdict.reason}. Nothing was changed."]
    if loss is not None:
        lines.append(f"{target} holds {loss.live_rows:,} rows now; checkpoint {checkpoint_id} holds "
                     f"{checkpoint_rows:,}.")
        if loss.columns_differ:
            lines.append(f"Its columns (names or types) differ from the checkpoint's: all {loss.live_rows:,} "
                         "rows would be replaced.")
        elif loss.only_live == loss.only_checkpoint == 0:
            lines.append("It holds exactly the checkpoint's rows: a restore would change nothing.")
        else:
            lines.append(f"Replacing it would discard {loss.only_live:,} row(s) the checkpoint does not hold "
                         f"(written or changed since) and bring back {loss.only_checkpoint:,} row(s) deleted "
                         "or changed since.")
        lines.append(f"Newest write to {target}: {loss.newest_write}." if loss.newest_write else
                     "The database does not record when its rows were written (PostgreSQL does with "
                     "track_commit_timestamp = on).")
    suggestion = f"{table}_restored" if target == table else f"{target}_2"
    lines.append(f"To restore beside it, run recovery/{table} with config `target_table: {suggestion}`.")
    lines.append(f"To replace it anyway, run it with `replace_live_table: true`: {target} is then kept as "
                 f"{target[:PREFIX_LENGTH]}__replaced_YYYYMMDD_HHMMSS for {policy.keep_replaced_days:g} "
                 "days (listed in the recovery log), never dropped by the restore.")
    return "\n".join(lines)

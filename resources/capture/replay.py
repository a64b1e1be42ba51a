"""What the change log says must be done to a checkpoint of a table to bring it to a later commit — a pure
function of the log, computed before the database is touched.

The checkpoint is the state its snapshot saw; a change belongs after it exactly when its transaction was not
visible to that snapshot (`Snapshot.visible`), whatever the order in which commit records reached the WAL. The
changes after it are folded per row: for a table with a key (its replica identity), the last thing that happened
to each key decides (deleted, or its final values); for a table identified by its whole row (REPLICA IDENTITY
FULL, no key), rows are a multiset (+1 per new row, −1 per old one). A TRUNCATE empties what came before; a
value an UPDATE left untouched out of line is taken from the row's previous version — an earlier change, or the
checkpoint's row (`FROM_BASE`, filled in by the database). A restore by Aegis (R) is a fresh start: the state it
put in place is described in its note, and nothing of the lost table between that state and the restore counts.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

FROM_BASE = "\x00aegis:from-checkpoint"  # a value to copy from the checkpoint's row with the change's origin key
LONG_AGO = 1 << 30  # WAL bytes: a transaction committed this far before a checkpoint finished long before it


class ReplayError(ValueError):
    """The change log cannot bring the checkpoint to the requested commit (and says why)."""


@dataclass(frozen=True)
class Snapshot:
    """A checkpoint's snapshot (`pg_current_snapshot()`: xmin:xmax:xip) and the WAL position read before it."""

    xmin: int
    xmax: int
    xip: frozenset[int]  # the transactions in progress, as pgoutput names them (32 bits)
    lsn_before: int

    @classmethod
    def parse(cls, text: str, lsn_before: int) -> Snapshot:
        xmin, xmax, xip = text.split(":")
        return cls(int(xmin), int(xmax), frozenset(int(x) & 0xFFFFFFFF for x in xip.split(",") if x), lsn_before)

    def visible(self, xid32: int) -> bool:
        """Whether a committed transaction (32-bit id, as pgoutput gives it) was seen by the snapshot."""
        if _precedes(xid32, self.xmin & 0xFFFFFFFF):
            return True
        if not _precedes(xid32, self.xmax & 0xFFFFFFFF):
            return False
        return xid32 not in self.xip


def _precedes(a: int, b: int) -> bool:
    """PostgreSQL's TransactionIdPrecedes for normal ids: modulo-2^32 comparison."""
    diff = (a - b) & 0xFFFFFFFF
    return diff >= 0x80000000


@dataclass
class ReplayPlan:
    columns: list[str]  # the table's columns in the order the log's values come
    key: list[int]  # positions of the key columns (empty: the whole row identifies it)
    truncated: bool = False  # empty the table before applying
    delete_keys: list[tuple] = field(default_factory=list)  # key values whose checkpoint row goes
    delete_rows: Counter = field(default_factory=Counter)  # keyless: whole rows and how many copies go
    rows: list[list] = field(default_factory=list)  # final rows to insert (FROM_BASE where the base has it)
    origins: list[tuple | None] = field(default_factory=list)  # per row: the base key its FROM_BASE values come from
    count_delta: int = 0  # inserts − deletes since the checkpoint (a TRUNCATE: counted from zero)
    changes: int = 0
    last_lsn: int | None = None
    notes: list[str] = field(default_factory=list)  # what the restore should say (a gap it stopped at)
    arrow_rows: object = None  # replay_arrow: the final rows as a table of text columns c0… (instead of `rows`)
    arrow_delete_keys: object = None  # replay_arrow: every touched key as a table k… (instead of `delete_keys`)


def after_checkpoint(log: list[dict], snapshot: Snapshot, through_lsn: int) -> list[dict]:
    """The log's changes (rows of change_log.SCHEMA) that the checkpoint did not see, up to `through_lsn`: exactly
    the transactions its snapshot did not see, whatever their commit LSN — one whose commit record was written
    before the checkpoint read the WAL position but that was still finishing (so invisible, and even above xmax,
    not in xip) belongs after it. Only far older changes are passed over without asking (32-bit ids wrap)."""
    found = []
    for row in log:
        if row["lsn"] > through_lsn or row["op"] == "P" or row["lsn"] < snapshot.lsn_before - LONG_AGO:
            continue
        if snapshot.visible(row["xid"]):
            continue
        found.append(row)
    return found


def seen_beyond(log: list[dict], snapshot: Snapshot, through_lsn: int) -> dict | None:
    """A change committed after `through_lsn` that the checkpoint already holds (it was taken after the moment a
    restore wants: replaying cannot undo it, an older checkpoint must be the base)."""
    for row in log:
        if row["lsn"] > through_lsn and row["op"] in "IUDT" and row["lsn"] >= snapshot.lsn_before \
                and snapshot.visible(row["xid"]):
            return row
    return None


def plan(changes: list[dict], base_columns: list[str]) -> ReplayPlan:
    """Fold `changes` (in commit order, none of them an R) into what must be done to the checkpoint."""
    if any(c["op"] == "R" for c in changes):
        raise ReplayError("a restore by Aegis lies inside the replayed range: replay from the state it put in place")
    described = [c for c in changes if c["columns"]]
    columns, key = log_shape(described, base_columns)
    result = ReplayPlan(columns=columns, key=key)
    state: dict[tuple, list | None] = {}
    origin: dict[tuple, tuple | None] = {}
    multiset: Counter = Counter()
    for change in changes:
        if change["op"] == "S":
            continue  # the columns it announces are checked by log_shape
        result.changes += 1
        result.last_lsn = change["lsn"]
        op = change["op"]
        if op == "T":
            state.clear(), origin.clear(), multiset.clear()
            result.truncated, result.count_delta = True, 0
            continue
        new = list(change["new"]) if change["new"] is not None else None
        old = list(change["old"]) if change["old"] is not None else None
        if op == "I":
            result.count_delta += 1
        elif op == "D":
            result.count_delta -= 1
        if not key:  # keyless: the whole old row is in the log (REPLICA IDENTITY FULL)
            if old is not None:
                multiset[tuple(old)] -= 1
            if new is not None:
                for i in change["unchanged"] or []:
                    new[i] = old[i] if old is not None else _unresolvable(columns, i)
                multiset[tuple(new)] += 1
            continue
        old_key = tuple(old[i] for i in key) if old is not None and op != "I" else None
        if op == "D":
            state[old_key] = None
            origin.setdefault(old_key, None if result.truncated else old_key)
            continue
        new_key = tuple(new[i] for i in key)
        source_key = old_key if old_key is not None else new_key
        if op == "U" and change["unchanged"]:
            previous = state.get(source_key) if source_key in state else FROM_BASE
            base_key = origin.get(source_key, None if result.truncated else source_key)
            if previous is None or (previous is FROM_BASE and base_key is None):
                raise ReplayError(f"an update of {columns} left a value untouched whose previous version is "
                                  "neither in the log nor in the checkpoint")
            for i in change["unchanged"]:
                new[i] = previous[i] if previous is not FROM_BASE else FROM_BASE
        else:
            base_key = origin.get(source_key, None if (result.truncated or op == "I") else source_key)
        if op == "U" and old_key is not None and old_key != new_key:
            origin.setdefault(old_key, None if result.truncated else old_key)
            state[old_key] = None
        origin[new_key] = base_key
        state[new_key] = new
    if key:
        result.delete_keys = [] if result.truncated else list(state)
        for k, row in state.items():
            if row is not None:
                result.rows.append(row)
                result.origins.append(origin.get(k) if FROM_BASE in row else None)
    else:
        for row, n in multiset.items():
            if n > 0:
                result.rows.extend([list(row)] * n)
                result.origins.extend([None] * n)
            elif n < 0 and not result.truncated:
                result.delete_rows[row] = -n
    return result


def log_shape(described: list[dict], base_columns: list[str]) -> tuple[list[str], list[int]]:
    """The columns and key the log's rows have; a relation that changed shape since the checkpoint is refused
    by name (a fresh checkpoint follows a schema change)."""
    if not described:
        return list(base_columns), []
    shapes = {c["columns"] for c in described}
    if len(shapes) > 1:
        raise ReplayError("the table's columns changed inside the replayed range (an ALTER TABLE): restore to a "
                          "moment before it, or from a checkpoint taken after it")
    shape = json.loads(shapes.pop())
    names = [c[0] for c in shape["columns"]]
    if names != list(base_columns):
        raise ReplayError(f"the change log's columns {names} are not the checkpoint's {list(base_columns)} (the "
                          "table was altered after the checkpoint): restore from a checkpoint taken after the change")
    key = [i for i, c in enumerate(shape["columns"]) if c[3]]
    return names, ([] if shape["identity"] == "f" or not key else key)


def _unresolvable(columns: list[str], i: int):
    raise ReplayError(f"column {columns[i]!r}: an update left a value untouched that the log does not hold")

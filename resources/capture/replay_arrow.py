"""The replay of the common case, column-wise: a table with a key, whose changes since the checkpoint are inserts,
updates that keep their key and leave nothing out of line, and deletes — the last change of each key decides, as
replay.plan() folds it row by row, but in Arrow (no Python object per value). Anything else — a TRUNCATE, a restore
by Aegis, a moved key, a value left untouched out of line, a table identified by its whole row, a checkpoint that
already holds a later change — returns None, and the row-by-row fold (which explains every refusal) takes over.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from resources.capture.replay import LONG_AGO, ReplayPlan, Snapshot, log_shape

_WRAP = 0xFFFFFFFF
_HALF = 0x80000000


def _precedes(xids: pa.ChunkedArray, other: int) -> pa.ChunkedArray:
    """TransactionIdPrecedes(xid, other) for every 32-bit id, modulo 2^32."""
    return pc.greater_equal(pc.bit_wise_and(pc.subtract(xids, other & _WRAP), _WRAP), _HALF)


def visible(xids: pa.ChunkedArray, snapshot: Snapshot) -> pa.ChunkedArray:
    """Snapshot.visible for every id."""
    running = pc.is_in(xids, value_set=pa.array(sorted(snapshot.xip), pa.int64()))
    return pc.or_(_precedes(xids, snapshot.xmin),
                  pc.and_(_precedes(xids, snapshot.xmax), pc.invert(running)))


def plan_columnwise(log: pa.Table, snapshot: Snapshot, through_lsn: int, base_columns: list[str]
                    ) -> tuple[ReplayPlan, pa.Table] | None:
    """(the plan, the changes it folds) for a relation's log (rows of change_log.SCHEMA, opened, in commit
    order), or None where the row-by-row fold must decide."""
    ops, lsns = log["op"], log["lsn"]
    seen = visible(log["xid"], snapshot)
    data = pc.is_in(ops, value_set=pa.array(["I", "U", "D", "T"]))
    if pc.any(pc.and_(pc.and_(pc.greater(lsns, through_lsn), pc.greater_equal(lsns, snapshot.lsn_before)),
                      pc.and_(data, seen))).as_py():
        return None  # the checkpoint already holds a later change: the fold says which
    after = pc.and_(pc.and_(pc.less_equal(lsns, through_lsn), pc.not_equal(ops, "P")),
                    pc.and_(pc.greater_equal(lsns, snapshot.lsn_before - LONG_AGO), pc.invert(seen)))
    changes = log.filter(after)
    ops = changes["op"]
    if not pc.all(pc.is_in(ops, value_set=pa.array(["I", "U", "D"]))).as_py() \
            or changes["unchanged"].null_count != len(ops):
        return None
    updates = pc.equal(ops, "U")
    if pc.any(pc.and_(updates, pc.is_valid(changes["old"]))).as_py():
        return None  # a key moved (or the whole old row is sent): the fold follows each row
    shapes = [s for s in pc.unique(changes["columns"]).to_pylist() if s]
    try:
        columns, key = log_shape([{"columns": s} for s in shapes], base_columns)
    except ValueError:
        return None
    if not key:
        return None
    deleted = pc.equal(ops, "D")
    keys = {f"k{j}": pc.if_else(deleted, pc.list_element(changes["old"], k), pc.list_element(changes["new"], k))
            for j, k in enumerate(key)}
    numbered = pa.table({**keys, "n": pa.array(np.arange(len(ops), dtype=np.int64))})
    last = numbered.group_by(list(keys), use_threads=False).aggregate([("n", "max")])
    final = changes.take(last["n_max"])
    kept = pc.invert(pc.equal(final["op"], "D"))
    rows = final.filter(kept)
    plan = ReplayPlan(columns=columns, key=key, changes=len(ops),
                      count_delta=pc.sum(pc.equal(ops, "I")).as_py() - pc.sum(deleted).as_py() if len(ops) else 0,
                      last_lsn=pc.max(changes["lsn"]).as_py())
    plan.arrow_rows = pa.table({f"c{i}": pc.list_element(rows["new"], i).cast(pa.large_string())
                                for i in range(len(columns))}) if rows.num_rows else None
    plan.arrow_delete_keys = pa.table({f"c{j}": last[f"k{j}"].cast(pa.large_string()) for j in range(len(key))}) \
        if last.num_rows else None
    return plan, changes

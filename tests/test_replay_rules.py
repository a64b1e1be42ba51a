"""Which changes of the log belong after a checkpoint, decided by the checkpoint's own snapshot — the rule a
restore to a commit rests on — including the race in which a transaction's commit record is in the WAL before the
checkpoint reads its position but the transaction is still finishing when the snapshot is taken."""

from __future__ import annotations

import datetime as dt
import json
import random

import pyarrow as pa
import pytest

from resources.capture.change_log import SCHEMA
from resources.capture.replay import Snapshot, after_checkpoint, plan, seen_beyond
from resources.capture.replay_arrow import plan_columnwise

AT = dt.datetime(2026, 12, 3, tzinfo=dt.UTC)


def log(*changes: tuple[int, int]) -> list[dict]:
    return pa.Table.from_pylist([{"relation": "public.t", "lsn": lsn, "commit_time": AT, "xid": xid, "seq": 0,
                                  "op": "U", "columns": None, "new": ["1"], "unchanged": None, "old": None,
                                  "old_kind": None, "note": None, "sealed": None, "key_id": None}
                                 for lsn, xid in changes], schema=SCHEMA).to_pylist()


def test_a_change_belongs_after_the_checkpoint_exactly_when_its_snapshot_did_not_see_it():
    snapshot = Snapshot.parse("100:105:101,103", lsn_before=5_000)
    changes = log((4_000, 99),  # long committed: in the checkpoint
                  (4_900, 106),  # committed before the position was read, still finishing at the snapshot (>= xmax)
                  (5_100, 101),  # running at the snapshot (xip)
                  (5_200, 102),  # committed before the snapshot: in the checkpoint
                  (5_300, 107))  # after
    assert [c["xid"] for c in after_checkpoint(changes, snapshot, through_lsn=10_000)] == [106, 101, 107]
    assert [c["xid"] for c in after_checkpoint(changes, snapshot, through_lsn=5_100)] == [106, 101]


def test_a_checkpoint_that_saw_a_transaction_after_the_cut_cannot_be_its_base():
    snapshot = Snapshot.parse("100:105:", lsn_before=5_000)
    changes = log((5_200, 102), (5_300, 107))
    assert seen_beyond(changes, snapshot, through_lsn=5_100)["xid"] == 102
    assert seen_beyond(changes, snapshot, through_lsn=5_200) is None


def test_ids_compare_modulo_two_to_the_32():
    snapshot = Snapshot.parse(f"{(1 << 32) + 5}:{(1 << 32) + 9}:", lsn_before=0)  # after a wraparound (epoch 1)
    assert snapshot.visible(4_000_000_000)  # before the wrap: long committed
    assert snapshot.visible(6) and not snapshot.visible(10)


SHAPE = json.dumps({"identity": "d", "columns": [["id", 23, -1, True], ["v", 25, -1, False]]})


def random_log(rng: random.Random, snapshot: Snapshot) -> list[dict]:
    """Inserts, updates and deletes of a keyed table (keys that never move), some seen by the checkpoint."""
    rows, lsn, live = [], snapshot.lsn_before - 500, set(range(5))
    for xid in range(95, 140):
        lsn += rng.randint(1, 60)
        for seq in range(rng.randint(1, 4)):
            key = rng.randint(0, 12)
            op = "D" if key in live and rng.random() < 0.3 else "U" if key in live else "I"
            live = live - {key} if op == "D" else live | {key}
            value = rng.choice([None, "", "x", f"v{lsn}", 'a "quoted", (odd) value'])
            rows.append({"relation": "public.t", "lsn": lsn, "commit_time": AT, "xid": xid, "seq": seq, "op": op,
                         "columns": SHAPE, "new": None if op == "D" else [str(key), value], "unchanged": None,
                         "old": [str(key), None] if op == "D" else None, "old_kind": "K" if op == "D" else None,
                         "note": None, "sealed": None, "key_id": None})
    return rows


@pytest.mark.parametrize("seed", range(25))
def test_the_columnwise_replay_folds_exactly_as_the_row_by_row_one(seed):
    rng = random.Random(seed)
    snapshot = Snapshot.parse("110:120:112,115", lsn_before=5_000)
    rows = random_log(rng, snapshot)
    through = rng.choice([r["lsn"] for r in rows] + [1 << 40])
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    found = plan_columnwise(table, snapshot, through, ["id", "v"])
    if seen_beyond(table.to_pylist(), snapshot, through) is not None:
        assert found is None, "a checkpoint that holds a later change is the row-by-row fold's to refuse"
        return
    slow = plan(after_checkpoint(table.to_pylist(), snapshot, through), ["id", "v"])
    fast, _ = found
    assert (fast.changes, fast.count_delta, fast.last_lsn) == (slow.changes, slow.count_delta, slow.last_lsn)
    fast_rows = fast.arrow_rows.to_pylist() if fast.arrow_rows is not None else []
    assert sorted((r["c0"], r["c1"]) for r in fast_rows) == sorted((r[0], r[1]) for r in slow.rows)
    fast_keys = fast.arrow_delete_keys.to_pylist() if fast.arrow_delete_keys is not None else []
    assert sorted(k["c0"] for k in fast_keys) == sorted(k[0] for k in slow.delete_keys)


def test_what_the_columnwise_replay_leaves_to_the_row_by_row_fold():
    snapshot = Snapshot.parse("100:101:", lsn_before=5_000)
    base = {"relation": "public.t", "commit_time": AT, "seq": 0, "columns": SHAPE, "unchanged": None, "old": None,
            "old_kind": None, "note": None, "sealed": None, "key_id": None}
    moved = [{**base, "lsn": 6_000, "xid": 105, "op": "U", "new": ["2", "x"], "old": ["1", None], "old_kind": "K"}]
    toast = [{**base, "lsn": 6_000, "xid": 105, "op": "U", "new": ["1", None], "unchanged": [1]}]
    truncated = [{**base, "lsn": 6_000, "xid": 105, "op": "T", "columns": None, "new": None}]
    for case in (moved, toast, truncated):
        assert plan_columnwise(pa.Table.from_pylist(case, schema=SCHEMA), snapshot, 1 << 40, ["id", "v"]) is None

"""Which changes of the log belong after a checkpoint, decided by the checkpoint's own snapshot — the rule a
restore to a commit rests on — including the race in which a transaction's commit record is in the WAL before the
checkpoint reads its position but the transaction is still finishing when the snapshot is taken."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from resources.capture.change_log import SCHEMA
from resources.capture.replay import Snapshot, after_checkpoint, seen_beyond

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

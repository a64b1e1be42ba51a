"""Which checkpoints retention keeps, and why: one rule, used to delete and to explain in the UI."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence

from resources.checkpoints.format import checkpoint_time


def retention_reasons(newest_first: Sequence[str], keep_last: int, keep_within: dt.timedelta,
                      newest_verified: str | None, leased: Collection[str],
                      now: dt.datetime) -> dict[str, str | None]:
    """For each checkpoint, why it is kept, or None when retention deletes it now.

    Kept: the newest `keep_last`; every one younger than `keep_within`; the newest that verifies in full;
    any a restore is reading."""
    if keep_last < 1:
        raise ValueError("keep_last must be at least 1")
    reasons: dict[str, str | None] = {}
    for position, checkpoint_id in enumerate(newest_first):
        expires = checkpoint_time(checkpoint_id) + keep_within
        if checkpoint_id in leased:
            reasons[checkpoint_id] = "kept: a restore is reading it"
        elif checkpoint_id == newest_verified:
            reasons[checkpoint_id] = "kept: the newest that verifies"
        elif position < keep_last and now < expires:
            reasons[checkpoint_id] = f"kept: one of the newest {keep_last}, and until {expires:%Y-%m-%d %H:%M} UTC"
        elif position < keep_last:
            reasons[checkpoint_id] = f"kept: one of the newest {keep_last}"
        elif now < expires:
            reasons[checkpoint_id] = f"kept until {expires:%Y-%m-%d %H:%M} UTC ({keep_within.days} days)"
        else:
            reasons[checkpoint_id] = None
    return reasons


def retirement_reasons(newest_first: Sequence[str], keep_within: dt.timedelta, leased: Collection[str],
                       now: dt.datetime) -> dict[str, str | None]:
    """Retention for a table the configuration no longer protects: each checkpoint is kept for `keep_within`
    after it was taken (and while a restore reads it), then goes — the newest too, so the table leaves."""
    reasons: dict[str, str | None] = {}
    for checkpoint_id in newest_first:
        expires = checkpoint_time(checkpoint_id) + keep_within
        if checkpoint_id in leased:
            reasons[checkpoint_id] = "kept: a restore is reading it"
        elif now < expires:
            reasons[checkpoint_id] = f"retired: kept until {expires:%Y-%m-%d %H:%M} UTC"
        else:
            reasons[checkpoint_id] = None
    return reasons

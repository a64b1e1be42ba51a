"""The change log in the asset graph: `changes/log`, written by the capture process (not by a Dagster run) and
observed by the capture_watch sensor, with the check `rpo_within_target` a user can also run from the UI."""

import dagster as dg

from resources.capture.health import CHANGE_LOG, RPO_CHECK, RPO_VAR, capture_health
from resources.checkpoints.store import CheckpointStore
from resources.databases.source_database import SourceDatabase

change_log = dg.AssetSpec(
    CHANGE_LOG, group_name="capture", kinds={"delta", "postgres"},
    description="Every committed change of the protected PostgreSQL tables (logical decoding, pgoutput), landed in "
    "the lake by the capture process (make capture) within about a second: what a restore replays after a "
    "checkpoint to bring a table back to its last commit, or to any second. Observed by the capture_watch sensor.")


@dg.asset_check(asset=CHANGE_LOG, name=RPO_CHECK, blocking=False,
                description=f"The capture streams the slot and the lake holds every commit older than {RPO_VAR} "
                "seconds (default 5).")
def rpo_within_target(source_db: SourceDatabase, checkpoints: CheckpointStore) -> dg.AssetCheckResult:
    health = capture_health(source_db, checkpoints.lake)
    problems = health.problems
    return dg.AssetCheckResult(passed=not problems, severity=dg.AssetCheckSeverity.ERROR,
                               description="; ".join(problems) or health.summary(),
                               metadata={"lag_bytes": health.lag_bytes, "rpo_seconds": health.rpo_seconds,
                                         "streaming": health.streaming})

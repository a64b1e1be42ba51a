"""The protection wing as this process loads the code location: the protected tables and their groups resolved
now (protected.py: the configuration, the source database and the checkpoint store — so a table dropped before
this load is still here), one `checkpoints/…` and one `recovery/…` asset per table, the recovery log, a
`restore_<table>` job per table and a `rewind_<table>` job per table."""

from platform_assets.protection.checkpoints import checkpoint_assets
from platform_assets.protection.protected import resolve
from platform_assets.protection.recovery import recovery_assets, recovery_log, restore_job
from platform_assets.protection.rewind import rewind_job

RESOLUTION, GROUPS = resolve()
PROTECTED = RESOLUTION.tables
checkpoints = [checkpoint_assets(group) for group in GROUPS]
recoveries = [recovery_assets(group) for group in GROUPS]
log = recovery_log(GROUPS)
restore_jobs = [restore_job(ref, group) for group in GROUPS for ref in group.members]
rewind_jobs = [rewind_job(ref, group) for group in GROUPS for ref in group.members]

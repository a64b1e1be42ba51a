"""`rewind_<table>`: restore a table to just before one of its largest recent transactions, picked from a list.
The job's partitions are those moments (capture_watch adds them from the change log, with the table's timeline
on its `recovery/<table>` asset); a partition's run config is `before_transaction` — nothing to type."""

import dagster as dg

from resources.capture.timeline import moments_name, xid_of
from resources.databases.consistency_groups import ConsistencyGroup
from resources.databases.table_refs import TableRef, safe_component
from resources.execution import restore_executor


def rewind_job(ref: TableRef, group: ConsistencyGroup):
    partitions = dg.DynamicPartitionsDefinition(name=moments_name(ref.id))
    op = f"recovery__{group.op_id}"
    return dg.define_asset_job(
        f"rewind_{ref.flat_id}", selection=[dg.AssetKey(["recovery", *ref.key_path])], partitions_def=partitions,
        config=dg.PartitionedConfig(partitions_def=partitions, run_config_for_partition_key_fn=lambda key: {
            "ops": {op: {"config": {"before_transaction": xid_of(key)}}}}),
        executor_def=restore_executor(),
        description=f"Restore {ref.label} to just before one of its largest recent transactions (PostgreSQL's "
        "change log). Its partitions are those moments, newest last: pick one in the launchpad, add target_table: "
        f"{safe_component(ref.name)}_before to restore beside the live table (or replace_live_table: true).",
    )

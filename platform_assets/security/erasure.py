"""The right to erasure: the `forget_customer` job (config `customer_id`).

1. The person's keys are destroyed (resources/subject_keys.py): their name, e-mail, CPF and phone in every kept
   checkpoint of customers — each sealed under that person's own key (resources/checkpoints/sealing.py) — can no
   longer be read; no checkpoint is rewritten, and every other person's values still restore and verify.
2. Their rows are deleted from bronze, silver (and quarantine) and gold `dim_customer`, each table's history
   vacuumed so no older version holds them, and from `serving.dim_customer`; in the change log (a PostgreSQL
   source) their personal values are blanked in every change of theirs, the replaced files deleted. Sales stay:
   they name a customer number that no longer leads to anyone.
3. The erasure is recorded on `security/erasure_log`: an erasure id, when, who launched it, how many rows and
   keys went — never who was erased. (The launching run's own config holds the id: delete that run afterwards
   if even that must not remain.)
Checkpoints taken before sealing existed hold the person in clear: they are listed, to be deleted.
"""

import datetime as dt
import uuid

import dagster as dg

from resources import CheckpointStore, Lake, SourceDatabase, Warehouse
from resources.capture.change_log import relation_name
from resources.capture.change_log_rewrites import erase_subject
from resources.checkpoints.subject_keys import SubjectKeys
from resources.lake.delta_erasure import erase_rows
from resources.subjects import subject_tables

ERASURE_LOG = dg.AssetKey(["security", "erasure_log"])
TABLE = "customers"
PLACES = (("bronze", "customers", "id"), ("silver", "customers", "id"), ("silver/quarantine", "customers", "id"),
          ("gold", "dim_customer", "customer_key"))


class ForgetConfig(dg.Config):
    customer_id: int  # the customers.id of the person to forget


@dg.op(description="Destroy the person's checkpoint keys, delete their rows downstream, record the erasure.")
def forget(context: dg.OpExecutionContext, config: ForgetConfig, lake: Lake, warehouse: Warehouse,
           checkpoints: CheckpointStore, source_db: SourceDatabase) -> dict:
    subject = str(config.customer_id)
    keys = SubjectKeys(lake).destroy(TABLE, subject)
    removed = {f"{layer}/{table}": sum(erase_rows(lake, layer, table, column, subject, context.run_id).values())
               for layer, table, column in PLACES}
    if source_db.kind == "postgres" and (sealing := subject_tables().get(TABLE)) is not None:
        relation = relation_name(source_db.default_schema(), TABLE)
        removed["changes/log"] = erase_subject(lake, relation, sealing.subject, sealing.columns, subject,
                                               checkpoints.keyring())
    if warehouse.has_table("dim_customer"):
        removed["serving.dim_customer"] = warehouse.erase("dim_customer", "customer_key", config.customer_id)
    if not keys and not any(removed.values()):
        raise dg.Failure(f"customer {config.customer_id}: no key and no row of them anywhere (an unknown id, or "
                         "already forgotten); nothing was changed", allow_retries=False)
    kept = checkpoints.list(TABLE)
    legacy = [c for c in kept if not checkpoints.manifest(TABLE, c).get("sealed")]
    record = {"erasure_id": uuid.uuid4().hex[:12], "at (UTC)": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
              "by": context.run.tags.get("dagster/user") or context.run.tags.get("user") or "unknown",
              "rows_removed": removed, "keys_destroyed": keys, "checkpoints_covered": len(kept) - len(legacy),
              "checkpoints_in_clear": legacy}
    context.log_event(dg.AssetMaterialization(asset_key=ERASURE_LOG, metadata={
        k: dg.MetadataValue.json(v) if isinstance(v, dict | list) else v for k, v in record.items()}))
    context.log.info(f"erasure {record['erasure_id']}: {keys} key(s) destroyed, rows removed {removed}; "
                     f"{record['checkpoints_covered']} kept checkpoint(s) can no longer restore the person's values")
    if legacy:
        context.log.warning(f"{len(legacy)} checkpoint(s) of {TABLE} predate per-person sealing and still hold the "
                            f"person in clear: {', '.join(legacy)}; delete them (retention, or by hand)")
    return record


@dg.job(description="Right to erasure: forget one customer (config: customer_id) — keys destroyed, rows deleted "
        "downstream, recorded on security/erasure_log without saying who.")
def forget_customer():
    forget()


erasure_log = dg.AssetSpec(ERASURE_LOG, group_name="security",
                           description="Erasure log: every forget_customer run — erasure id, when, who launched it, "
                           "rows and keys removed, checkpoints covered; never whom it erased.")

"""security/*: least privilege and row-level access on the warehouse, and the security posture as asset checks.

- `security/warehouse_access` creates (idempotently) the read-only BI role (`AEGIS_BI_ROLE`, default aegis_bi)
  and the writer role (`AEGIS_WRITER_ROLE`, default aegis_writer), and applies the row-access mapping
  (`AEGIS_ROW_ACCESS`) as policies on every serving table (resources/warehouse_access.py). PostgreSQL only.
- `security/posture` records when the posture was judged; its checks (WARN or ERROR, never blocking the data)
  say what is weak and what to do: plaintext checkpoints, a development PII key, default or empty database
  passwords, S3 over plain HTTP beyond loopback, a BI role able to do more than read, raw personal data
  downstream of bronze (a sample of bronze's values searched in silver, gold and serving).
"""

import datetime as dt
import os

import dagster as dg
import pyarrow as pa

from platform_assets.layers.gold import SERVED_TABLES
from platform_assets.layers.partitions import daily
from platform_assets.layers.tables import SOURCE_TABLES
from platform_assets.security import posture
from resources import Lake, Warehouse
from resources.databases.warehouse_access import ACCESS_VAR, parse_access
from resources.lake.delta_tables import PartitionNotFoundError

BI_VAR = "AEGIS_BI_ROLE"
POSTURE = dg.AssetKey(["security", "posture"])
SAMPLE_ROWS = 500
SCANNED_ROWS = 20_000
_judged = dg.AutomationCondition.on_missing() | dg.AutomationCondition.on_cron("0 6 * * *", "UTC")


def bi_role() -> str:
    return os.environ.get(BI_VAR) or "aegis_bi"


@dg.asset(key=["security", "warehouse_access"], group_name="security", kinds={"postgres"},
          automation_condition=_judged,
          description="Least privilege on the PostgreSQL warehouse: a read-only BI role (AEGIS_BI_ROLE) that can "
          "SELECT serving and nothing else, a writer role that owns and publishes it, and row-level security from "
          "AEGIS_ROW_ACCESS on every serving table. Idempotent; on a DuckDB warehouse it says it does not apply.")
def warehouse_access(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    if warehouse.kind != "postgres":
        context.log.info("the warehouse is a DuckDB file: roles and row-level security apply to PostgreSQL only")
        return dg.MaterializeResult(metadata={"applied": False, "why": "DuckDB warehouse (a local file)"})
    grants = parse_access(os.environ.get(ACCESS_VAR))
    done = warehouse.secure(bi_role(), grants)
    return dg.MaterializeResult(metadata={
        "applied": True, "bi_role": done["bi_role"], "writer_role": done["writer_role"],
        "tables_with_policies": dg.MetadataValue.json(done["tables"]),
        "mapped_grantees": dg.MetadataValue.json(sorted({g.grantee for g in grants})),
        "row_grants": len(grants)})


@dg.asset(key=POSTURE, group_name="security", automation_condition=_judged,
          description="The security posture, judged by its checks (see each check's description and result).")
def security_posture() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"judged_at (UTC)": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")})


def _result(judgement: posture.Judgement) -> dg.AssetCheckResult:
    severity = dg.AssetCheckSeverity.ERROR if judgement.severity == posture.ERROR else dg.AssetCheckSeverity.WARN
    text = judgement.description + (f" -> {judgement.fix}" if judgement.fix and not judgement.passed else "")
    return dg.AssetCheckResult(passed=judgement.passed, severity=severity, description=text,
                               metadata={"finding": text, **({"what_to_do": judgement.fix} if judgement.fix else {})})


def _env_check(name: str, judge, description: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=POSTURE, name=name, description=description)
    def _check() -> dg.AssetCheckResult:
        return _result(judge(posture.environment()))

    return _check


@dg.asset_check(asset=POSTURE, name="bi_role_read_only",
                description="The BI role can only read serving: no writes, CREATE, temporary tables, other schemas, "
                "RLS bypass or superuser (PostgreSQL warehouses).")
def bi_role_read_only(warehouse: Warehouse) -> dg.AssetCheckResult:
    return _result(posture.bi_role_read_only(warehouse.role_privileges(bi_role())))


def _latest_bronze_customers(lake: Lake) -> tuple[str, pa.Table] | None:
    for day in reversed(daily.get_partition_keys()[-14:]):
        try:
            return day, lake.read_partition("bronze", "customers", day)
        except (PartitionNotFoundError, FileNotFoundError):
            continue
    return None


@dg.asset_check(asset=POSTURE, name="no_raw_pii_downstream",
                description=f"A sample of {SAMPLE_ROWS} raw personal values from bronze/customers (its newest day) "
                "is searched in every string column of that day's silver and gold tables and the serving tables.")
def no_raw_pii_downstream(lake: Lake, warehouse: Warehouse) -> dg.AssetCheckResult:
    found = _latest_bronze_customers(lake)
    if found is None:
        return _result(posture.Judgement(True, posture.WARN, "no bronze/customers day in the last 14: nothing to "
                                         "sample yet"))
    day, bronze = found
    contract = SOURCE_TABLES["customers"]
    sample = bronze.slice(0, SAMPLE_ROWS)
    raw = {v for c in (*contract.hashed_pii, *contract.name_pii) for v in sample[c].to_pylist() if v}
    places = []
    for layer, names in (("silver", SOURCE_TABLES), ("silver/quarantine", SOURCE_TABLES)):
        places += [(f"{layer}/{n}", t) for n in names if (t := _read(lake, layer, n, day)) is not None]
    places += [(f"gold/{s.name}", t) for s in SERVED_TABLES if (t := _read(lake, "gold", s.name, day)) is not None]
    for spec in SERVED_TABLES:
        if warehouse.has_table(spec.name):
            places.append((f"serving.{spec.name}",
                           warehouse.query(f"SELECT * FROM {warehouse.qualified(spec.name)} LIMIT {SCANNED_ROWS}")))
    return _result(posture.raw_pii_downstream(raw, places))


def _read(lake: Lake, layer: str, table: str, day: str) -> pa.Table | None:
    try:
        return lake.read_partition(layer, table, day)
    except (PartitionNotFoundError, FileNotFoundError):
        return None


assets = [warehouse_access, security_posture]
checks = [
    _env_check("checkpoints_encrypted", posture.checkpoints_encrypted,
               "Checkpoints are encrypted at rest (AEGIS_CHECKPOINT_KEYS / AEGIS_CHECKPOINT_KEY)."),
    _env_check("pii_key_is_real", posture.pii_key_is_real, "AEGIS_PII_KEY is a real secret, not a development key."),
    _env_check("database_passwords", posture.database_passwords,
               "No database URL (source, warehouse, Dagster storage) has an empty or default password."),
    _env_check("s3_over_https", posture.s3_over_https, "The lake's S3 endpoint is HTTPS beyond loopback."),
    bi_role_read_only, no_raw_pii_downstream,
]

"""Asset checks that stop bad data where it appears: schema contract on bronze, Great Expectations
suites on silver (declared here from each table's contract: what entered silver, bronze typed to the contract,
tolerating a few bad rows; the clean rows strictly) and gold, and reconciliation between every pair of layers.
All are partitioned like their assets; ERROR failures of blocking checks stop downstream assets in the same run."""

import warnings

import dagster as dg
import duckdb
import pandas as pd
import pyarrow as pa

from platform_assets.layers.cleansing import ContractBreakError, typed
from platform_assets.layers.gold import SERVED_TABLES, GoldTable
from platform_assets.layers.partitions import daily
from platform_assets.layers.serving import DAY_COLUMN
from platform_assets.layers.tables import LINEAGE_NAMES, SOURCE_TABLES, SourceTable
from platform_assets.quality import expectations as ex
from platform_assets.quality.gates import gated
from resources import Lake, SourceDatabase, Warehouse

# Partitioned asset checks are a preview API in Dagster 1.13, used here knowingly (README, Status). Said once
# there, not once per process that loads the code.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec",
                        category=dg.PreviewWarning)

# what a source column may look like when read back: SQLite keeps times and dates as ISO text
_EQUIVALENT = {pa.timestamp("us"): {pa.timestamp("us"), pa.string()}, pa.date32(): {pa.date32(), pa.string()}}


_TOLERATED = 1 - ex.TOLERANCE
_PANDAS_TYPES = {pa.int64(): ["int64", "Int64"], pa.float64(): ["float64"],
                 pa.string(): ["StringDtype"],  # `to_frame` makes every string column Arrow-backed
                 pa.timestamp("us"): ["datetime64[us]", "datetime64[ns]"], pa.date32(): ["object", "date"]}


def silver_input_suite(contract: SourceTable) -> list[ex.Expect]:
    """On the typed rows that entered silver: the contract, tolerating `ex.TOLERANCE` bad rows per rule."""
    return [
        ex.ROWS_PRESENT,
        *(ex.expect_not_null(c, _TOLERATED) for c in contract.required),
        ex.expect_unique(contract.key, _TOLERATED),
        *(ex.Expect(r.expect.kind, {**r.expect.kwargs, "mostly": _TOLERATED if r.quarantines else r.warn},
                    r.expect.severity) for r in contract.rules),
    ]


def silver_output_suite(contract: SourceTable) -> list[ex.Expect]:
    """On the clean silver rows: strictly one row per key, required values present, contract types."""
    return [
        ex.expect_unique(contract.key),
        *(ex.expect_not_null(c) for c in contract.required),
        *(ex.Expect("ExpectColumnValuesToBeInTypeList", {"column": f.name, "type_list": _PANDAS_TYPES[f.type]})
          for f in contract.schema),
    ]


def silver_input_frame(contract: SourceTable, typed: pa.Table) -> pd.DataFrame:
    """The typed rows, plus every derived measure a rule of the contract judges (the same SQL as quarantine)."""
    derived = {name: expression for rule in contract.rules for name, expression in rule.derived.items()}
    if derived:
        with duckdb.connect() as con:
            con.register("typed", typed)
            extra = ", ".join(f"{expression} AS {name}" for name, expression in derived.items())
            typed = con.sql(f"SELECT *, {extra} FROM typed").to_arrow_table()
    return ex.to_frame(typed)


def schema_diff(contract: SourceTable, actual: pa.Schema) -> dict[str, list[str]]:
    """Added, removed and retyped columns of `actual` against the contract; empty lists when equal."""
    have = {f.name: f.type for f in actual if f.name not in LINEAGE_NAMES}
    want = {f.name: f.type for f in contract.schema}
    return {
        "added": [f"{n} ({have[n]})" for n in have if n not in want],
        "removed": [f"{n} ({want[n]})" for n in want if n not in have],
        "retyped": [f"{n}: {want[n]} -> {have[n]}" for n in want if n in have
                    and have[n] not in _EQUIVALENT.get(want[n], {want[n]}) and not pa.types.is_null(have[n])],
    }


def _failure(message: str, **metadata) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR, description=message,
                               metadata={"summary": message, **metadata})


# ---------------------------------------------------------------- bronze


def _bronze_checks(contract: SourceTable) -> list[dg.AssetChecksDefinition]:
    key = dg.AssetKey(["bronze", contract.name])

    @dg.asset_check(asset=key, name="schema_contract", blocking=True, partitions_def=daily,
                    description="The columns and types arriving from the source match the contract "
                    "(platform_assets/tables.py); the metadata lists added, removed and retyped columns.")
    @gated
    def schema_contract(context: dg.AssetCheckExecutionContext, lake: Lake) -> dg.AssetCheckResult:
        schema = lake.read_partition("bronze", contract.name, context.partition_key).schema
        diff = schema_diff(contract, schema)
        broken = diff["removed"] or diff["retyped"]
        summary = "; ".join(f"{kind}: {', '.join(cols)}" for kind, cols in diff.items() if cols) or "as contracted"
        return dg.AssetCheckResult(
            passed=not (broken or diff["added"]),
            severity=dg.AssetCheckSeverity.ERROR if broken else dg.AssetCheckSeverity.WARN,
            description=f"{contract.name}: {summary}",
            metadata={"summary": summary, **{k: dg.MetadataValue.json(v) for k, v in diff.items()}},
        )

    @dg.asset_check(asset=key, name="matches_source", blocking=True, partitions_def=daily,
                    description="Bronze holds exactly the rows the source holds for the day.")
    @gated
    def matches_source(context: dg.AssetCheckExecutionContext, lake: Lake,
                       source_db: SourceDatabase) -> dg.AssetCheckResult:
        day = context.partition_key
        bronze = lake.partition_stats("bronze", contract.name, day).rows
        source = source_db.count_day(contract.name, contract.day_column, day)
        return dg.AssetCheckResult(passed=bronze == source, severity=dg.AssetCheckSeverity.ERROR,
                                   metadata={"source_rows": source, "bronze_rows": bronze})

    return [schema_contract, matches_source]


# ---------------------------------------------------------------- silver


def _silver_checks(contract: SourceTable) -> list[dg.AssetChecksDefinition]:
    key = dg.AssetKey(["silver", contract.name])

    @dg.asset_check(asset=key, name="expectations", blocking=True, partitions_def=daily,
                    description=f"Great Expectations: the rows that entered silver meet the contract (at most "
                    f"{ex.TOLERANCE:.0%} breaking any one rule; those are quarantined), and the clean rows "
                    "are strictly unique per key, complete and typed.")
    @gated
    def expectations(context: dg.AssetCheckExecutionContext, lake: Lake) -> dg.AssetCheckResult:
        day = context.partition_key
        bronze = lake.read_partition("bronze", contract.name, day)
        try:
            arrived = typed(contract, bronze)
        except ContractBreakError as exc:
            return _failure(str(exc))
        entered = ex.validate(silver_input_frame(contract, arrived), silver_input_suite(contract),
                              f"silver_{contract.name}_input")
        clean = ex.validate(ex.to_frame(lake.read_partition("silver", contract.name, day)),
                            silver_output_suite(contract), f"silver_{contract.name}_output")
        return ex.suite_result({f"arriving rows (bronze typed; up to {ex.TOLERANCE:.0%} may break a rule)": entered,
                              "clean rows (silver, strict)": clean}, rows_checked=arrived.num_rows)

    @dg.asset_check(asset=key, name="rows_reconcile", blocking=True, partitions_def=daily,
                    description="Nothing dropped silently: bronze rows = silver rows + duplicates removed "
                    "+ quarantined rows.")
    @gated
    def rows_reconcile(context: dg.AssetCheckExecutionContext, lake: Lake) -> dg.AssetCheckResult:
        day = context.partition_key
        bronze = lake.partition_stats("bronze", contract.name, day).rows
        silver = lake.partition_stats("silver", contract.name, day).rows
        quarantined = lake.partition_stats("silver/quarantine", contract.name, day).rows
        # the facts the write of the silver day now in the lake stated (its Delta commit), not another run's
        written = lake.versions("silver", contract.name, day, limit=1)
        if not written or "duplicates_removed" not in written[0].facts:
            return _failure(f"silver/{contract.name} for {day}: its Delta commit does not say how many duplicates "
                            "were removed (written before Aegis recorded it?); re-materialise the day")
        duplicates = written[0].facts["duplicates_removed"]
        return dg.AssetCheckResult(
            passed=bronze == silver + duplicates + quarantined, severity=dg.AssetCheckSeverity.ERROR,
            metadata={"bronze_rows": bronze, "silver_rows": silver, "duplicates_removed": duplicates,
                      "quarantined": quarantined, "unaccounted": bronze - silver - duplicates - quarantined,
                      "silver_version": written[0].version})

    return [expectations, rows_reconcile]


# ---------------------------------------------------------------- gold

def _measure(table: pa.Table, expression: str) -> float:
    with duckdb.connect() as con:
        con.register("t", table)
        return float(con.sql(f"SELECT coalesce({expression}, 0) FROM t").fetchall()[0][0])


def _gold_checks(spec: GoldTable) -> list[dg.AssetChecksDefinition]:
    key = dg.AssetKey(["gold", spec.name])

    @dg.asset_check(asset=key, name="expectations", blocking=True, partitions_def=daily,
                    description="Great Expectations: keys unique and present, values in range, percentiles "
                    "ordered, rates within [0, 1], personal data only as hashes.")
    @gated
    def expectations(context: dg.AssetCheckExecutionContext, lake: Lake) -> dg.AssetCheckResult:
        gold = lake.read_partition("gold", spec.name, context.partition_key)
        return ex.suite_result({"gold rows (strict)": ex.validate(ex.to_frame(gold), ex.gold_suite(spec.suite),
                                                                 f"gold_{spec.name}")})

    if spec.totals is None:
        return [expectations]
    gold_sql, silver_table, silver_sql = spec.totals.gold_sql, spec.totals.silver_table, spec.totals.silver_sql

    @dg.asset_check(asset=key, name="totals_match_silver", blocking=True, partitions_def=daily,
                    description=f"{gold_sql} of the gold partition equals {silver_sql} of silver/{silver_table}.")
    @gated
    def totals_match_silver(context: dg.AssetCheckExecutionContext, lake: Lake) -> dg.AssetCheckResult:
        day = context.partition_key
        gold_partition = lake.read_partition("gold", spec.name, day)
        gold = _measure(gold_partition, gold_sql)
        silver = _measure(lake.read_partition("silver", silver_table, day), silver_sql)
        tolerance = 0.005 * gold_partition.num_rows + 1e-9 * abs(silver)  # each gold row is rounded to the cent
        return dg.AssetCheckResult(passed=abs(gold - silver) <= tolerance, severity=dg.AssetCheckSeverity.ERROR,
                                   metadata={"gold": gold, "silver": silver, "difference": gold - silver})

    return [expectations, totals_match_silver]


# ---------------------------------------------------------------- serving


def _serving_check(spec: GoldTable) -> dg.AssetChecksDefinition:
    key = dg.AssetKey(["serving", spec.name])

    @dg.asset_check(asset=key, name="matches_gold", blocking=True, partitions_def=daily,
                    description="The warehouse holds exactly the gold rows of the day (or, for a dimension, "
                    "every gold key exactly once).")
    @gated
    def matches_gold(context: dg.AssetCheckExecutionContext, lake: Lake, warehouse: Warehouse) -> dg.AssetCheckResult:
        day = context.partition_key
        gold = lake.read_partition("gold", spec.name, day)
        if spec.key:
            served = warehouse.query(f"SELECT {', '.join(spec.key)} FROM {warehouse.qualified(spec.name)}")
            wanted = set(zip(*(gold[k].to_pylist() for k in spec.key), strict=True))
            have = list(zip(*(served[k].to_pylist() for k in spec.key), strict=True))
            missing = len(wanted - set(have))
            return dg.AssetCheckResult(passed=missing == 0 and len(have) == len(set(have)),
                                       severity=dg.AssetCheckSeverity.ERROR,
                                       metadata={"gold_keys": len(wanted), "missing_in_serving": missing,
                                                 "duplicate_keys": len(have) - len(set(have))})
        served = warehouse.read(spec.name, DAY_COLUMN, day, day).num_rows
        return dg.AssetCheckResult(passed=served == gold.num_rows, severity=dg.AssetCheckSeverity.ERROR,
                                   metadata={"gold_rows": gold.num_rows, "serving_rows": served})

    return matches_gold


checks = [
    *(c for contract in SOURCE_TABLES.values() for c in _bronze_checks(contract)),
    *(c for contract in SOURCE_TABLES.values() for c in _silver_checks(contract)),
    *(c for spec in SERVED_TABLES for c in _gold_checks(spec)),
    *(_serving_check(spec) for spec in SERVED_TABLES),
]

"""Silver logic: type the raw rows, quarantine what breaks the contract, drop duplicate keys.

Every bronze row ends in exactly one place (clean, duplicate, quarantine), so
bronze rows = silver rows + duplicates removed + quarantined rows, always.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pyarrow as pa

from platform_assets.layers.tables import LINEAGE_NAMES as LINEAGE
from platform_assets.layers.tables import SourceTable
from resources.identifiers import quote

_DUCKDB_TYPES = {pa.int64(): "BIGINT", pa.float64(): "DOUBLE", pa.string(): "VARCHAR",
                 pa.timestamp("us"): "TIMESTAMP", pa.date32(): "DATE"}


class ContractBreakError(ValueError):
    """Bronze lacks columns the contract needs; silver cannot be built row by row from it."""


@dataclass(frozen=True)
class Cleansed:
    clean: pa.Table  # contract columns, typed, one row per key, plus lineage
    quarantine: pa.Table  # the raw values as text, with `_reason`
    duplicates: int

    def reasons(self) -> dict[str, int]:
        counts = self.quarantine.group_by("_reason").aggregate([("_reason", "count")])
        return dict(zip(counts["_reason"].to_pylist(), counts["_reason_count"].to_pylist(), strict=True))


def missing_columns(contract: SourceTable, table: pa.Table) -> list[str]:
    return [c for c in (*contract.columns, *LINEAGE) if c not in table.column_names]


def _typed_columns(contract: SourceTable) -> str:
    return ", ".join(
        f"TRY_CAST({quote(f.name)} AS {_DUCKDB_TYPES[f.type]}) AS {quote(f.name)}, "
        f"CAST({quote(f.name)} AS VARCHAR) AS {quote('_raw_' + f.name)}"
        for f in contract.schema
    )


def typed(contract: SourceTable, bronze: pa.Table) -> pa.Table:
    """Bronze rows cast to the contract's types (NULL where a value does not cast): what entered silver."""
    if missing := missing_columns(contract, bronze):
        raise ContractBreakError(f"bronze/{contract.name} lacks contract columns: {', '.join(missing)}")
    with duckdb.connect() as con:
        con.register("bronze", bronze)
        columns = ", ".join(quote(c) for c in contract.columns)
        return con.sql(f"SELECT {columns} FROM (SELECT {_typed_columns(contract)} FROM bronze)").to_arrow_table()


def cleanse(contract: SourceTable, bronze: pa.Table) -> Cleansed:
    if missing := missing_columns(contract, bronze):
        raise ContractBreakError(f"bronze/{contract.name} lacks contract columns: {', '.join(missing)}")
    typed = _typed_columns(contract)
    checks = [f"WHEN {quote('_raw_' + c)} IS NOT NULL AND {quote(c)} IS NULL THEN 'unparseable {c}'"
              for c in contract.columns]
    checks += [f"WHEN {quote(c)} IS NULL THEN 'missing {c}'" for c in contract.required]
    checks += [f"WHEN {rule.bad_sql} THEN '{rule.reason}'" for rule in contract.rules if rule.quarantines]
    key = ", ".join(quote(k) for k in contract.key)
    lineage = ", ".join(quote(c) for c in LINEAGE)
    with duckdb.connect() as con:
        con.register("bronze", bronze)
        con.execute(f"""
            CREATE TEMP TABLE judged AS
            SELECT *, CASE {' '.join(checks)} ELSE NULL END AS _reason
            FROM (SELECT row_number() OVER () AS _row, {typed}, {lineage} FROM bronze)
        """)
        clean = con.sql(f"""
            SELECT {', '.join(quote(c) for c in contract.columns)}, {lineage} FROM judged
            WHERE _reason IS NULL
            QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY _ingested_at, _row) = 1
            ORDER BY _row
        """).to_arrow_table()
        quarantine = con.sql(f"""
            SELECT {', '.join(f"{quote('_raw_' + c)} AS {quote(c)}" for c in contract.columns)},
                   _reason, {lineage}
            FROM judged WHERE _reason IS NOT NULL ORDER BY _row
        """).to_arrow_table()
        valid = con.sql("SELECT count(*) FROM judged WHERE _reason IS NULL").fetchall()[0][0]
    schema = pa.schema([*contract.schema, *(bronze.schema.field(c) for c in LINEAGE)])
    return Cleansed(clean=clean.cast(schema), quarantine=quarantine, duplicates=valid - clean.num_rows)

"""An order-independent content fingerprint of Arrow rows: the sum (mod 2^64) of DuckDB's hash of every row.
Checkpoints seal their Parquet content with it (deep verification re-computes it without a database) and the
lake fingerprints a partition's rows with it; the safeguard compares rows as multisets of the same hashes."""

from __future__ import annotations

import duckdb
import pyarrow as pa

FINGERPRINT_ALGORITHM = "duckdb-hash-rows-sum64"


class Fingerprint:
    """Order-independent content fingerprint: the sum (mod 2^64) of a hash of every row.

    Feed record batches in any order and split; equal multisets of rows give equal values.
    """

    def __init__(self) -> None:
        self._sum = 0
        self._con = duckdb.connect()

    def update(self, batch: pa.RecordBatch | pa.Table) -> None:
        if batch.num_rows == 0:
            return
        # 32-bit halves summed as BIGINT stay exact (DuckDB sums UHUGEINT as DOUBLE)
        high, low = _over_row_hashes(self._con, batch, "SELECT sum(CAST(h >> 32 AS BIGINT)), "
                                     "sum(CAST(h & 4294967295 AS BIGINT)) FROM hashed", lambda r: r.fetchall()[0])
        self._sum = (self._sum + (int(high) << 32) + int(low)) % (1 << 64)

    def hexdigest(self) -> str:
        return f"{self._sum:016x}"


def row_hashes(con: duckdb.DuckDBPyConnection, batch: pa.RecordBatch | pa.Table) -> pa.Array:
    """The hash of every row of `batch` (UINT64), the same hash the fingerprint adds up."""
    if batch.num_rows == 0:
        return pa.array([], pa.uint64())
    return _over_row_hashes(con, batch, "SELECT h FROM hashed",
                            lambda r: r.fetch_arrow_table().column(0).combine_chunks())


def _over_row_hashes(con: duckdb.DuckDBPyConnection, batch: pa.RecordBatch | pa.Table, query: str, fetch):
    """`fetch` the result of `query` over `hashed(h)`: one hash per row of `batch`, over every column in order."""
    table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
    columns = ", ".join(f'"{i}"' for i in range(table.num_columns))
    con.register("rows_in", table.rename_columns([str(i) for i in range(table.num_columns)]))
    try:
        return fetch(con.sql(f"WITH hashed AS (SELECT hash({columns}) AS h FROM rows_in) {query}"))
    finally:
        con.unregister("rows_in")


def fingerprint_of(batches) -> str:
    fp = Fingerprint()
    for batch in batches:
        fp.update(batch)
    return fp.hexdigest()

"""Both sides of every comparison: Aegis (Arrow/ADBC) and the usual pandas recipe, on the same data.

Each side returns what it produced so the harness can check both agree (row count and content
fingerprint) before any time counts.
"""

import os
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from platform_assets.layers.generators import generate
from platform_assets.layers.tables import SOURCE_TABLES
from platform_assets.protection.restoring import plan_restore, restore_one
from resources import CheckpointStore, Lake, SourceDatabase
from resources.fingerprints import fingerprint_of

TABLE = "infra_logs"
DAY = "2026-06-01"


@dataclass
class Produced:
    rows: int
    fingerprint: str


def build_source(url: str, rows: int, table: str = TABLE) -> SourceDatabase:
    """`table` (infra_logs by default) with `rows` synthetic rows (2 % of them dirty, as in production)."""
    db = SourceDatabase(url=url)
    db.replace_day(table, SOURCE_TABLES[table].day_column, DAY, generate(table, DAY, rows))
    return db


def table_fingerprint(db: SourceDatabase, table: str, schema: pa.Schema | None = None) -> Produced:
    with db.read_table(table) as reader:
        batches = [b if schema is None else _cast(b, schema) for b in reader]
    return Produced(sum(b.num_rows for b in batches), fingerprint_of(batches))


def _cast(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    return pa.Table.from_batches([batch]).select(schema.names).cast(schema).to_batches()[0] if batch.num_rows \
        else batch


def sqlalchemy_url(db: SourceDatabase) -> str:
    return db.url if db.kind == "sqlite" else db.url.replace("postgresql://", "postgresql+psycopg2://", 1)


# ---------------------------------------------------------------- checkpoint


def source_schema(db: SourceDatabase) -> pa.Schema:
    """The table's columns as the driver reads them: what both sides' outputs are compared in."""
    with db.read_table(TABLE) as reader:
        return pa.schema([pa.field(f.name, f.type) for f in reader.schema])


def ours_checkpoint(db: SourceDatabase, store: CheckpointStore, schema: pa.Schema | None = None
                    ) -> tuple[Produced, str]:
    """A checkpoint, read back like the baseline's file: the table's columns (without the rowid an exact
    SQLite checkpoint also carries), fingerprinted in the comparison schema."""
    manifest = store.write(db, TABLE)
    schema = schema or source_schema(db)
    batches = [_cast(b, schema) for b in store.read_batches(TABLE, manifest["id"], manifest)]
    return Produced(manifest["rows"], fingerprint_of(batches)), manifest["id"]


def baseline_checkpoint(db: SourceDatabase, path: Path, schema: pa.Schema) -> Produced:
    """The common recipe: read the table into a DataFrame, write it with pandas' to_parquet (snappy).

    Unchunked on purpose: `read_sql(chunksize=100_000)` with one `to_parquet` per chunk was no faster
    (1M rows from SQLite: 3.9 s unchunked, 4.0-4.2 s chunked), so the baseline gets the faster form."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(sqlalchemy_url(db))
    with engine.connect() as con:
        frame = pd.read_sql(f'SELECT * FROM "{TABLE}"', con)
    engine.dispose()
    frame.to_parquet(path, compression="snappy", index=False)
    table = pq.read_table(path)
    return Produced(table.num_rows, fingerprint_of(table.cast(schema).to_batches()))


# ---------------------------------------------------------------- restore


def ours_restore(db: SourceDatabase, store: CheckpointStore, checkpoint_id: str, target: str,
                 schema: pa.Schema) -> Produced:
    plan = plan_restore(store, TABLE, checkpoint_id, target_table=target)
    restore_one(store, db, plan.table, plan.target, checkpoint_id)
    return table_fingerprint(db, target, schema)


def baseline_restore(db: SourceDatabase, parquet: Path, target: str, schema: pa.Schema) -> Produced:
    """The common recipe: read the Parquet file with pandas, write it with DataFrame.to_sql."""
    import sqlalchemy

    frame = pd.read_parquet(parquet)
    engine = sqlalchemy.create_engine(sqlalchemy_url(db))
    with engine.begin() as con:
        if db.kind == "sqlite":  # pandas' documented default: executemany, in chunks
            frame.to_sql(target, con, index=False, if_exists="replace", chunksize=100_000)
        else:  # for PostgreSQL pandas documents method="multi" as the faster option; 65,535 parameters max
            frame.to_sql(target, con, index=False, if_exists="replace", chunksize=50_000 // frame.shape[1],
                         method="multi")
    engine.dispose()
    return table_fingerprint(db, target, schema)


def drop(db: SourceDatabase, table: str) -> None:
    with db.connect() as conn, conn.cursor() as cur:
        cur.execute(f'DROP TABLE IF EXISTS "{table}"')
        conn.commit()


# ---------------------------------------------------------------- storage


def sqlite_file_bytes(rows: int, table: str = TABLE) -> int:
    """Bytes of a SQLite file holding just these rows (with its day index, as the source keeps it)."""
    with tempfile.TemporaryDirectory() as tmp:
        db = build_source(f"sqlite:///{tmp}/size.db", rows, table)
        with sqlite3.connect(f"{tmp}/size.db") as conn:
            conn.execute("VACUUM")
        del db
        return os.path.getsize(f"{tmp}/size.db")


def checkpoint_bytes(db: SourceDatabase, root: Path, codec: str, table: str = TABLE) -> int:
    store = CheckpointStore(lake=Lake(url=f"file://{root}/{codec}"), codec=codec, encryption_key="")
    manifest = store.write(db, table)
    return sum(f["bytes"] for f in manifest["files"])

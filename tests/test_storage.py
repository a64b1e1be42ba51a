"""The lake replaces partitions atomically; the warehouse serialises writers and never duplicates."""

import multiprocessing as mp

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from resources import Lake, Warehouse

DAY = "2026-03-01"


def _table(n: int, tag: str) -> pa.Table:
    return pa.table({"id": pa.array(range(n), pa.int64()), "tag": [tag] * n})


def _batches_then_crash(table: pa.Table):
    yield from table.to_batches(max_chunksize=10)
    raise RuntimeError("writer died mid-stream")


def _check_atomic_replace(lake: Lake) -> None:
    first = _table(100, "v1")
    lake.write_partition("bronze", "events", DAY, first.to_batches(max_chunksize=10), first.schema)
    with pytest.raises(RuntimeError, match="mid-stream"):
        lake.write_partition("bronze", "events", DAY, _batches_then_crash(_table(50, "v2")), first.schema)
    survived = lake.read_partition("bronze", "events", DAY)
    assert survived.num_rows == 100 and set(survived["tag"].to_pylist()) == {"v1"}

    second = _table(30, "v3")
    stats = lake.write_partition("bronze", "events", DAY, second.to_batches(), second.schema)
    assert stats.rows == 30 and stats.files == 1
    assert lake.read_partition("bronze", "events", DAY)["tag"].to_pylist() == ["v3"] * 30
    loc = lake.location("bronze", "events")
    history = DeltaTable(loc.uri, storage_options=loc.storage_options).history()
    assert [h["version"] for h in history] == [1, 0], "the crashed writer committed nothing"


def test_local_lake_replaces_a_partition_atomically_and_survives_a_crashed_writer(tmp_path):
    lake = Lake(url=f"file://{tmp_path}/lake")
    _check_atomic_replace(lake)
    assert (tmp_path / "lake/bronze/events/_delta_log").is_dir(), "a Delta table at <lake>/<layer>/<table>"


def test_s3_lake_replaces_a_partition_atomically_and_survives_a_crashed_writer(s3_env):
    _check_atomic_replace(Lake(url=f"s3://{s3_env.bucket}/atomic", endpoint_url=s3_env.endpoint))


def test_empty_partition_round_trips_with_its_schema(tmp_path):
    lake = Lake(url=f"file://{tmp_path}")
    empty = _table(0, "x")
    lake.write_partition("gold", "nothing", DAY, [], empty.schema)
    back = lake.read_partition("gold", "nothing", DAY)
    assert back.num_rows == 0 and back.schema.names == ["id", "tag"]


def _publish_many(url: str, times: int) -> None:
    warehouse = Warehouse(url=url)
    data = pa.table({"day": pa.array([DAY] * 500, pa.string()).cast(pa.date32()),
                     "value": pa.array(range(500), pa.int64())})
    for _ in range(times):
        warehouse.publish_partition("metrics", data, "day", DAY)


def _publish_concurrently(url: str) -> Warehouse:
    ctx = mp.get_context("spawn")
    workers = [ctx.Process(target=_publish_many, args=(url, 5)) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0], "a writer failed (a DuckDB lock error?)"
    return Warehouse(url=url)


def test_concurrent_duckdb_publishers_neither_fail_nor_duplicate(tmp_path):
    warehouse = _publish_concurrently(f"duckdb:///{tmp_path}/warehouse.duckdb")
    assert warehouse.read("metrics", "day", DAY, DAY).num_rows == 500


def test_concurrent_postgres_publishers_neither_fail_nor_duplicate(make_pg_database):
    warehouse = _publish_concurrently(make_pg_database("concurrency"))
    assert warehouse.read("metrics", "day", DAY, DAY).num_rows == 500


def test_upsert_replaces_rows_by_key(tmp_path):
    warehouse = Warehouse(url=f"duckdb:///{tmp_path}/w.duckdb")
    warehouse.upsert("dim", pa.table({"k": ["a", "b"], "v": [1, 2]}), ["k"])
    warehouse.upsert("dim", pa.table({"k": ["b", "c"], "v": [20, 30]}), ["k"])
    rows = sorted(warehouse.query(f"SELECT * FROM {warehouse.qualified('dim')}").to_pylist(), key=lambda r: r["k"])
    assert rows == [{"k": "a", "v": 1}, {"k": "b", "v": 20}, {"k": "c", "v": 30}]

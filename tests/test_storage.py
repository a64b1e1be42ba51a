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


def test_a_writer_role_made_for_another_database_of_the_server_does_not_stop_publishing_elsewhere(make_pg_database):
    """Roles are server-wide: security/warehouse_access set up for one warehouse database must not make every
    other database of the server (a staging warehouse, a re-created one) refuse to publish. A real refusal names
    the role, the database and what to run. Roles made here are uniquely named and dropped."""
    import uuid

    import adbc_driver_postgresql.dbapi as pg
    import dagster as dg

    from platform_assets.security import assets as security
    from resources.databases.warehouse import WarehousePermissionError

    tag = uuid.uuid4().hex[:6]
    writer, bi, login = f"aegis_writer_t{tag}", f"aegis_bi_t{tag}", f"platform_t{tag}"
    first, second = make_pg_database("first_warehouse"), make_pg_database("second_warehouse")
    try:
        secured = Warehouse(url=first, writer_role=writer)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("AEGIS_BI_ROLE", bi)
            assert dg.materialize([security.warehouse_access], resources={"warehouse": secured}).success
        fresh = Warehouse(url=second, writer_role=writer)
        day = pa.table({"day": pa.array([DAY] * 5).cast(pa.date32()), "n": list(range(5))})
        assert fresh.publish_partition("metrics", day, "day", DAY) == 5, "published as the login, not the writer"
        assert fresh.read("metrics", "day", DAY, DAY).num_rows == 5
        assert secured.publish_partition("metrics", day, "day", DAY) == 5, "where it was set up: as the writer"
        with pg.connect(first) as conn, conn.cursor() as cur:
            cur.execute("SELECT tableowner FROM pg_tables WHERE schemaname = 'serving' AND tablename = 'metrics'")
            assert cur.fetchone()[0] == writer

        with pg.connect(second, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(f'CREATE ROLE "{login}" LOGIN')
            cur.execute(f'GRANT CONNECT ON DATABASE "{second.rsplit("/", 1)[1]}" TO "{login}"')
        intruder = Warehouse(url=second.replace("://postgres@", f"://{login}@"), writer_role=writer)
        with pytest.raises(WarehousePermissionError) as refused:
            intruder.publish_partition("metrics", day, "day", DAY)
        said = str(refused.value)
        assert f"as role {login}" in said and "second_warehouse" in said and "security/warehouse_access" in said
        assert "GRANT USAGE, CREATE ON SCHEMA serving" in said
    finally:
        with pg.connect(first.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn, conn.cursor() as cur:
            for url in (first, second):
                cur.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
            for role in (login, bi, writer):
                cur.execute(f'DROP ROLE IF EXISTS "{role}"')

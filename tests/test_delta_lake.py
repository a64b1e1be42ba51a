"""The lake's layers are Delta tables: safe under concurrent writers, readable by other engines, restorable to
an earlier version, maintained without losing a row, and converted from the old layout without loss."""

import json
import multiprocessing as mp
import threading
from pathlib import Path

import dagster as dg
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from platform_assets.lake import maintenance as lake_maintenance
from platform_assets.lake.catalogue import LAKE_TABLES
from platform_assets.lake.restore import lake_restore_job
from resources import Lake
from resources.lake.delta_tables import TimeTravelError
from resources.lake.lake import LakeWriteConflict, LegacyLakeError
from resources.lake.migration import main as migrate
from sensors.alerts import build_alert_sensor

DAY, OTHER = "2026-03-01", "2026-03-02"


def _rows(n: int, tag: str, start: int = 0) -> pa.Table:
    return pa.table({"id": pa.array(range(start, start + n), pa.int64()), "tag": pa.array([tag] * n, pa.string()),
                     "amount": pa.array([i / 7 for i in range(n)], pa.float64())})


@pytest.fixture(params=["local", "s3"])
def lake(request, tmp_path) -> Lake:
    if request.param == "local":
        return Lake(url=f"file://{tmp_path}/lake")
    s3 = request.getfixturevalue("s3_env")
    return Lake(url=f"s3://{s3.bucket}/{tmp_path.name}", endpoint_url=s3.endpoint)


def _sorted(table: pa.Table) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda r: (r["id"], r["tag"]))


def test_a_commit_between_another_writers_files_and_its_commit_leaves_one_writers_rows(lake: Lake):
    lake.write_partition("silver", "events", DAY, _rows(10, "first"), _rows(0, "").schema)
    files_written, go_on = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    def slow_batches():
        yield from _rows(50, "slow").to_batches(max_chunksize=25)[:1]
        files_written.set()  # its data is on its way to storage; the commit comes after the other writer's
        go_on.wait(30)
        yield from _rows(50, "slow").to_batches(max_chunksize=25)[1:]

    def slow_writer():
        try:
            lake.write_partition("silver", "events", DAY, slow_batches(), _rows(0, "").schema)
        except BaseException as exc:  # noqa: B036 — the test inspects it
            failure.append(exc)

    thread = threading.Thread(target=slow_writer)
    thread.start()
    assert files_written.wait(30)
    lake.write_partition("silver", "events", DAY, _rows(30, "fast"), _rows(0, "").schema)
    go_on.set()
    thread.join(60)

    assert len(failure) == 1 and isinstance(failure[0], LakeWriteConflict), failure
    message = str(failure[0])
    assert "silver/events" in message and f"date={DAY}" in message and "run it again" in message
    assert _sorted(lake.read_partition("silver", "events", DAY)) == _sorted(_rows(30, "fast")), \
        "readable, and exactly the committed writer's rows"


def _write_repeatedly(url: str, endpoint: str | None, env: dict, day: str, tag: str, times: int, out) -> None:
    import os

    os.environ.update(env)
    lake = Lake(url=url, endpoint_url=endpoint)
    outcome = {"committed": 0, "conflicts": [], "other": []}
    for i in range(times):
        try:
            lake.write_partition("bronze", "events", day, _rows(100 + i, tag), _rows(0, "").schema)
            outcome["committed"] += 1
        except LakeWriteConflict as exc:
            outcome["conflicts"].append(str(exc))
        except Exception as exc:  # any other failure is a bug
            outcome["other"].append(f"{type(exc).__name__}: {exc}")
    out.put((tag, outcome))


def _race(lake: Lake, days: list[str], times: int = 8) -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    lake.write_partition("bronze", "events", "2026-01-01", _rows(1, "seed"), _rows(0, "").schema)  # the table exists
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    workers = [ctx.Process(target=_write_repeatedly, args=(lake.url, lake.endpoint_url, env, day, f"w{n}", times,
                                                           out)) for n, day in enumerate(days)]
    for worker in workers:
        worker.start()
    results = dict(out.get(timeout=300) for _ in workers)
    for worker in workers:
        worker.join(60)
    assert all(not r["other"] for r in results.values()), results
    return results


def test_two_processes_writing_one_partition_leave_exactly_one_writers_rows(lake: Lake):
    results = _race(lake, [DAY, DAY])
    rows = lake.read_partition("bronze", "events", DAY)
    tags = set(rows["tag"].to_pylist())
    assert len(tags) == 1, f"one writer's rows, never a mix: {tags}"
    winner = results[tags.pop()]
    assert winner["committed"] >= 1 and rows.num_rows in {100 + i for i in range(8)}
    assert sorted(rows["id"].to_pylist()) == list(range(rows.num_rows)), "no duplicates, nothing missing"
    for conflict in [c for r in results.values() for c in r["conflicts"]]:
        assert "bronze/events" in conflict and f"date={DAY}" in conflict


def test_two_processes_writing_different_partitions_both_commit(lake: Lake):
    results = _race(lake, [DAY, OTHER])
    assert all(r["committed"] == 8 and not r["conflicts"] for r in results.values()), results
    assert lake.read_partition("bronze", "events", DAY).num_rows == 107
    assert lake.read_partition("bronze", "events", OTHER).num_rows == 107
    assert set(lake.read_partition("bronze", "events", OTHER)["tag"].to_pylist()) == {"w1"}


def test_every_layer_reads_the_same_with_polars_and_deltalake_alone(embedded_world):
    lake = embedded_world.lake
    for table in LAKE_TABLES:
        uri = lake.location(table.layer, table.name).uri
        assert Path(uri, "_delta_log").is_dir(), f"{table.label} is a Delta table at <lake>/{table.label}"
        everything = pl.read_delta(uri)
        for day in embedded_world.days:
            ours = lake.read_partition(table.layer, table.name, day)
            theirs = everything.filter(pl.col("date") == day).drop("date").to_arrow()
            by_delta = DeltaTable(uri).to_pyarrow_table(partitions=[("date", "=", day)]).drop_columns(["date"])
            key = ours.column_names
            assert theirs.num_rows == ours.num_rows == by_delta.num_rows, table.label
            assert pa.Table.from_pylist(theirs.to_pylist(), ours.schema).sort_by([(k, "ascending") for k in key[:3]]) \
                .to_pylist() == ours.sort_by([(k, "ascending") for k in key[:3]]).to_pylist(), table.label
            assert by_delta.sort_by([(k, "ascending") for k in key[:3]]).to_pylist() == \
                ours.sort_by([(k, "ascending") for k in key[:3]]).to_pylist(), table.label


def test_a_gold_partition_restored_to_its_previous_version_holds_exactly_that_versions_rows(tmp_path):
    lake = Lake(url=f"file://{tmp_path}/lake")
    good, bad = _rows(40, "good"), _rows(25, "recomputed wrongly", start=1000)
    lake.write_partition("gold", "fact_sales", OTHER, _rows(5, "other day"), good.schema)
    lake.write_partition("gold", "fact_sales", DAY, good, good.schema)
    lake.write_partition("gold", "fact_sales", OTHER, _rows(6, "other day, later"), good.schema)
    lake.write_partition("gold", "fact_sales", DAY, bad, good.schema)
    with dg.DagsterInstance.ephemeral() as instance:
        result = lake_restore_job.execute_in_process(
            run_config={"ops": {"restore_lake_table": {"config": {"table": "gold/fact_sales", "date": DAY}}}},
            resources={"lake": lake}, instance=instance)
        assert result.success
        (event,) = [e for e in result.get_asset_materialization_events()]
        metadata = event.materialization.metadata
        assert event.materialization.partition == DAY and metadata["restored_from_version"].value == 1
        assert [r.data["rows"] for r in metadata["versions"].value.records[:3]] == [40, 25, 40], "versions and rows"
    assert _sorted(lake.read_partition("gold", "fact_sales", DAY)) == _sorted(good)
    assert _sorted(lake.read_partition("gold", "fact_sales", OTHER)) == _sorted(_rows(6, "other day, later")), \
        "the other day is untouched"


def _small_files(lake: Lake, days: list[str], writes: int) -> dict[str, int]:
    counts = {}
    for day in days:
        for i in range(writes):  # re-runs of the day; then appends make several small files in one version
            lake.write_partition("gold", "fact_sales", day, _rows(20 + i, f"run {i}"), _rows(0, "").schema)
        loc = lake.location("gold", "fact_sales")
        from deltalake import write_deltalake

        for extra in range(4):
            write_deltalake(loc.uri, _rows(3, f"late {extra}", start=500 + 3 * extra).append_column(
                "date", pa.array([day] * 3)), mode="append", storage_options=loc.storage_options)
        counts[day] = lake.read_partition("gold", "fact_sales", day).num_rows
    return counts


def test_compaction_and_vacuum_keep_rows_and_time_travel_within_the_retention(tmp_path):
    lake = Lake(url=f"file://{tmp_path}/lake", retention_hours=168)
    counts = _small_files(lake, [DAY, OTHER], writes=3)
    before_maintenance = lake.versions("gold", "fact_sales", DAY)[1].version
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(lake_maintenance.assets, resources={"lake": lake}, instance=instance)
    assert result.success
    compaction = result.asset_materializations_for_node("lake__compaction")[0].metadata
    vacuum = result.asset_materializations_for_node("lake__vacuum")[0].metadata
    assert compaction["files_before"].value == 10 and compaction["files_after"].value == 2
    assert vacuum["retention_hours"].value == 168 and vacuum["files_deleted"].value == 0, "all within retention"
    assert {d: lake.read_partition("gold", "fact_sales", d).num_rows for d in counts} == counts
    assert lake.read_partition("gold", "fact_sales", DAY, version=before_maintenance).num_rows == 21, \
        "an older version still reads after compaction and vacuum"
    with pytest.raises(ValueError, match="below the lake's time-travel promise of 168 h"):
        lake.vacuum("gold", "fact_sales", retention_hours=24)


def test_beyond_the_retention_vacuum_removes_old_files_and_time_travel_is_a_clear_error(tmp_path):
    lake = Lake(url=f"file://{tmp_path}/lake", retention_hours=0)
    counts = _small_files(lake, [DAY], writes=2)
    lake.compact("gold", "fact_sales")
    deleted = lake.vacuum("gold", "fact_sales")
    assert deleted and lake.stored("gold", "fact_sales") == lake.referenced("gold", "fact_sales")
    assert lake.read_partition("gold", "fact_sales", DAY).num_rows == counts[DAY]
    with pytest.raises(TimeTravelError, match="older than the lake's time-travel retention of 0 h"):
        lake.restore_partition("gold", "fact_sales", DAY, lake.versions("gold", "fact_sales", DAY)[1].version)
    assert lake.read_partition("gold", "fact_sales", DAY).num_rows == counts[DAY], "a refused restore changes nothing"


def _old_layout(root: Path) -> dict[str, pa.Table]:
    """A lake as the pre-Delta code wrote it: committed parts + _commit.json, and a crashed writer's orphan."""
    days = {DAY: _rows(12, "a"), OTHER: _rows(7, "b")}
    for day, rows in days.items():
        directory = root / "silver" / "sales" / f"date={day}"
        directory.mkdir(parents=True)
        pq.write_table(rows.slice(0, 5), directory / "part-0123456789ab-00000.parquet")
        pq.write_table(rows.slice(5), directory / "part-0123456789ab-00001.parquet")
        pq.write_table(_rows(3, "orphan"), directory / "part-ffffffffffff-00000.parquet")
        (directory / "_commit.json").write_text(json.dumps({"version": "0123456789ab", "rows": rows.num_rows, "files": [
            {"name": "part-0123456789ab-00000.parquet", "rows": 5}, {"name": "part-0123456789ab-00001.parquet",
                                                                      "rows": rows.num_rows - 5}]}))
    return days


def test_a_lake_in_the_old_layout_is_refused_then_converted_without_losing_a_file(tmp_path, capsys):
    days = _old_layout(tmp_path / "lake")
    lake = Lake(url=f"file://{tmp_path}/lake")
    with pytest.raises(LegacyLakeError, match="make migrate-lake"):
        lake.write_partition("silver", "sales", DAY, _rows(1, "new"), _rows(0, "").schema)
    with pytest.raises(LegacyLakeError, match="make migrate-lake"):
        lake.read_partition("silver", "sales", DAY)

    assert migrate(["--lake", lake.url]) == 0
    for day, rows in days.items():
        assert _sorted(lake.read_partition("silver", "sales", day)) == _sorted(rows)
    aside = sorted(p.relative_to(tmp_path / "lake/_pre_delta").as_posix()
                   for p in (tmp_path / "lake/_pre_delta").rglob("*") if p.is_file())
    assert len(aside) == 8 and f"silver/sales/date={DAY}/part-ffffffffffff-00000.parquet" in aside, aside
    assert migrate(["--lake", lake.url]) == 0 and "nothing to convert" in capsys.readouterr().out


def test_without_conditional_writes_each_tables_writers_share_a_pool_whose_limit_is_configured(tmp_path, monkeypatch):
    import shutil

    import yaml

    from resources.lake.settings import writer_pool

    assert writer_pool("silver/quarantine", "sales") is None, "by default Delta's own commit protocol arbitrates"
    monkeypatch.setenv("AEGIS_LAKE_SINGLE_WRITER", "true")
    assert writer_pool("silver/quarantine", "sales") == "lake_silver_quarantine_sales"
    root = Path(__file__).parents[1] / "docker"
    assert yaml.safe_load((root / "dagster.yaml").read_text())["concurrency"]["pools"]["default_limit"] == 1
    shutil.copy(root / "dagster.local.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1


def _restore(lake: Lake, instance, **config) -> dg.ExecuteInProcessResult:
    return lake_restore_job.execute_in_process(run_config={"ops": {"restore_lake_table": {"config": config}}},
                                               resources={"lake": lake}, instance=instance, raise_on_error=False)


def test_a_whole_table_goes_back_to_a_version_or_a_time_and_mistakes_are_named(tmp_path):
    lake = Lake(url=f"file://{tmp_path}/lake")
    schema = _rows(1, "x").schema
    lake.write_partition("silver", "sales", DAY, _rows(10, "a"), schema)  # version 0
    lake.write_partition("silver", "sales", OTHER, _rows(4, "b"), schema)  # version 1: both days as wanted
    wanted = {d: _sorted(lake.read_partition("silver", "sales", d)) for d in (DAY, OTHER)}
    as_of = lake.versions("silver", "sales", OTHER)[0].timestamp.isoformat()
    lake.write_partition("silver", "sales", DAY, _rows(2, "bad"), schema)  # version 2
    lake.write_partition("silver", "sales", OTHER, _rows(1, "bad"), schema)  # version 3
    with dg.DagsterInstance.ephemeral() as instance:
        assert _restore(lake, instance, table="silver/sales", version=1).success
        assert {d: _sorted(lake.read_partition("silver", "sales", d)) for d in (DAY, OTHER)} == wanted
        lake.write_partition("silver", "sales", DAY, _rows(3, "bad again"), schema)
        assert _restore(lake, instance, table="silver/sales", as_of=as_of).success
        assert {d: _sorted(lake.read_partition("silver", "sales", d)) for d in (DAY, OTHER)} == wanted

        unknown = _restore(lake, instance, table="silver/nope", date=DAY)
        assert not unknown.success and "unknown lake table 'silver/nope'" in str(unknown.all_events)
        never = _restore(lake, instance, table="silver/sales", date=DAY, version=99)
        assert not never.success and "no version 99" in str(never.all_events)
    assert lake.read_partition("silver", "sales", DAY).num_rows == 10, "failed restores changed nothing"


def test_a_step_that_lost_a_partition_to_another_writer_runs_again_and_succeeds():
    from platform_assets.layers.lake_writes import retried_on_conflict

    attempts = []

    @dg.asset
    def contested(context: dg.AssetExecutionContext) -> None:
        with retried_on_conflict(context):
            attempts.append(context.retry_number)
            if len(attempts) == 1:
                raise LakeWriteConflict("silver/sales date=2026-03-01: another writer committed this table")

    with dg.DagsterInstance.ephemeral() as instance:
        alerts = build_alert_sensor([contested.key])
        cursor = alerts.evaluate_tick(dg.build_sensor_context(instance=instance)).cursor  # caught up
        assert dg.materialize([contested], instance=instance).success
        tick = alerts.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=cursor))
        assert "1 new alert(s)" in tick.skip_message, "the failed first attempt is alerted though the run succeeded"
    assert attempts == [0, 1]

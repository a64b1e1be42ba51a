"""The whole graph, materialised for two days on real backends, reconciles layer to layer."""

import math

import pyarrow.compute as pc
import pytest

from platform_assets.layers.gold import GOLD_TABLES
from platform_assets.layers.serving import DAY_COLUMN
from platform_assets.layers.tables import SOURCE_TABLES
from tests.conftest import World


def latest_metadata(world: World, key: list[str], day: str) -> dict:
    import dagster as dg

    records = world.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[day]), limit=1
    ).records
    assert records, f"{'/'.join(key)} was never materialised for {day}"
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}


def test_every_layer_materialised_every_asset_for_both_days(world: World):
    expected = {"source": 4, "bronze": 5, "silver": 10, "gold": 8, "serving": 8, "reports": 2}  # + the macro series
    for layer, count in expected.items():
        assert world.summary.layers[layer].assets == count * len(world.days), layer
        assert world.summary.layers[layer].rows > 0, layer


@pytest.mark.parametrize("table", list(SOURCE_TABLES))
def test_source_day_equals_bronze_partition(world: World, table: str):
    contract = SOURCE_TABLES[table]
    for day in world.days:
        source_rows = world.source_db.count_day(table, contract.day_column, day)
        bronze = world.lake.read_partition("bronze", table, day)
        assert source_rows > 0
        assert bronze.num_rows == source_rows
        assert set(bronze.column_names) >= {*contract.columns, "_ingested_at", "_batch_id"}


@pytest.mark.parametrize("table", list(SOURCE_TABLES))
def test_bronze_equals_silver_plus_duplicates_plus_quarantine(world: World, table: str):
    contract = SOURCE_TABLES[table]
    for day in world.days:
        bronze = world.lake.read_partition("bronze", table, day).num_rows
        silver = world.lake.read_partition("silver", table, day)
        quarantine = world.lake.read_partition("silver/quarantine", table, day)
        duplicates = latest_metadata(world, ["silver", table], day)["duplicates_removed"]
        assert bronze == silver.num_rows + duplicates + quarantine.num_rows
        # the generator injects both kinds of dirt, so both paths are really exercised
        assert duplicates > 0 and quarantine.num_rows > 0
        assert quarantine["_reason"].null_count == 0
        keys = silver.group_by(list(contract.key)).aggregate([]).num_rows
        assert keys == silver.num_rows, "silver must hold one row per natural key"


def _sum(table, column) -> float:
    return pc.sum(table[column]).as_py() or 0


def test_gold_totals_equal_silver_sums(world: World):
    for day in world.days:
        silver = {t: world.lake.read_partition("silver", t, day) for t in SOURCE_TABLES}
        gold = {g.name: world.lake.read_partition("gold", g.name, day) for g in GOLD_TABLES}
        assert _sum(gold["server_latency_daily"], "requests") == silver["infra_logs"].num_rows
        status_classes = sum(_sum(gold["server_latency_daily"], f"status_{c}xx") for c in "2345")
        assert status_classes == silver["infra_logs"].num_rows
        assert math.isclose(_sum(gold["sales_by_category_daily"], "revenue"), _sum(silver["sales"], "total"),
                            abs_tol=0.01 * gold["sales_by_category_daily"].num_rows)
        assert _sum(gold["sales_by_category_daily"], "orders") == silver["sales"].num_rows
        for name in ("video_views_by_network_daily", "video_views_by_institution_daily"):
            assert _sum(gold[name], "views") == _sum(silver["video_events"], "views")
        assert gold["fact_sales"].num_rows == silver["sales"].num_rows
        assert math.isclose(_sum(gold["fact_sales"], "total"), _sum(silver["sales"], "total"), abs_tol=0.01)
        assert gold["dim_customer"].num_rows == silver["customers"].num_rows
        distinct_products = silver["sales"].group_by(["category", "product"]).aggregate([]).num_rows
        assert gold["dim_product"].num_rows == distinct_products


def test_instability_rank_orders_servers_by_score(world: World):
    latency = world.lake.read_partition("gold", "server_latency_daily", world.days[-1]).to_pylist()
    ranked = sorted(latency, key=lambda r: r["instability_rank"])
    assert [r["instability_rank"] for r in ranked] == list(range(1, len(ranked) + 1))
    scores = [r["instability_score"] for r in ranked]
    assert scores == sorted(scores, reverse=True)
    for r in latency:
        assert r["p50_latency_ms"] <= r["p95_latency_ms"] <= r["p99_latency_ms"] <= r["max_latency_ms"]


@pytest.mark.parametrize("spec", GOLD_TABLES, ids=lambda g: g.name)
def test_serving_equals_gold(world: World, spec):
    for day in world.days:
        gold = world.lake.read_partition("gold", spec.name, day)
        if spec.key:
            served = world.warehouse.query(f"SELECT * FROM {world.warehouse.qualified(spec.name)}")
            served_keys = set(served[spec.key[0]].to_pylist())
            assert set(gold[spec.key[0]].to_pylist()) <= served_keys
            assert served.num_rows == len(served_keys), "a dimension holds one row per key"
        else:
            served = world.warehouse.read(spec.name, DAY_COLUMN, day, day)
            assert served.num_rows == gold.num_rows
            # same columns with the same Arrow types: a number must never come back as text
            assert {f.name: f.type for f in served.schema} == {f.name: f.type for f in gold.schema}


def test_reports_are_written_and_name_the_worst_server(world: World):
    day = world.days[-1]
    report = world.lake.read_bytes("reports", "infra_audit", day, "infra_audit.md").decode()
    worst = [r for r in world.lake.read_partition("gold", "server_latency_daily", day).to_pylist()
             if r["instability_rank"] == 1][0]
    assert f"| 1 | {worst['server']} |" in report
    png = world.lake.read_bytes("reports", "executive_dashboard", day, "dashboard.png")
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
    meta = latest_metadata(world, ["reports", "executive_dashboard"], day)
    assert "data:image/png;base64," in meta["dashboard"]
    assert "dagster/row_count" not in meta, "a picture has no row count"
    assert meta["servers"] == len(world.lake.read_partition("gold", "server_latency_daily", day))

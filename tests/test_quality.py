"""Bad data stops at the layer where it appears, is kept in quarantine, and is named by the right check."""

from contextlib import ExitStack, nullcontext

import dagster as dg
import duckdb
import pyarrow.compute as pc
import pytest

from platform_assets.definitions import asset_checks, assets
from platform_assets.ops.runner import embedded_resources, last_days
from resources.lake.lake import PartitionNotFoundError
from sensors.jobs import quality_checks_job

DAY = last_days(1)[0]
ROWS = 2000
DAILY = dg.AssetSelection.groups("bronze", "silver", "gold", "serving")


def execute(sql: list[str], tmp_path, instance: dg.DagsterInstance | None = None
            ) -> tuple[dict, dg.ExecuteInProcessResult]:
    """Materialise one day of sources, break them with `sql`, then run bronze → serving with all checks."""
    resources = embedded_resources(tmp_path, ROWS, pii_key="test-key")
    with (nullcontext(instance) if instance else dg.DagsterInstance.ephemeral()) as instance:
        dg.materialize([*assets, *asset_checks], resources=resources, instance=instance, partition_key=DAY,
                       selection=dg.AssetSelection.groups("source"))
        with resources["source_db"].connect() as conn, conn.cursor() as cur:
            for statement in sql:
                cur.execute(statement)
            conn.commit()
        result = dg.materialize([*assets, *asset_checks], resources=resources, instance=instance,
                                partition_key=DAY, selection=DAILY, raise_on_error=False)
    return resources, result


def failed_checks(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    return {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()
            if not e.passed}


def materialised(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


SALES_DOWNSTREAM = {"gold/sales_by_category_daily", "gold/dim_product", "gold/fact_sales"}

ROW_DEFECTS = {
    # name: (statements, table, failing expectation, quarantine reason, blocked downstream)
    "nulls in keys": (["UPDATE sales SET id = NULL WHERE id % 10 = 0"], "sales",
                      "ExpectColumnValuesToNotBeNull(id)", "missing id", SALES_DOWNSTREAM),
    "negative prices": (["UPDATE sales SET unit_price = -5.0, total = -5.0 * quantity WHERE id % 10 = 1"], "sales",
                        "ExpectColumnValuesToBeBetween(unit_price)", "negative price", SALES_DOWNSTREAM),
    "unknown status codes": (["UPDATE infra_logs SET http_status = 999 WHERE rowid % 10 = 0"], "infra_logs",
                             "ExpectColumnValuesToBeBetween(http_status)", "unknown http status",
                             {"gold/server_latency_daily"}),
    "malformed emails": (["UPDATE customers SET email = replace(email, '@', ' at ') WHERE id % 10 = 0"],
                         "customers", "ExpectColumnValuesToMatchRegex(email)", "malformed email",
                         {"gold/dim_customer"}),
    "duplicated ids": (["INSERT INTO sales SELECT * FROM sales WHERE id % 10 = 2"], "sales",
                       "ExpectColumnValuesToBeUnique(id)", None, SALES_DOWNSTREAM),
}


@pytest.mark.parametrize("defect", list(ROW_DEFECTS))
def test_bad_rows_fail_the_silver_suite_are_quarantined_and_block_only_their_downstream(defect, tmp_path):
    statements, table, expectation, reason, blocked = ROW_DEFECTS[defect]
    resources, result = execute(statements, tmp_path)
    failures = failed_checks(result)
    check = failures.pop((f"silver/{table}", "expectations"))
    assert check.severity == dg.AssetCheckSeverity.ERROR
    assert expectation in check.metadata["summary"].value, check.metadata["summary"].value
    assert not failures, f"only the silver suite of {table} may fail: {list(failures)}"
    sections = {name: {r.data["expectation"]: r.data["verdict"] for r in check.metadata[name].value.records}
                for name in ("arriving rows (bronze typed; up to 2% may break a rule)", "clean rows (silver, strict)")}
    arriving, clean = sections.values()
    assert arriving[expectation] == "FAILED (ERROR)", "the failing rule is named in its own section"
    assert all(v == "passed" for v in clean.values()), "the clean rows meet every rule: quarantine did its job"

    done = materialised(result)
    assert f"silver/{table}" in done, "silver still runs and keeps every row"
    assert not blocked & done, f"blocked in the same run: {blocked & done}"
    assert "gold/video_views_by_network_daily" in done or table == "video_events", "other tables go on"

    lake = resources["lake"]
    quarantine = lake.read_partition("silver/quarantine", table, DAY)
    bronze = lake.partition_stats("bronze", table, DAY).rows
    if reason:  # about a tenth of the rows were broken: they are all kept, with their reason
        assert quarantine.filter(pc.equal(quarantine["_reason"], reason)).num_rows >= 0.08 * bronze
    silver = lake.partition_stats("silver", table, DAY).rows
    reconcile = [e for e in result.get_asset_check_evaluations()
                 if e.asset_key.to_user_string() == f"silver/{table}" and e.check_name == "rows_reconcile"]
    assert reconcile[0].passed and reconcile[0].metadata["unaccounted"].value == 0
    assert bronze == silver + reconcile[0].metadata["duplicates_removed"].value + quarantine.num_rows


SCHEMA_BREAKS = {
    "dropped column": (['ALTER TABLE sales DROP COLUMN product'], "removed: product (string)"),
    "column turned to text": ([
        'CREATE TABLE sales_text AS SELECT id, sale_ts, customer_id, category, product, '
        "CAST(quantity AS TEXT) || ' pcs' AS quantity, unit_price, total FROM sales",
        "DROP TABLE sales", "ALTER TABLE sales_text RENAME TO sales",
    ], "retyped: quantity: int64 -> string"),
}


@pytest.mark.parametrize("defect", list(SCHEMA_BREAKS))
def test_schema_breaks_fail_the_contract_check_on_bronze_and_stop_silver(defect, tmp_path):
    statements, diff = SCHEMA_BREAKS[defect]
    resources, result = execute(statements, tmp_path)
    failures = failed_checks(result)
    check = failures[("bronze/sales", "schema_contract")]
    assert check.severity == dg.AssetCheckSeverity.ERROR
    assert diff in check.metadata["summary"].value, check.metadata["summary"].value
    done = materialised(result)
    assert "bronze/sales" in done and "silver/sales" not in done and not SALES_DOWNSTREAM & done
    assert "silver/infra_logs" in done and "gold/server_latency_daily" in done, "other tables go on"
    with pytest.raises(PartitionNotFoundError):
        resources["lake"].read_partition("silver", "sales", DAY)
    assert resources["lake"].partition_stats("bronze", "sales", DAY).rows == \
        resources["source_db"].count_day("sales", "sale_ts", DAY), "bronze kept every row as it came"


def test_clean_data_passes_every_check(world):
    evaluations = [e for run in world.instance.get_runs()
                   for e in world.instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)]
    results = [e.dagster_event.event_specific_data for e in evaluations]
    daily = {(r.asset_key, r.check_name) for r in results if r.asset_key.path[0] in ("bronze", "silver", "gold",
                                                                                     "serving")}
    assert len(daily) == 44, sorted({(r.asset_key.to_user_string(), r.check_name) for r in results} - daily)
    failed = [(r.asset_key.to_user_string(), r.check_name, r.description) for r in results if not r.passed]
    assert not failed


def test_every_kind_of_check_fails_when_its_layer_is_tampered_with(tmp_path):
    with ExitStack() as stack:
        _tamper_and_check(tmp_path, stack)


def _tamper_and_check(tmp_path, stack: ExitStack) -> None:
    """No check that cannot fail: break each layer after a clean run, then run only the checks."""
    instance = stack.enter_context(dg.DagsterInstance.ephemeral())
    resources, result = execute([], tmp_path, instance)
    assert result.success and not failed_checks(result)
    lake, warehouse, source_db = resources["lake"], resources["warehouse"], resources["source_db"]
    with source_db.connect() as conn, conn.cursor() as cur:  # late rows the bronze run never saw
        cur.execute("INSERT INTO video_events SELECT * FROM video_events LIMIT 7")
        conn.commit()
    quarantine = lake.read_partition("silver/quarantine", "sales", DAY)  # a quarantined row goes missing
    lake.write_partition("silver/quarantine", "sales", DAY, quarantine.slice(1).to_batches(), quarantine.schema)
    latency = lake.read_partition("gold", "server_latency_daily", DAY)  # p50 above p99, one request lost
    broken = latency.set_column(latency.schema.get_field_index("p50_latency_ms"), "p50_latency_ms",
                                latency["p99_latency_ms"]).set_column(
        latency.schema.get_field_index("requests"), "requests", pc.subtract(latency["requests"], 1))
    lake.write_partition("gold", "server_latency_daily", DAY, broken.to_batches(), broken.schema)
    with duckdb.connect(warehouse.parsed.location) as con:  # someone deleted served rows
        con.execute("DELETE FROM serving.fact_sales WHERE sale_id % 2 = 0")

    # as the quality_checks_2330 schedule does: the checks job, subset to its checks alone
    definitions = dg.Definitions(assets=assets, asset_checks=asset_checks, jobs=[quality_checks_job],
                                 resources=resources)
    job = definitions.resolve_job_def("quality_checks_job")
    checks = set(job.asset_layer.asset_graph.asset_check_keys)
    rerun = job.get_subset(asset_selection=set(), asset_check_selection=checks).execute_in_process(
        instance=instance, partition_key=DAY, raise_on_error=False)
    assert not rerun.get_asset_materialization_events(), "only the checks ran"
    assert set(failed_checks(rerun)) == {
        ("bronze/video_events", "matches_source"),
        ("silver/sales", "rows_reconcile"),
        ("gold/server_latency_daily", "expectations"),
        ("gold/server_latency_daily", "totals_match_silver"),
        ("serving/fact_sales", "matches_gold"),
    }

"""The macro flow end to end on a real lake and Dagster instance, the API being a scripted HTTP server on
loopback: what bronze keeps, what silver types and quarantines, and how a day is still built — from the newest
real answer, said to be stale, alerted once — while the API is down, with the breaker failing fast and closing
again when the API is back. And sales_vs_inflation against figures computed by hand."""

import datetime as dt
import json
import time
from decimal import Decimal

import dagster as dg
import pyarrow as pa
import pytest

from bench.dagster_server import free_port
from platform_assets.layers.inflation import sales_vs_inflation
from platform_assets.macro import checks as macro_quality
from platform_assets.macro import indicators as macro
from platform_assets.macro.indicators import BRONZE, QUARANTINE, RAW, SILVER
from platform_assets.macro.series import VALUE, bronze_rows, cleanse_macro
from resources import Lake
from resources.http.macro_api import MacroSeriesApi
from sensors.alerts import WEBHOOK_VAR, build_alert_sensor
from tests.scripted_http import Scripted
from tests.test_alerts import Webhook

DAY, LATER = "2026-03-03", "2026-03-04"
IPCA = [{"data": "01/01/2026", "valor": "0.33"}, {"data": "01/02/2026", "valor": "0.5"}]
SELIC = [{"data": "02/03/2026", "valor": "14.25"}, {"data": "03/03/2026", "valor": "14.250000"}]
MACRO = dg.AssetSelection.assets(BRONZE, SILVER, QUARANTINE)


class Flow:
    """Bronze and silver macro_indicators materialised day by day against a lake, an instance and an API URL."""

    def __init__(self, tmp_path, instance):
        self.lake, self.instance = Lake(url=f"file://{tmp_path}/lake"), instance

    def api(self, url: str) -> MacroSeriesApi:
        return MacroSeriesApi(lake=self.lake, base_url=url, connect_timeout=0.3, read_timeout=0.5, attempts=2,
                              total_seconds=3.0, backoff_seconds=0.05, max_backoff_seconds=0.1, breaker_failures=2,
                              breaker_reset_seconds=1.5)

    def run(self, url: str, day: str = DAY) -> dg.ExecuteInProcessResult:
        return dg.materialize([*macro.assets, *macro_quality.checks], selection=MACRO, partition_key=day,
                              instance=self.instance, resources={"lake": self.lake, "macro_api": self.api(url)},
                              raise_on_error=False)


def _metadata(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
    return event.materialization.metadata


def _check(result: dg.ExecuteInProcessResult, name: str):
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    return evaluation


@pytest.fixture
def flow(tmp_path):
    with dg.DagsterInstance.ephemeral() as instance:
        yield Flow(tmp_path, instance)


def test_bronze_keeps_the_body_as_received_and_silver_types_it_exactly(flow):
    bodies = [json.dumps(IPCA, indent=1).encode(), json.dumps(SELIC).encode()]
    server = Scripted((200, bodies[0], {}, 0.0), (200, bodies[1], {}, 0.0))
    result = flow.run(server.url)
    assert result.success
    meta = _metadata(result, BRONZE)
    assert "bcdata.sgs.433/dados?formato=json&dataInicial=01/02/2025&dataFinal=03/03/2026" in meta["request_url"].value
    assert meta["attempts"].value == 2 and meta["latency_seconds"].value > 0 and meta["fallback"].value == "none"
    assert meta["status"].value == "ipca_monthly_pct: 200, selic_target_pct: 200"
    assert meta["breaker_state"].value == "closed"
    for series, body in zip(("ipca_monthly_pct", "selic_target_pct"), bodies, strict=True):
        assert flow.lake.read_bytes("bronze", RAW, DAY, f"{series}.json") == body, "the body exactly as served"
    silver = flow.lake.read_partition("silver", "macro_indicators", DAY)
    assert silver.schema.field("value").type == VALUE
    served = {(o["data"], Decimal(o["valor"])) for o in IPCA + SELIC}
    assert {(f"{r['reference_date']:%d/%m/%Y}", r["value"]) for r in silver.to_pylist()} == served
    assert _check(result, "macro_data_is_fresh").passed and _check(result, "expectations").passed
    assert _check(result, "rows_reconcile").passed
    server.stop()


def test_5xx_then_success_is_retried_and_the_attempts_are_in_metadata(flow):
    server = Scripted((500, b"oops", {}, 0.0), (200, IPCA, {}, 0.0), (200, SELIC, {}, 0.0))
    result = flow.run(server.url)
    assert result.success and _metadata(result, BRONZE)["attempts"].value == 3 and len(server.requests) == 3
    server.stop()


def test_valid_json_with_bad_rows_is_quarantined_with_reasons(flow):
    bad = [*IPCA, {"data": "31/02/2026", "valor": "0.1"}, {"data": "2026-01-01", "valor": "0.1"},
           {"data": "01/12/2025", "valor": "n/a"}, {"data": "01/11/2025", "valor": "1,5"},
           {"data": "01/10/2025"}, {"data": "01/01/2026", "valor": "0.33"}, {"data": "01/09/2025", "valor": 0.21},
           {"data": "01/08/2025", "valor": "0.1"}, {"data": "01/08/2025", "valor": "0.2"},
           {"data": "01/01/2020", "valor": "0.1"}, {"valor": "0.1"}, {"data": "01/07/2025", "valor": "0.1234567"}]
    server = Scripted((200, bad, {}, 0.0), (200, SELIC, {}, 0.0))
    result = flow.run(server.url)
    gate = _check(result, "expectations")
    assert not gate.passed and "11 of 16 observations quarantined" in gate.description, "too many: a failed gate"
    quarantine = flow.lake.read_partition("silver/quarantine", "macro_indicators", DAY).to_pylist()
    reasons = sorted(((r["data"], r["valor"], r["_reason"]) for r in quarantine), key=str)
    assert reasons == sorted([
        ("31/02/2026", "0.1", "malformed date"), ("2026-01-01", "0.1", "malformed date"),
        ("01/12/2025", "n/a", "non-numeric value (or more than 6 decimal places)"),
        ("01/11/2025", "1,5", "non-numeric value (or more than 6 decimal places)"),
        ("01/10/2025", None, "missing value"), ("01/01/2026", "0.33", "duplicate of an earlier row"),
        ("01/08/2025", "0.1", "conflicting values for one date"),
        ("01/08/2025", "0.2", "conflicting values for one date"),
        ("01/01/2020", "0.1", "date outside the window asked for"), (None, "0.1", "missing date"),
        ("01/07/2025", "0.1234567", "non-numeric value (or more than 6 decimal places)")], key=str)
    silver = {(r["series"], r["reference_date"]): r["value"]
              for r in flow.lake.read_partition("silver", "macro_indicators", DAY).to_pylist()}
    assert silver[("ipca_monthly_pct", dt.date(2025, 9, 1))] == Decimal("0.21"), "a JSON number keeps its digits"
    assert silver[("ipca_monthly_pct", dt.date(2026, 1, 1))] == Decimal("0.33")
    assert ("ipca_monthly_pct", dt.date(2025, 8, 1)) not in silver
    assert _check(result, "rows_reconcile").passed, "bronze = silver + quarantined"
    server.stop()


def test_a_request_the_api_refuses_fails_clearly_without_retry_or_fallback(flow):
    good = Scripted((200, IPCA, {}, 0.0), (200, SELIC, {}, 0.0))
    assert flow.run(good.url).success
    server = Scripted((404, b"serie nao encontrada", {}, 0.0))
    result = flow.run(server.url, LATER)
    assert not result.success and len(server.requests) == 1
    failure = result.get_step_failure_events()[0].step_failure_data.error.to_string()
    assert "answered 404" in failure and "not retried" in failure
    with pytest.raises(FileNotFoundError):
        flow.lake.read_partition("bronze", "macro_indicators", LATER)
    good.stop()
    server.stop()


def test_an_outage_falls_back_to_the_last_real_answer_warns_alerts_once_and_the_breaker_recovers(flow,
                                                                                                 monkeypatch):
    good = Scripted((200, IPCA, {}, 0.0), (200, SELIC, {}, 0.0))
    assert flow.run(good.url).success
    fetched = flow.lake.read_partition("bronze", "macro_indicators", DAY)["_fetched_at"][0].as_py()
    good.stop()
    webhook = Webhook()
    monkeypatch.setenv(WEBHOOK_VAR, webhook.url)
    alerts = build_alert_sensor([BRONZE, SILVER])
    cursor = alerts.evaluate_tick(dg.build_sensor_context(instance=flow.instance)).cursor  # caught up

    down = f"http://127.0.0.1:{free_port()}"  # the API is gone for longer than the retries
    result = flow.run(down, LATER)
    assert result.success, "a transient outage does not fail the run"
    assert _metadata(result, BRONZE)["fallback"].value == "ipca_monthly_pct, selic_target_pct"
    assert _metadata(result, BRONZE)["breaker_state"].value == "open"
    bronze = flow.lake.read_partition("bronze", "macro_indicators", LATER)
    assert set(bronze["_source"].to_pylist()) == {"fallback"} and set(bronze["_fetched_at"].to_pylist()) == {fetched}
    assert sorted(bronze.select(["series", "data", "valor"]).to_pylist(), key=str) == sorted(
        ({"series": s, **o} for s, rows in (("ipca_monthly_pct", IPCA), ("selic_target_pct", SELIC)) for o in rows),
        key=str)
    fresh = _check(result, "macro_data_is_fresh")
    assert not fresh.passed and fresh.severity == dg.AssetCheckSeverity.WARN
    assert "served from the answer fetched" in fresh.description and "h old" in fresh.description
    assert "failed 2 time" in fresh.description or "circuit breaker open" in fresh.description
    assert flow.lake.read_partition("silver", "macro_indicators", LATER).num_rows == len(IPCA + SELIC)

    alerts.evaluate_tick(dg.build_sensor_context(instance=flow.instance, cursor=cursor))
    stale = [a for a in webhook.received if a.get("check") == "macro_data_is_fresh"]
    assert len(stale) == 1 and stale[0]["severity"] == "WARN" and stale[0]["partition"] == LATER
    assert len(webhook.received) == 1, webhook.received

    started = time.monotonic()
    again = flow.run(down, LATER)  # a later run while open: no request at all, fails fast, falls back again
    assert again.success and "circuit breaker open" in _check(again, "macro_data_is_fresh").description
    assert time.monotonic() - started < 10.0, "no retries, no timeouts while open"

    time.sleep(1.6)  # the reset timeout passes; the API is back
    back = Scripted((200, IPCA, {}, 0.0), (200, SELIC, {}, 0.0))
    recovered = flow.run(back.url, LATER)
    assert recovered.success and _check(recovered, "macro_data_is_fresh").passed
    assert _metadata(recovered, BRONZE)["breaker_state"].value == "closed" and len(back.requests) == 2
    back.stop()
    webhook.stop()


def test_garbage_is_kept_as_received_and_the_day_falls_back(flow):
    good = Scripted((200, IPCA, {}, 0.0), (200, SELIC, {}, 0.0))
    assert flow.run(good.url).success
    garbage = b"<html>em manutencao</html>"
    server = Scripted((200, garbage, {}, 0.0), (200, SELIC, {}, 0.0))
    result = flow.run(server.url, LATER)
    assert result.success and _metadata(result, BRONZE)["fallback"].value == "ipca_monthly_pct"
    assert flow.lake.read_bytes("bronze", RAW, LATER, "ipca_monthly_pct_rejected.json") == garbage
    assert "not JSON" in _check(result, "macro_data_is_fresh").description
    good.stop()
    server.stop()


def test_without_any_earlier_answer_an_outage_fails_and_invents_nothing(flow):
    result = flow.run(f"http://127.0.0.1:{free_port()}")
    assert not result.success
    assert "nothing to fall back on" in result.get_step_failure_events()[0].step_failure_data.error.to_string()
    with pytest.raises(FileNotFoundError):
        flow.lake.read_partition("bronze", "macro_indicators", DAY)


def test_cleansing_accounts_for_every_row():
    now = dt.datetime(2026, 3, 3, tzinfo=dt.UTC)
    bronze = pa.concat_tables([bronze_rows("ipca_monthly_pct", [*IPCA, {"data": "x", "valor": "1"}], "u", now,
                                           "api", "run", now), bronze_rows("selic_target_pct", SELIC, "u", now, "api",
                                                                           "run", now)])
    result = cleanse_macro(bronze, DAY)
    assert result.clean.num_rows + result.quarantine.num_rows == bronze.num_rows == 5


def test_sales_vs_inflation_equals_the_hand_computed_figures():
    """March 3rd: books sold 60 + 60 (Mar 1, 3) against 100 on Feb 3 (Feb 20 is outside Feb 1-3): nominal +20 %.
    IPCA for March is not published; February's 0.50 % is the newest: real = 1.20 / 1.005 - 1 = 19.4030 %.
    The Selic target in force on Mar 3 is the Mar 2 value, 14.25 (the Mar 5 one is later). Home sold nothing in
    February's period: no growth, never a division by zero."""
    sales = pa.table({"day": [dt.date(2026, 2, 3), dt.date(2026, 2, 20), dt.date(2026, 3, 1), dt.date(2026, 3, 3),
                              dt.date(2026, 3, 3)],
                      "category": ["books", "books", "books", "books", "home"],
                      "orders": [1, 2, 3, 4, 5], "revenue": [100.0, 500.0, 60.0, 60.0, 70.0]})
    macro = pa.table({"series": ["ipca_monthly_pct", "ipca_monthly_pct", "selic_target_pct", "selic_target_pct"],
                      "reference_date": [dt.date(2026, 1, 1), dt.date(2026, 2, 1), dt.date(2026, 3, 2),
                                         dt.date(2026, 3, 5)],
                      "value": pa.array([Decimal("0.33"), Decimal("0.50"), Decimal("14.25"), Decimal("15.00")],
                                        VALUE)})
    books, home = sales_vs_inflation(sales, macro, DAY).to_pylist()
    assert books == {"day": dt.date(2026, 3, 3), "month": dt.date(2026, 3, 1), "category": "books",
                     "revenue_mtd": 120.0, "orders_mtd": 7, "days_with_sales": 2, "revenue_prev_period": 100.0,
                     "nominal_growth": 0.2, "ipca_month": dt.date(2026, 2, 1), "ipca_pct": Decimal("0.5"),
                     "real_growth": 0.19403, "selic_date": dt.date(2026, 3, 2), "selic_target_pct": Decimal("14.25")}
    assert home["revenue_mtd"] == 70.0 and home["revenue_prev_period"] == 0.0
    assert home["nominal_growth"] is None and home["real_growth"] is None


def test_the_dashboard_never_waits_for_the_macro_data(embedded_world, tmp_path):
    """A failed macro gate blocks gold/sales_vs_inflation but not the dashboard; without the served macro table
    the dashboard is still drawn, saying the panel has no data."""
    from platform_assets.definitions import asset_checks, assets
    from platform_assets.layers import reports
    from platform_assets.quality.gates import GATE_LOG
    from resources import Warehouse
    from resources import gate_verdicts as verdicts

    day = embedded_world.days[-1]
    dashboard = dg.AssetKey(["reports", "executive_dashboard"])
    with dg.DagsterInstance.ephemeral() as instance:
        verdicts.record(instance, SILVER, day, "expectations",
                        dg.AssetCheckResult(passed=False, description="IPCA unreadable"), "a-failed-run")
        gold = dg.materialize([*assets, *asset_checks], selection=[dg.AssetKey(["gold", "sales_vs_inflation"])],
                              partition_key=day, instance=instance, resources=embedded_world.resources,
                              raise_on_error=False)
        assert not gold.success and "silver/macro_indicators:expectations" in str(gold.get_step_failure_events()[0]
                                                                                    .step_failure_data.error)
        result = dg.materialize([*assets, *asset_checks], selection=[dashboard], partition_key=day,
                                instance=instance, resources=embedded_world.resources)
        assert _metadata(result, dashboard)["inflation_panel"].value is True
        assert not instance.fetch_materializations(GATE_LOG, limit=1).records, "not an override: not gated at all"

    bare = Warehouse(url=f"duckdb:///{tmp_path}/bare.duckdb")
    for table in ("server_latency_daily", "sales_by_category_daily", "video_views_by_network_daily"):
        bare.publish_partition(table, embedded_world.warehouse.read(table, "day", day, day), "day", day)
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize([reports.executive_dashboard], partition_key=day, instance=instance,
                                resources={**embedded_world.resources, "warehouse": bare})
    assert _metadata(result, dashboard)["inflation_panel"].value is False


def test_the_whole_day_in_one_run_without_the_macro_api_draws_the_dashboard_and_fails_only_the_macro_steps(
        tmp_path):
    """The README's quick start on a machine that cannot reach the central bank: Materialize all, one run. The
    macro steps fail (no earlier answer to fall back to: nothing is invented); everything else is built, the
    dashboard included, its macro panel saying there is no data."""
    from platform_assets.definitions import asset_checks, assets
    from platform_assets.ops.runner import MEDALLION, embedded_resources, last_days

    day = last_days(1)[0]
    resources = embedded_resources(tmp_path, 500)
    unreachable = f"http://127.0.0.1:{free_port()}"  # nothing listens: as without internet
    resources["macro_api"] = Flow(tmp_path, None).api(unreachable).model_copy(update={"lake": resources["lake"]})
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize([*assets, *asset_checks], selection=MEDALLION, partition_key=day, instance=instance,
                                resources=resources, raise_on_error=False)
    assert not result.success
    failed = {e.step_key for e in result.get_step_failure_events()}
    assert failed and all("macro" in step for step in failed), failed
    dashboard = dg.AssetKey(["reports", "executive_dashboard"])
    assert _metadata(result, dashboard)["inflation_panel"].value is False
    png = resources["lake"].read_bytes("reports", "executive_dashboard", day, "dashboard.png")
    assert png.startswith(b"\x89PNG"), "the dashboard's PNG is there"
    built = {e.asset_key for e in result.get_asset_materialization_events()}
    assert dg.AssetKey(["serving", "fact_sales"]) in built and dg.AssetKey(["reports", "infra_audit"]) in built

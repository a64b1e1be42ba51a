"""On a real dagster-daemon, declarative automation builds a clean day from source to reports without a person,
and stops at the layer whose blocking check failed on a dirty day."""

import time

from bench.dagster_server import dagster_server, embedded_env, local_home
from platform_assets.layers.gold import GOLD_TABLES
from platform_assets.ops.runner import last_days
from resources import SourceDatabase

DAY = last_days(1)[0]  # the latest daily partition: what automation looks after
REPORT_EVENT = """mutation($params: ReportRunlessAssetEventsParams!) {
  reportRunlessAssetEvents(eventParams: $params) { __typename } }"""
RUNS = """{ runsOrError { ... on Runs { results { runId status tags { key value } } } } }"""


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(1)
    raise TimeoutError(f"not within {timeout} s: {what}")


def test_the_daemon_builds_a_clean_day_through_serving_and_stops_at_a_failed_gate(tmp_path):
    local_home(tmp_path)
    env = embedded_env(tmp_path, 3000, AEGIS_AUTOMATION_INTERVAL_SECONDS="2")
    with dagster_server(env, tmp_path) as server:
        started = time.monotonic()
        source_run = server.materialize(["source"], partition=DAY)  # the source systems deliver the day
        assert server.wait_for_run(source_run)["status"] == "SUCCESS"
        # the macro series come on their own clock (08:00, 20:00, or when a new day begins): not awaited here
        last = [["serving", g.name] for g in GOLD_TABLES] + [["reports", "infra_audit"],
                                                             ["reports", "executive_dashboard"]]
        wait_for(lambda: all(server.latest_materialization(key) for key in last), 420, "the day reaches reports")
        elapsed = time.monotonic() - started

        def automated_runs() -> list[dict]:
            runs = server.graphql(RUNS)["runsOrError"]["results"]
            return [r for r in runs if {"key": "dagster/sensor_name", "value": "daily_layers_automation"} in r["tags"]]

        finished = wait_for(lambda: (found := automated_runs()) and all(
            r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in found) and found, 180,
            "every automation run finishes")
        assert all(r["status"] == "SUCCESS" for r in finished), finished
        automated = finished
        print(f"automation, source to reports for one day at 3,000 rows per table: {elapsed:.0f} s, "
              f"{len(automated)} runs")

        clean = {key: server.latest_materialization(["silver" if key == "sales" else "gold", key])["run_id"]
                 for key in ("sales", "fact_sales")}
        source = SourceDatabase(url=env["AEGIS_SOURCE_URL"])
        with source.connect() as conn, conn.cursor() as cur:  # the source system sends negative prices
            cur.execute("UPDATE sales SET unit_price = -5.0, total = -5.0 * quantity WHERE id % 10 = 1")
            conn.commit()
        answer = server.graphql(REPORT_EVENT, {"params": {  # ... and says it re-delivered the day
            "eventType": "ASSET_MATERIALIZATION", "assetKey": {"path": ["source", "sales"]}, "partitionKeys": [DAY],
            "description": "re-delivered by the source system"}})
        assert answer["reportRunlessAssetEvents"]["__typename"] == "ReportRunlessAssetEventsSuccess", answer
        wait_for(lambda: server.latest_materialization(["silver", "sales"])["run_id"] != clean["sales"], 180,
                 "bronze and silver rebuild the re-delivered day (silver keeps every row, quarantining the bad)")
        time.sleep(12)  # six automation ticks: gold would have been requested by now
        assert server.latest_materialization(["gold", "fact_sales"])["run_id"] == clean["fact_sales"], \
            "gold/fact_sales was not rebuilt from a silver day whose expectations failed"

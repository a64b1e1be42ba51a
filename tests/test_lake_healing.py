"""lake_partition_watch heals a damaged lake partition without a person: from history when an earlier version
holds the same rows, else by re-materialising it from upstream; one run per loss, and an alert."""

import os
import time
from pathlib import Path

import dagster as dg
import pytest
from deltalake import DeltaTable

from platform_assets.definitions import asset_checks, assets, defs
from platform_assets.lake.catalogue import LAKE_TABLES
from platform_assets.lake.restore import lake_restore_job
from platform_assets.ops.runner import embedded_resources, last_days, run_graph
from sensors.alerts import WEBHOOK_VAR
from sensors.jobs import lake_rebuild_job
from sensors.lake_watch import build_lake_watch
from tests.test_alerts import Webhook

DAY = last_days(1)[0]


@pytest.fixture
def world(tmp_path):
    resources = embedded_resources(tmp_path, 400)
    with dg.DagsterInstance.ephemeral() as instance:
        run_graph(resources, [DAY], instance, selection=dg.AssetSelection.groups("source", "bronze", "silver"))
        yield resources, instance


def truth(lake, layer: str, table: str) -> list[dict]:
    """The day's rows as delta-rs reads them (not through Aegis), in a stable order."""
    rows = DeltaTable(lake.location(layer, table).uri).to_pyarrow_table(partitions=[("date", "=", DAY)])
    return sorted(rows.to_pylist(), key=repr)


def data_file(lake, layer: str, table: str) -> Path:
    (path,) = DeltaTable(lake.location(layer, table).uri).file_uris(partition_filters=[("date", "=", DAY)])
    return Path(path.removeprefix("file://"))


class Watch:
    def __init__(self, resources, instance):
        self.sensor = build_lake_watch(LAKE_TABLES, lake_restore_job, lake_rebuild_job)
        self.resources, self.instance, self.cursor = resources, instance, None

    def tick(self):
        with dg.build_sensor_context(instance=self.instance, cursor=self.cursor, definitions=defs,
                                     resources={"lake": self.resources["lake"]}) as context:
            result = self.sensor.evaluate_tick(context)
        self.cursor = result.cursor or self.cursor
        return result

    def launch(self, request: dg.RunRequest) -> bool:
        """What the daemon does with the request: run it, tagged with its run key."""
        tags = {**request.tags, "dagster/run_key": request.run_key}
        if request.job_name == lake_restore_job.name:
            return lake_restore_job.execute_in_process(run_config=request.run_config, instance=self.instance,
                                                       resources={"lake": self.resources["lake"]}, tags=tags).success
        assert request.job_name == lake_rebuild_job.name
        return dg.materialize([*assets, *asset_checks], selection=request.asset_selection, instance=self.instance,
                              partition_key=request.partition_key, resources=self.resources, tags=tags).success


def test_a_deleted_silver_file_is_rebuilt_from_bronze_with_the_same_rows(world, monkeypatch):
    resources, instance = world
    webhook = Webhook()
    monkeypatch.setenv(WEBHOOK_VAR, webhook.url)
    lake = resources["lake"]
    before = truth(lake, "silver", "sales")
    os.remove(data_file(lake, "silver", "sales"))
    watch = Watch(resources, instance)

    (request,) = watch.tick().run_requests
    assert request.job_name == "lake_rebuild_job" and request.partition_key == DAY
    assert set(request.asset_selection) == {dg.AssetKey(["silver", "sales"]),
                                            dg.AssetKey(["silver", "sales_quarantine"])}
    assert not watch.tick().run_requests, "one run per loss, however many ticks see it"
    (alert,) = webhook.received
    assert alert["kind"] == "lake_partition_damaged" and alert["table"] == "silver/sales"
    assert alert["partition"] == DAY and alert["problems"][0].endswith(": missing")

    assert watch.launch(request)
    assert truth(lake, "silver", "sales") == before, "the partition's rows are what they were"
    assert "intact" in watch.tick().skip_message
    webhook.stop()


def test_a_truncated_file_is_restored_from_the_version_that_holds_the_same_rows(world):
    resources, instance = world
    lake = resources["lake"]
    before = truth(lake, "silver", "customers")
    run_graph(resources, [DAY], instance, selection=dg.AssetSelection.groups("silver"))  # the same rows again
    versions = lake.versions("silver", "customers", DAY)
    assert versions[0].fingerprint == versions[1].fingerprint
    damaged = data_file(lake, "silver", "customers")
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    watch = Watch(resources, instance)

    (request,) = watch.tick().run_requests
    assert request.job_name == "lake_restore"
    config = request.run_config["ops"]["restore_lake_table"]["config"]
    assert config == {"table": "silver/customers", "date": DAY, "version": versions[1].version}

    assert watch.launch(request)
    assert truth(lake, "silver", "customers") == before
    assert lake.versions("silver", "customers", DAY)[0].operation.endswith(f"(restore of v{versions[1].version})")
    assert "intact" in watch.tick().skip_message


HEALING_RUNS = """query($value: String!) { runsOrError(filter: {tags: [{key: "aegis/trigger", value: $value}]}) {
  ... on Runs { results { runId status jobName tags { key value } } } } }"""


def test_the_running_daemon_heals_a_deleted_silver_file_without_a_person(tmp_path):
    from bench.dagster_server import dagster_server, embedded_env, local_home
    from resources import Lake

    local_home(tmp_path)
    env = embedded_env(tmp_path, 3000, AEGIS_LAKE_WATCH_INTERVAL_SECONDS="2")  # enough rows for the 2 % tolerance
    with dagster_server(env, tmp_path) as server:
        run_id = server.materialize(["source", "bronze", "silver"], partition=DAY)
        assert server.wait_for_run(run_id)["status"] == "SUCCESS"
        lake = Lake(url=env["AEGIS_LAKE_URL"])
        before = truth(lake, "silver", "video_events")
        os.remove(data_file(lake, "silver", "video_events"))

        deadline = time.monotonic() + 180
        runs = []
        while time.monotonic() < deadline and not any(r["status"] == "SUCCESS" for r in runs):
            time.sleep(1)
            runs = server.graphql(HEALING_RUNS, {"value": "lake_partition_watch"})["runsOrError"]["results"]
        assert [(r["jobName"], r["status"]) for r in runs] == [("lake_rebuild_job", "SUCCESS")], runs
        tags = {t["key"]: t["value"] for t in runs[0]["tags"]}
        assert tags["aegis/lake_table"] == "silver/video_events" and tags["dagster/partition"] == DAY
        assert truth(lake, "silver", "video_events") == before
        time.sleep(6)  # a few more ticks: the healed partition starts no other run
        assert len(server.graphql(HEALING_RUNS, {"value": "lake_partition_watch"})["runsOrError"]["results"]) == 1

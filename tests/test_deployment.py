"""The production instance for real: webserver and daemon on PostgreSQL storage with docker/dagster.yaml,
runs launched through the webserver's GraphQL API and read back from PostgreSQL, and the UI driven by a
real browser (Debian's Chromium through Playwright)."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from platform_assets.runner import last_days
from tests.conftest import unavailable

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
DAY = last_days(1)[0]


@dataclass
class Platform:
    url: str
    home: Path
    pg_url: str
    env: dict

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        request = urllib.request.Request(f"{self.url}/graphql", json.dumps({"query": query,
                                         "variables": variables or {}}).encode(), {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"GraphQL answered {exc.code}: {exc.read()[:2000]!r}") from None
        assert "errors" not in body, body
        return body["data"]

    def wait_for_run(self, run_id: str, timeout: float = 240) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.graphql("query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }",
                                  {"id": run_id})["runOrError"]["status"]
            if status in ("SUCCESS", "FAILURE", "CANCELED"):
                return status
            time.sleep(1)
        raise TimeoutError(f"run {run_id} did not finish in {timeout} s")


def production_instance_yaml(s3_bucket: str) -> dict:
    """docker/dagster.yaml, with only the Docker run launcher swapped for the local one (no Docker here)."""
    config = yaml.safe_load((ROOT / "docker/dagster.yaml").read_text())
    assert config["run_launcher"]["class"] == "DockerRunLauncher"
    config["run_launcher"] = {"module": "dagster", "class": "DefaultRunLauncher"}
    return config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def platform(tmp_path_factory, make_pg_database, s3_env):
    work = tmp_path_factory.mktemp("production")
    home = work / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(production_instance_yaml(s3_env.bucket)))
    pg_url = make_pg_database("dagster")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AEGIS_", "DAGSTER_"))}
    env.update(
        DAGSTER_HOME=str(home), DAGSTER_PG_HOST="127.0.0.1", DAGSTER_PG_PORT="5432", DAGSTER_PG_USER="postgres",
        DAGSTER_PG_PASSWORD="", DAGSTER_PG_DB=pg_url.rsplit("/", 1)[1], AEGIS_LOG_BUCKET=s3_env.bucket,
        AWS_ENDPOINT_URL=s3_env.endpoint, AWS_REGION="us-east-1", AEGIS_IMAGE="unused", AEGIS_DOCKER_NETWORK="unused",
        AEGIS_SOURCE_URL=f"sqlite:///{work}/source.db", AEGIS_LAKE_URL=f"file://{work}/lake",
        AEGIS_WAREHOUSE_URL=f"duckdb:///{work}/warehouse.duckdb", AEGIS_PII_KEY="test-production-key",
        AEGIS_ROWS_PER_DAY="2000",
    )
    bin_dir = Path(sys.executable).parent
    logs = [open(work / f"{name}.log", "wb") for name in ("webserver", "daemon")]
    processes = [
        subprocess.Popen([str(bin_dir / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port),
                          "-w", str(ROOT / "workspace.yaml")], cwd=work, env=env, stdout=logs[0],
                         stderr=subprocess.STDOUT, start_new_session=True),
        subprocess.Popen([str(bin_dir / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")], cwd=work,
                         env=env, stdout=logs[1], stderr=subprocess.STDOUT, start_new_session=True),
    ]
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/server_info", timeout=2):
                    break
            except OSError:
                assert processes[0].poll() is None, (work / "webserver.log").read_text()[-3000:]
                time.sleep(0.5)
        else:
            raise TimeoutError("the webserver did not answer within 120 s")
        yield Platform(url=url, home=home, pg_url=pg_url, env=env)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        for log in logs:
            log.close()


LAUNCH = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } ... on InvalidSubsetError { message }
  ... on RunConfigValidationInvalid { errors { message } } } }"""


@pytest.fixture(scope="session")
def ingested(platform: Platform) -> str:
    """One day of sources and bronze, launched through GraphQL; returns the run id."""
    result = platform.graphql(LAUNCH, {"params": {
        "selector": {"repositoryLocationName": "aegis", "repositoryName": "__repository__", "jobName": "ingest_job"},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": DAY}]}}})["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    run_id = result["run"]["runId"]
    assert platform.wait_for_run(run_id) == "SUCCESS"
    return run_id


def test_a_run_launched_through_graphql_is_stored_in_postgres(platform: Platform, ingested: str):
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(platform.pg_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT status, pipeline_name FROM runs WHERE run_id = $1", parameters=[ingested])
        assert cur.fetchall() == [("SUCCESS", "ingest_job")]
        cur.execute("SELECT count(*) FROM event_logs WHERE run_id = $1 AND dagster_event_type = "
                    "'ASSET_MATERIALIZATION'", parameters=[ingested])
        assert cur.fetchone()[0] == 8, "4 source and 4 bronze materialisations"
        cur.execute("SELECT count(*) FROM event_logs WHERE run_id = $1 AND dagster_event_type = "
                    "'ASSET_CHECK_EVALUATION'", parameters=[ingested])
        assert cur.fetchone()[0] == 8, "the bronze checks ran too"
    sqlite_files = [p for p in platform.home.rglob("*.db")]
    assert not sqlite_files, f"the instance fell back to SQLite storage: {sqlite_files}"


def test_compute_logs_of_the_run_are_on_s3(platform: Platform, ingested: str, s3_env):
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(endpoint_override=s3_env.endpoint.split("://")[1], scheme="http", region="us-east-1")
    files = fs.get_file_info(pafs.FileSelector(f"{s3_env.bucket}/dagster-compute-logs", recursive=True))
    assert any(ingested in f.path for f in files), "no compute log of the run in the S3 bucket"


def test_the_ui_shows_every_group_and_materialises_an_asset_by_clicking(platform: Platform, ingested: str):
    if not os.path.exists(CHROMIUM):
        unavailable(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.goto(f"{platform.url}/asset-groups")
        skip = page.get_by_role("button", name="Skip")
        skip.click(timeout=30_000)  # the community dialog of a first visit
        for group in ("source", "bronze", "silver", "gold", "serving", "reports", "checkpoints", "recovery"):
            expect(page.get_by_text(group, exact=True).first).to_be_visible(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "ui-asset-groups.png"))

        page.goto(f"{platform.url}/assets/checkpoints/sales")
        before = _latest_run_id(platform)
        page.locator("button", has_text="Materialize").first.click(timeout=30_000)
        run_id = _new_run_id(platform, before)
        assert platform.wait_for_run(run_id) == "SUCCESS"
        page.goto(f"{platform.url}/runs/{run_id}")
        expect(page.get_by_text("Success").first).to_be_visible(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "ui-materialization-succeeded.png"), full_page=True)
        browser.close()


def _latest_run_id(platform: Platform) -> str | None:
    runs = platform.graphql("{ runsOrError(limit: 1) { ... on Runs { results { runId } } } }")["runsOrError"]
    return runs["results"][0]["runId"] if runs["results"] else None


def _new_run_id(platform: Platform, before: str | None, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        latest = _latest_run_id(platform)
        if latest and latest != before:
            return latest
        time.sleep(0.5)
    raise TimeoutError("clicking Materialize launched no run")

"""The production instance for real: webserver and daemon on PostgreSQL storage with docker/dagster.yaml,
runs launched through the webserver's GraphQL API and read back from PostgreSQL, and the UI driven by a
real browser (Debian's Chromium through Playwright)."""

import os
from pathlib import Path

import pytest
import yaml

from bench.dagster_server import DagsterServer, dagster_server, synthetic_sgs_url
from platform_assets.ops.runner import last_days
from tests.conftest import Browser

ROOT = Path(__file__).resolve().parent.parent
DAY = last_days(1)[0]


def production_instance_yaml(s3_bucket: str) -> dict:
    """docker/dagster.yaml, with only the Docker run launcher swapped for the local one (no Docker here)."""
    config = yaml.safe_load((ROOT / "docker/dagster.yaml").read_text())
    assert config["run_launcher"]["class"] == "DockerRunLauncher"
    config["run_launcher"] = {"module": "dagster", "class": "DefaultRunLauncher"}
    return config


@pytest.fixture(scope="session")
def dagster_storage(make_pg_database) -> str:
    """The PostgreSQL database holding the instance's runs and events."""
    return make_pg_database("dagster")


@pytest.fixture(scope="session")
def platform(tmp_path_factory, dagster_storage, s3_env):
    work = tmp_path_factory.mktemp("production")
    home = work / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(production_instance_yaml(s3_env.bucket)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AEGIS_", "DAGSTER_"))}
    env.update(
        DAGSTER_HOME=str(home), DAGSTER_PG_HOST="127.0.0.1", DAGSTER_PG_PORT="5432", DAGSTER_PG_USER="postgres",
        DAGSTER_PG_PASSWORD="", DAGSTER_PG_DB=dagster_storage.rsplit("/", 1)[1], AEGIS_LOG_BUCKET=s3_env.bucket,
        AWS_ENDPOINT_URL=s3_env.endpoint, AWS_REGION="us-east-1", AEGIS_IMAGE="unused", AEGIS_DOCKER_NETWORK="unused",
        AEGIS_SOURCE_URL=f"sqlite:///{work}/source.db", AEGIS_LAKE_URL=f"file://{work}/lake",
        AEGIS_WAREHOUSE_URL=f"duckdb:///{work}/warehouse.duckdb", AEGIS_PII_KEY="test-production-key",
        AEGIS_ROWS_PER_DAY="2000", AEGIS_MACRO_API_URL=synthetic_sgs_url(),
    )
    with dagster_server(env, work) as server:
        yield server


@pytest.fixture(scope="session")
def ingested(platform: DagsterServer) -> str:
    """One day of sources and bronze, launched through GraphQL; returns the run id."""
    run_id = platform.launch("ingest_job", tags={"dagster/partition": DAY})
    assert platform.wait_for_run(run_id)["status"] == "SUCCESS"
    return run_id


def test_a_run_launched_through_graphql_is_stored_in_postgres(platform: DagsterServer, ingested: str,
                                                              dagster_storage: str):
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(dagster_storage) as conn, conn.cursor() as cur:
        cur.execute("SELECT status, pipeline_name FROM runs WHERE run_id = $1", parameters=[ingested])
        assert cur.fetchall() == [("SUCCESS", "ingest_job")]
        cur.execute("SELECT count(*) FROM event_logs WHERE run_id = $1 AND dagster_event_type = "
                    "'ASSET_MATERIALIZATION'", parameters=[ingested])
        assert cur.fetchone()[0] == 9, "4 source and 5 bronze materialisations (the 4 tables, the macro series)"
        cur.execute("SELECT count(*) FROM event_logs WHERE run_id = $1 AND dagster_event_type = "
                    "'ASSET_CHECK_EVALUATION'", parameters=[ingested])
        assert cur.fetchone()[0] == 10, "the bronze checks ran too (2 per table, 2 of the macro series)"
    sqlite_files = [p for p in platform.home.rglob("*.db")]
    assert not sqlite_files, f"the instance fell back to SQLite storage: {sqlite_files}"


def test_compute_logs_of_the_run_are_on_s3(platform: DagsterServer, ingested: str, s3_env):
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(endpoint_override=s3_env.endpoint.split("://")[1], scheme="http", region="us-east-1")
    files = fs.get_file_info(pafs.FileSelector(f"{s3_env.bucket}/dagster-compute-logs", recursive=True))
    assert any(ingested in f.path for f in files), "no compute log of the run in the S3 bucket"


def test_the_ui_shows_every_group_and_materialises_an_asset_by_clicking(platform: DagsterServer, ingested: str,
                                                                       chromium):
    from playwright.sync_api import expect

    ui = Browser(chromium.new_page(viewport={"width": 1500, "height": 1000}), platform.url)
    page = ui.open("/asset-groups")
    for group in ("source", "bronze", "silver", "gold", "serving", "reports", "checkpoints", "recovery"):
        expect(page.get_by_text(group, exact=True).first).to_be_visible(timeout=30_000)
    ui.screenshot("ui-asset-groups")

    page = ui.open("/assets/checkpoints/sales")
    before = platform.latest_run_id()
    page.locator("button", has_text="Materialize").first.click(timeout=30_000)
    run_id = platform.new_run_id(before)
    assert platform.wait_for_run(run_id)["status"] == "SUCCESS"
    page = ui.open(f"/runs/{run_id}")
    expect(page.get_by_text("Success").first).to_be_visible(timeout=60_000)
    page.screenshot(path=str(ROOT / "test-artifacts/ui-materialization-succeeded.png"), full_page=True)
    page.close()

"""Secrets never leak: the whole graph, a failing run, a restore, the alert sensor and `make doctor`, on
PostgreSQL (passwords in the URLs), S3 and encrypted checkpoints, with known secret values; then every byte the
platform left behind — the Dagster instance's storage (event log, runs, tags, metadata, compute logs), the
alerts posted, the doctor's output and every file of the lake — is searched for them. A second test logs a
secret on purpose and sees the same scan catch it."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from platform_assets.layers import bronze
from platform_assets.ops.runner import run_graph
from platform_assets.protection import loaded as protection
from resources import (
    CheckpointStore,
    Lake,
    PiiMasker,
    RecoveryPolicy,
    SourceDatabase,
    SyntheticVolume,
    Warehouse,
)
from resources.http.macro_api import MacroSeriesApi
from sensors.alerts import WEBHOOK_VAR, build_alert_sensor
from tests.conftest import ROWS, lake_contents
from tests.test_alerts import Webhook
from tests.test_checkpoints import drop

ROOT = Path(__file__).resolve().parent.parent
PII_SECRET, PG_PASSWORD, HOOK_TOKEN = "pii-S3CR3T-7f3a9c1e", "pgS3CR3Tpw91", "hookS3CR3T55"
CHECKPOINT_KEY = "c0ffee" * 10 + "beef"


def with_password(url: str) -> str:
    return url.replace("://postgres@", f"://postgres:{PG_PASSWORD}@")


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def leaks(secrets: list[str], places: dict[str, bytes | str]) -> list[str]:
    """`where: which secret` for every secret found in any place (bytes or text)."""
    found = []
    for where, content in places.items():
        data = content.encode() if isinstance(content, str) else content
        found += [f"{where}: {secret[:4]}…" for secret in secrets if secret.encode() in data]
    return found


def test_no_secret_in_the_event_log_compute_logs_tags_metadata_alerts_doctor_or_lake(
        tmp_path, make_pg_database, s3_env, monkeypatch):
    source_url, warehouse_url = with_password(make_pg_database("leak_src")), with_password(make_pg_database("leak_wh"))
    webhook = Webhook()
    env = {"AEGIS_PII_KEY": PII_SECRET, "AEGIS_CHECKPOINT_KEYS": f"k1*={CHECKPOINT_KEY}",
           "AEGIS_SOURCE_URL": source_url, "AEGIS_WAREHOUSE_URL": warehouse_url,
           "AEGIS_LAKE_URL": f"s3://{s3_env.bucket}/leaks", WEBHOOK_VAR: f"{webhook.url}?token={HOOK_TOKEN}"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    lake = Lake(url=env["AEGIS_LAKE_URL"], endpoint_url=s3_env.endpoint)
    resources = {"source_db": SourceDatabase(url=dg.EnvVar("AEGIS_SOURCE_URL")), "lake": lake,
                 "warehouse": Warehouse(url=dg.EnvVar("AEGIS_WAREHOUSE_URL")),
                 "masker": PiiMasker(key=dg.EnvVar("AEGIS_PII_KEY")), "volume": SyntheticVolume(rows_per_day=ROWS),
                 "checkpoints": CheckpointStore(lake=lake), "recovery_policy": RecoveryPolicy(),
                 "macro_api": MacroSeriesApi(lake=lake, base_url=os.environ["AEGIS_MACRO_API_URL"])}
    secrets = [PII_SECRET, PG_PASSWORD, HOOK_TOKEN, CHECKPOINT_KEY, s3_env.secret_key]
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        alerts = build_alert_sensor([dg.AssetKey(["bronze", "sales"])])
        cursor = alerts.evaluate_tick(dg.build_sensor_context(instance=instance)).cursor
        day = "2026-11-01"
        run_graph(resources, [day], instance, checkpoint=True)

        wrong = SourceDatabase(url=source_url.rsplit("/", 1)[0] + "/no_such_database")  # a failing run
        failed = dg.materialize(bronze.assets, selection=[dg.AssetKey(["bronze", "sales"])], partition_key=day,
                                instance=instance, resources={**resources, "source_db": wrong}, raise_on_error=False)
        assert not failed.success

        drop(SourceDatabase(url=source_url), "sales")  # a restore
        restored = dg.materialize([*protection.recoveries, protection.log], instance=instance,
                                  selection=[dg.AssetKey(["recovery", "sales"])], resources=resources)
        assert restored.success

        ticked = alerts.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=cursor))
        assert webhook.received, "the alert sensor posted the failed run"
        runs = "\n".join(f"{run.run_id} {run.tags} {run.run_config}" for run in instance.get_runs())
        events = "\n".join(dg.serialize_value(e) for run in instance.get_runs() for e in instance.all_logs(run.run_id))
    doctor = subprocess.run([sys.executable, "-m", "platform_assets.ops.doctor"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=180, env={**os.environ, "PYTHONPATH": str(ROOT),
                                                         "DAGSTER_HOME": str(home),
                                                         "AWS_ENDPOINT_URL": s3_env.endpoint})
    assert "OK    lake" in doctor.stdout, doctor.stdout + doctor.stderr
    places = {**files_under(home), **lake_contents(lake), "runs and tags": runs, "event log": events,
              "alerts": repr(webhook.received) + repr(ticked.skip_message), "doctor": doctor.stdout + doctor.stderr}
    assert len(places) > 50
    assert not leaks(secrets, places), leaks(secrets, places)
    assert "postgres:***@" in events, "a URL with a password is shown with ***"
    webhook.stop()


@dg.asset
def careless(context: dg.AssetExecutionContext) -> None:
    context.log.info(f"connecting with {os.environ['AEGIS_PII_KEY']}")


def test_the_scan_finds_a_secret_that_was_logged(tmp_path, monkeypatch):
    monkeypatch.setenv("AEGIS_PII_KEY", PII_SECRET)
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        dg.materialize([careless], instance=instance)
    found = leaks([PII_SECRET], files_under(tmp_path))
    assert found and all("pii-" in f for f in found), "the scan must catch a logged secret"


pytestmark = pytest.mark.filterwarnings("ignore::dagster.PreviewWarning")

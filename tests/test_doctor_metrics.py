"""`make doctor` and `make metrics` as a user runs them: the real CLI in a subprocess, on the embedded stack,
on a closed PostgreSQL port and on an unreachable S3; the metrics endpoint over HTTP, parsed as OpenMetrics."""

import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from bench.dagster_server import free_port
from resources import CheckpointStore, Lake, SourceDatabase
from tests.conftest import unavailable

ROOT = Path(__file__).resolve().parent.parent
PLATFORM_TABLES = {"customers", "sales", "infra_logs", "video_events"}
CHECKPOINT_KEY = "ab" * 32
PII_KEY = "a-real-pii-secret-never-printed"


def embedded_env(work: Path, **extra: str) -> dict[str, str]:
    home = work / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AEGIS_", "DAGSTER_"))}
    env.update(AEGIS_SOURCE_URL=f"sqlite:///{work}/source.db", AEGIS_LAKE_URL=f"file://{work}/lake",
               AEGIS_WAREHOUSE_URL=f"duckdb:///{work}/warehouse.duckdb", AEGIS_PII_KEY=PII_KEY,
               AEGIS_CHECKPOINT_KEY=CHECKPOINT_KEY, AEGIS_MACRO_API_URL=os.environ["AEGIS_MACRO_API_URL"],
               DAGSTER_HOME=str(home), PYTHONPATH=str(ROOT))
    return {**env, **extra}


def doctor(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "platform_assets.ops.doctor"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=180)


def findings(output: str) -> list[tuple[str, str]]:
    return [(line[:4].strip(), line[6:]) for line in output.splitlines() if line[:4].strip() in ("OK", "WARN", "FAIL")]


def test_doctor_on_the_embedded_stack_prints_ok_or_warn_for_every_check_and_exits_0(tmp_path):
    result = doctor(embedded_env(tmp_path), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    found = findings(result.stdout)
    assert found and all(status in ("OK", "WARN") for status, _ in found), result.stdout
    text = result.stdout
    for check in ("source database", "lake", "warehouse", "dagster storage", "executor", "macro API",
                  "macro API breaker", "checkpoint encryption", "PII key", "disk (lake)",
                  *(f"checkpoint {t}" for t in PLATFORM_TABLES)):
        assert any(line.startswith(check + " ") for _, line in found), f"no line for {check}:\n{text}"
    assert "keyring present and valid: 1 key(s)" in text and "circuit breaker closed" in text
    assert PII_KEY not in text and CHECKPOINT_KEY not in text, "a secret was printed"


def test_doctor_names_a_closed_postgresql_port_fails_and_hides_the_password(tmp_path):
    url = f"postgresql://aegis:pg-secret-pw@127.0.0.1:{free_port()}/source"
    result = doctor(embedded_env(tmp_path, AEGIS_SOURCE_URL=url), tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    failed = [line for status, line in findings(result.stdout) if status == "FAIL"]
    assert any(line.startswith("source database") and "AEGIS_SOURCE_URL=" in line for line in failed), result.stdout
    assert "pg-secret-pw" not in result.stdout + result.stderr and "aegis:***@" in result.stdout


def test_doctor_with_celery_names_the_broker_the_workers_and_each_setting_that_lives_on_this_host(tmp_path):
    """The embedded stack with AEGIS_EXECUTOR=celery: the broker (RabbitMQ on 127.0.0.1:5672) answers, no worker
    listens (WARN), and Dagster's SQLite storage and the three file URLs each FAIL by name; a wrong value and a
    closed broker port fail naming their variable, without the broker's password."""
    with socket.socket() as s:
        s.settimeout(1)
        if s.connect_ex(("127.0.0.1", 5672)) != 0:
            unavailable("RabbitMQ is not listening on 127.0.0.1:5672")
    result = doctor(embedded_env(tmp_path, AEGIS_EXECUTOR="celery",
                                 AEGIS_CELERY_QUEUE="aegis-doctor-nobody-listens"), tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [(status, line) for status, line in findings(result.stdout) if line.startswith("executor ")]
    assert any(status == "OK" and "broker" in line and "workers answering" in line for status, line in lines) or \
        any(status == "WARN" and "workers answering: none" in line for status, line in lines), result.stdout
    failed = " ".join(line for status, line in lines if status == "FAIL")
    for named in ("Dagster's storage", "AEGIS_SOURCE_URL", "AEGIS_LAKE_URL", "AEGIS_WAREHOUSE_URL"):
        assert named in failed, f"{named} not named:\n{result.stdout}"
    wrong = doctor(embedded_env(tmp_path, AEGIS_EXECUTOR="threads"), tmp_path)
    assert any(status == "FAIL" and "AEGIS_EXECUTOR='threads'" in line for status, line in findings(wrong.stdout))
    closed = doctor(embedded_env(tmp_path, AEGIS_EXECUTOR="celery",
                                 AEGIS_CELERY_BROKER=f"pyamqp://aegis:broker-secret@127.0.0.1:{free_port()}//"),
                    tmp_path)
    assert any(status == "FAIL" and line.startswith("executor") for status, line in findings(closed.stdout)), \
        closed.stdout
    assert "broker-secret" not in closed.stdout + closed.stderr


def test_doctor_names_an_unreachable_s3_lake_and_fails(tmp_path):
    env = embedded_env(tmp_path, AEGIS_LAKE_URL="s3://aegis-lake/prod",
                       AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}", AWS_ACCESS_KEY_ID="doctor",
                       AWS_SECRET_ACCESS_KEY="s3-secret-value")
    started = time.monotonic()
    result = doctor(env, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    failed = [line for status, line in findings(result.stdout) if status == "FAIL"]
    assert any(line.startswith("lake ") and "AEGIS_LAKE_URL=s3://aegis-lake/prod" in line for line in failed), \
        result.stdout
    assert "s3-secret-value" not in result.stdout + result.stderr
    assert time.monotonic() - started < 120


def test_metrics_serve_openmetrics_with_the_checkpoint_age_of_every_protected_table(tmp_path):
    env = embedded_env(tmp_path)
    with sqlite3.connect(tmp_path / "source.db") as con:
        con.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        con.executemany("INSERT INTO customers VALUES (?, ?)", [(1, "Ana"), (2, "Bruno")])
    store = CheckpointStore(lake=Lake(url=env["AEGIS_LAKE_URL"]), encryption_key=CHECKPOINT_KEY)
    store.write(SourceDatabase(url=env["AEGIS_SOURCE_URL"]), "customers")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "platform_assets.ops.metrics", "--port", str(port)], cwd=tmp_path,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    try:
        body = _scrape(f"http://127.0.0.1:{port}/metrics", server)
    finally:
        server.terminate()
        server.wait(timeout=30)
    families = {f.name: f for f in text_string_to_metric_families(body)}  # raises on anything not OpenMetrics
    ages = {s.labels["table"]: s.value for s in families["aegis_checkpoint_age_seconds"].samples}
    assert set(ages) == PLATFORM_TABLES
    assert 0 <= ages["customers"] < 600 and all(ages[t] == float("inf") for t in PLATFORM_TABLES - {"customers"})
    states = {s.labels["state"]: s.value for s in families["aegis_macro_api_breaker_state"].samples}
    assert states == {"closed": 1.0, "half-open": 0.0, "open": 0.0}
    for name in ("aegis_restore_duration_seconds", "aegis_check_failures", "aegis_macro_api_errors",
                 "aegis_macro_api_latency_seconds"):
        assert name in families, sorted(families)
    assert {s.labels["section"]: s.value for s in families["aegis_scrape_errors"].samples} == {
        "checkpoints": 0.0, "breaker": 0.0, "capture": 0.0, "restores": 0.0, "checks": 0.0, "macro": 0.0}
    assert CHECKPOINT_KEY not in body and PII_KEY not in body


def _scrape(url: str, server: subprocess.Popen) -> str:
    deadline = time.monotonic() + 60
    while True:
        try:
            request = urllib.request.Request(url, headers={"Accept": "application/openmetrics-text; version=1.0.0"})
            with urllib.request.urlopen(request, timeout=30) as response:
                assert response.headers["Content-Type"].startswith("application/openmetrics-text")
                return response.read().decode()
        except (ConnectionError, urllib.error.URLError):
            if server.poll() is not None or time.monotonic() > deadline:
                said = server.stdout.read() if server.poll() is not None else "(still starting)"
                pytest.fail(f"metrics server did not answer: {said}")
            time.sleep(0.5)


def make_env_file(project: Path) -> Path:
    """`.env` written by `make env` from `.env.example`, as a new user has it."""
    (project / ".env.example").write_text((ROOT / ".env.example").read_text())
    subprocess.run(["make", "-s", "-f", str(ROOT / "Makefile"), ".env"], cwd=project, check=True,
                   capture_output=True)
    return project / ".env"


def test_with_a_dotenv_present_the_environment_wins_for_dagster_and_for_the_doctor_alike(tmp_path):
    """One rule: a value given in the environment is what Dagster's CLI (which reads .env over the environment)
    and make doctor use — `make env` writes each line as NAME=${NAME:-default}."""
    from platform_assets.ops.runner import last_days

    dotenv = make_env_file(tmp_path)
    assert "AEGIS_SOURCE_URL=${AEGIS_SOURCE_URL:-sqlite:///data/source.db}" in dotenv.read_text()
    elsewhere = tmp_path / "elsewhere.db"
    env = embedded_env(tmp_path, AEGIS_SOURCE_URL=f"sqlite:///{elsewhere}")
    env.pop("DAGSTER_HOME")  # AEGIS_ROWS_PER_DAY is not in the environment: only .env gives it
    day = last_days(1)[0]
    done = subprocess.run([str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m",
                           "platform_assets.definitions", "--select", "source/sales", "--partition", day],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with sqlite3.connect(elsewhere) as conn:  # the environment's database, .env's volume (10,000 a day)
        assert conn.execute("SELECT count(*) FROM sales").fetchone()[0] >= 10_000
    assert not (tmp_path / "data" / "source.db").exists(), ".env's default was not used"

    result = doctor(env, tmp_path)
    assert f"sqlite:///{elsewhere}"[len("sqlite:///"):] in result.stdout, result.stdout
    assert "sets AEGIS_SOURCE_URL plainly" not in result.stdout

    dotenv.write_text(dotenv.read_text() + f"AEGIS_SOURCE_URL=sqlite:///{tmp_path}/plain.db\n")  # by hand
    result = doctor(env, tmp_path)
    source = [line for status, line in findings(result.stdout) if line.startswith("source database")]
    assert source and "plain.db" in source[0], "the doctor checks what Dagster would use: the plain line"
    assert "sets AEGIS_SOURCE_URL plainly" in result.stdout and "elsewhere.db" in result.stdout, result.stdout

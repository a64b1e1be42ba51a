"""Steps on several hosts through Dagster's Celery executor: RabbitMQ on 127.0.0.1:5672, Dagster's storage on
PostgreSQL, the lake on S3 (SeaweedFS), two `make worker` processes in different working directories standing for
two hosts, the run launched through the real webserver and daemon. The lake the workers wrote, read back with
`deltalake` alone, equals the lake of the same days run in one process; a worker killed in the middle of a step
hands its step to the other; a setup that would read one host's files on another is refused by name."""

from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
import yaml
from deltalake import DeltaTable

from bench.celery_workers import Workers
from bench.dagster_server import DAILY_GROUPS, DagsterServer, dagster_server, synthetic_sgs_url
from platform_assets.lake.catalogue import LAKE_TABLES
from platform_assets.macro.series import NAME as MACRO
from resources import Lake
from resources.execution import ExecutionSettingError, executor_from_env, local_settings, restore_executor
from tests.conftest import PII_KEY, ROWS, World, unavailable
from tests.test_deployment import production_instance_yaml
from tests.test_restore_in_new_process import (
    checkpoint_everything,
    pg_existing,
    pg_truth,
    psql,
    wait_for_restores,
)

ROOT = Path(__file__).resolve().parent.parent
WORKER_EVENT = "in celery worker"
PROTECTED = ["public.docs", "public.acct", "public.acct_entries"]
USER_SCHEMA = """
CREATE TABLE docs (id int PRIMARY KEY, body text NOT NULL, meta jsonb, at timestamptz DEFAULT now());
CREATE TABLE acct (id int PRIMARY KEY, name text UNIQUE NOT NULL);
CREATE TABLE acct_entries (id serial PRIMARY KEY, acct_id int NOT NULL REFERENCES acct(id), amount numeric(12,2));
INSERT INTO docs SELECT i, 'doc ' || i, jsonb_build_object('n', i) FROM generate_series(1, 200000) i;
INSERT INTO acct SELECT i, 'account ' || i FROM generate_series(1, 200) i;
INSERT INTO acct_entries (acct_id, amount) SELECT 1 + i % 200, i * 0.01 FROM generate_series(1, 3000) i;
"""
RUN_EVENTS = """query($id: ID!, $cursor: String) { logsForRun(runId: $id, afterCursor: $cursor, limit: 5000) {
  ... on EventConnection { cursor hasMore events { __typename ... on MessageEvent { message stepKey }
    ... on EngineEvent { metadataEntries { label ... on TextMetadataEntry { text } } } } } } }"""


def test_the_executor_is_a_setting_and_a_wrong_value_names_the_variable():
    assert executor_from_env(env={}) is dg.in_process_executor
    assert executor_from_env(env={"AEGIS_EXECUTOR": "multiprocess"}) is dg.multiprocess_executor
    assert executor_from_env(env={"AEGIS_EXECUTOR": "celery"}).name == "aegis_celery"
    assert restore_executor(env={"AEGIS_EXECUTOR": "celery"}) is dg.in_process_executor, "restores stay in process"
    with pytest.raises(ExecutionSettingError, match="AEGIS_EXECUTOR='threads'"):
        executor_from_env(env={"AEGIS_EXECUTOR": "threads"})
    with pytest.raises(ExecutionSettingError, match="AEGIS_RESTORE_EXECUTOR"):
        restore_executor(env={"AEGIS_RESTORE_EXECUTOR": "celerity"})


def test_celery_refuses_storage_and_files_that_live_on_one_host(tmp_path):
    env = {"AEGIS_SOURCE_URL": f"sqlite:///{tmp_path}/source.db", "AEGIS_LAKE_URL": f"file://{tmp_path}/lake",
           "AEGIS_WAREHOUSE_URL": f"duckdb:///{tmp_path}/w.duckdb", "DAGSTER_HOME": str(tmp_path)}
    with dg.instance_for_test() as instance:
        found = local_settings(instance, env)
        assert len(found) == 4, found
        assert "Dagster's storage" in found[0] and "storage: postgres" in found[0]
        for variable in ("AEGIS_SOURCE_URL", "AEGIS_LAKE_URL", "AEGIS_WAREHOUSE_URL"):
            assert any(variable in line for line in found), variable
        shared = local_settings(instance, {**env, "AEGIS_SHARED_PATHS": "true"})
        assert len(shared) == 1, "a path every worker mounts is not one host's"
        servers = {"AEGIS_SOURCE_URL": "postgresql://db/source", "AEGIS_LAKE_URL": "s3://bucket/lake",
                   "AEGIS_WAREHOUSE_URL": "postgresql://db/serving"}
        assert len(local_settings(instance, servers)) == 1


# ---------------------------------------------------------------- the real thing


def _rabbitmq() -> None:
    with socket.socket() as s:
        s.settimeout(1)
        if s.connect_ex(("127.0.0.1", 5672)) != 0:
            unavailable("RabbitMQ is not listening on 127.0.0.1:5672")


@pytest.fixture(scope="module")
def celery_platform(tmp_path_factory, make_pg_database, s3_env):
    _rabbitmq()
    work = tmp_path_factory.mktemp("celery")
    home = work / "dagster_home"
    home.mkdir()
    config = production_instance_yaml(s3_env.bucket)
    assert config["run_monitoring"]["enabled"], "production watches its runs"
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    dagster_db, source = make_pg_database("celery_dagster"), make_pg_database("celery_source")
    psql(source, USER_SCHEMA)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AEGIS_", "DAGSTER_"))}
    env.update(
        DAGSTER_HOME=str(home), DAGSTER_PG_HOST="127.0.0.1", DAGSTER_PG_PORT="5432", DAGSTER_PG_USER="postgres",
        DAGSTER_PG_PASSWORD="", DAGSTER_PG_DB=dagster_db.rsplit("/", 1)[1], AEGIS_LOG_BUCKET=s3_env.bucket,
        AWS_ENDPOINT_URL=s3_env.endpoint, AWS_REGION="us-east-1", AEGIS_IMAGE="unused", AEGIS_DOCKER_NETWORK="unused",
        AEGIS_SOURCE_URL=source, AEGIS_PROTECTED_TABLES="docs,acct,acct_entries", AEGIS_WATCH_INTERVAL_SECONDS="2", AEGIS_LAKE_URL=f"s3://{s3_env.bucket}/celery",
        AEGIS_WAREHOUSE_URL=make_pg_database("celery_serving"), AEGIS_PII_KEY=PII_KEY,
        AEGIS_ROWS_PER_DAY=str(ROWS), AEGIS_MACRO_API_URL=synthetic_sgs_url(), AEGIS_EXECUTOR="celery",
        AEGIS_RESTORE_EXECUTOR="celery",
        AEGIS_CELERY_QUEUE=f"aegis-test-{uuid.uuid4().hex[:8]}",  # no other run's steps, no stale messages
    )
    workers = Workers(env, work)
    try:
        with dagster_server(env, work) as server:
            for name in ("host-a", "host-b"):
                workers.start(name)
            yield server, workers, env
    finally:
        workers.stop()


def run_events(server: DagsterServer, run_id: str) -> list[dict]:
    events, cursor = [], None
    while True:
        page = server.graphql(RUN_EVENTS, {"id": run_id, "cursor": cursor})["logsForRun"]
        events += page["events"]
        cursor = page["cursor"]
        if not page["hasMore"]:
            return events


def workers_of(events: list[dict]) -> set[str]:
    return {entry["text"].split("@")[0] for e in events if WORKER_EVENT in (e.get("message") or "")
            for entry in e.get("metadataEntries") or [] if entry["label"] == "Celery worker"}


def executions(events: list[dict], step: str) -> list[str]:
    """The workers that started `step`, in order."""
    return [entry["text"].split("@")[0] for e in events
            if e.get("stepKey") == step and WORKER_EVENT in (e.get("message") or "")
            for entry in e.get("metadataEntries") or [] if entry["label"] == "Celery worker"]


def lake_table(lake: Lake, layer: str, name: str) -> pa.Table | None:
    location = lake.location(layer, name)
    try:
        table = DeltaTable(location.uri, storage_options=location.storage_options).to_pyarrow_table()
    except Exception:  # noqa: BLE001 - a table that was never written: compared as absent
        return None
    kept = [c for c in table.column_names if not c.startswith(("_ingested", "_batch"))]
    return table.select(kept).sort_by([(c, "ascending") for c in kept
                                      if not pa.types.is_nested(table.schema.field(c).type)])


def test_the_graph_runs_on_two_workers_and_writes_the_lake_one_process_writes(celery_platform, production_world: World):
    server, _, env = celery_platform
    for day in production_world.days:
        run_id = server.materialize(DAILY_GROUPS, partition=day)
        run = server.wait_for_run(run_id, timeout=900)
        events = run_events(server, run_id)
        assert run["status"] == "SUCCESS", [e.get("message") for e in events][-30:]
        assert workers_of(events) == {"host-a", "host-b"}, "the steps ran on both workers"
    ours = Lake(url=env["AEGIS_LAKE_URL"], endpoint_url=env["AWS_ENDPOINT_URL"])
    compared = 0
    for table in LAKE_TABLES:
        if table.layer.split("/")[0] not in DAILY_GROUPS or table.name == MACRO:
            continue
        expected = lake_table(production_world.lake, table.layer, table.name)
        got = lake_table(ours, table.layer, table.name)
        assert (got is None) == (expected is None), table.label
        if expected is not None:
            assert got.equals(expected), f"{table.label}: the workers' lake differs from one process's"
            compared += 1
    assert compared >= 8


def test_a_worker_killed_mid_step_hands_the_step_to_the_other(celery_platform, production_world: World):
    server, workers, _ = celery_platform
    day = production_world.days[-1]
    run_id = server.launch("ingest_job", tags={"dagster/partition": day})
    deadline = time.monotonic() + 120
    victim = None
    while victim is None:
        assert time.monotonic() < deadline, "no step reached a worker within 120 s"
        events = run_events(server, run_id)
        victim = next(iter(sorted(workers_of(events))), None)
        time.sleep(0.05)
    workers.kill(victim)
    in_flight = [step for step in {e.get("stepKey") for e in events} if executions(events, step) == [victim]]
    killed_at = time.monotonic()
    try:
        run = server.wait_for_run(run_id, timeout=120)
        assert time.monotonic() - killed_at < 120
        events = run_events(server, run_id)
        assert run["status"] == "SUCCESS", [e.get("message") for e in events][-30:]
        survivor = ({"host-a", "host-b"} - {victim}).pop()
        for step in in_flight:  # the steps the victim held when it died: run again by the other worker (unless
            # the victim's result got out in the instant between our look and the kill)
            finished = any(e.get("stepKey") == step and "Finished execution" in (e.get("message") or "")
                           for e in events)
            ran = executions(events, step)
            assert ran == [victim, survivor] or (ran == [victim] and finished), (step, ran)
        ours = Lake(url=celery_platform[2]["AEGIS_LAKE_URL"], endpoint_url=celery_platform[2]["AWS_ENDPOINT_URL"])
        for name in ("sales", "customers"):
            got = ours.read_partition("bronze", name, day)
            expected = production_world.lake.read_partition("bronze", name, day)
            assert got.num_rows == expected.num_rows, f"bronze/{name} {day} damaged"
    finally:
        workers.start(victim)


def test_the_watch_restores_a_dropped_table_and_a_group_through_the_workers(celery_platform):
    """The watch sensor's restore and a foreign-key group's restore, each step on a worker that loaded the code
    location after the loss — and the worker that took the first restore killed while it held it: the restore's
    transaction dies with it (nothing half-restored), the other worker runs it again. The tables compared with
    the truth as PostgreSQL holds it."""
    server, workers, env = celery_platform
    url = env["AEGIS_SOURCE_URL"]
    checkpoint_everything(server)
    truth = pg_truth(url, PROTECTED)
    psql(url, "DROP TABLE docs; DROP TABLE acct, acct_entries CASCADE")
    deadline, victim = time.monotonic() + 120, None
    while victim is None:
        assert time.monotonic() < deadline, "no restore step reached a worker within 120 s"
        for run in server.runs({"aegis/trigger": "source_table_watch"}):
            if started := workers_of(run_events(server, run["runId"])):
                victim, first = sorted(started)[0], run["runId"]
                break
        time.sleep(0.05)
    workers.kill(victim)
    try:
        runs = wait_for_restores(server, lambda: pg_existing(url, PROTECTED) == set(PROTECTED))
        assert pg_truth(url, PROTECTED) == truth
        assert psql(url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename NOT IN "
                         "('docs', 'acct', 'acct_entries', 'sales', 'customers', 'infra_logs', 'video_events')"
                    ).strip() == "0", "a restore left a table behind"
        keys = [r["tags"]["aegis/restore_key"] for r in runs]
        assert any("acct-" in k and "acct_entries-" in k for k in keys), f"the group in one run: {keys}"
        for run in runs:
            assert workers_of(run_events(server, run["runId"])) & {"host-a", "host-b"}, "restored on a worker"
        events = run_events(server, first)
        survivor = ({"host-a", "host-b"} - {victim}).pop()
        for step in {e.get("stepKey") for e in events} - {None}:
            ran = executions(events, step)
            finished = any(e.get("stepKey") == step and "Finished execution" in (e.get("message") or "")
                           for e in events)
            assert ran in ([victim, survivor], [survivor]) or (ran == [victim] and finished), (step, ran)
    finally:
        workers.start(victim)


def test_two_runs_writing_one_partition_from_two_workers_leave_it_whole(celery_platform, production_world: World):
    """Two runs replace the same day of bronze/sales and silver/sales at once, their steps on different workers:
    both succeed (a writer that lost the commit runs its step again) and the partitions hold exactly one writer's
    rows, the rows one process writes."""
    server, _, env = celery_platform
    day = production_world.days[0]
    assets = [["bronze", "sales"], ["silver", "sales"], ["silver", "sales_quarantine"]]
    job = next(j for n in server.asset_nodes() if n["assetKey"]["path"] == assets[0] for j in n["jobNames"]
               if j.startswith("__ASSET_JOB"))
    runs = [server.launch(job, assets, tags={"dagster/partition": day}) for _ in range(2)]
    for run_id in runs:
        run = server.wait_for_run(run_id, timeout=300)
        assert run["status"] == "SUCCESS", [e.get("message") for e in run_events(server, run_id)][-20:]
    ours = Lake(url=env["AEGIS_LAKE_URL"], endpoint_url=env["AWS_ENDPOINT_URL"])
    for layer in ("bronze", "silver"):
        kept = [c for c in ours.read_partition(layer, "sales", day).column_names if not c.startswith("_")]
        got = ours.read_partition(layer, "sales", day, columns=kept)
        expected = production_world.lake.read_partition(layer, "sales", day, columns=kept)
        order = [(c, "ascending") for c in kept]
        assert got.sort_by(order).equals(expected.sort_by(order)), f"{layer}/sales {day} is not one writer's"

"""A real Dagster deployment on this machine — `dagster-daemon` and `dagster-webserver` on a DAGSTER_HOME —
driven through the webserver's GraphQL API exactly as the UI's Materialize button drives it.

Used by `make bench` (a day launched from the UI), the browser tests and the deployment tests.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from resources.http.sgs_mirror import SyntheticSgs

ROOT = Path(__file__).resolve().parent.parent
LOCAL_INSTANCE = ROOT / "docker/dagster.local.yaml"
BIN = Path(sys.executable).parent
LOCATION = {"repositoryLocationName": "aegis", "repositoryName": "__repository__"}
AUTOMATIC_TAGS = {"dagster/sensor_name", "dagster/schedule_name"}  # the runs no person launched
DAILY_GROUPS = ("source", "bronze", "silver", "gold", "serving", "reports")

LAUNCH = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  ... on InvalidSubsetError { message } ... on RunConfigValidationInvalid { errors { message } } } }"""
ASSET_NODES = """{ assetNodes { assetKey { path } groupName jobNames
  assetChecksOrError { ... on AssetChecks { checks { name } } } } }"""
LATEST_MATERIALIZATION = """query($path: [String!]!) { assetOrError(assetKey: {path: $path}) {
  ... on Asset { assetMaterializations(limit: 1) { runId metadataEntries { label
    ... on TextMetadataEntry { text } ... on IntMetadataEntry { intValue } } } } } }"""
RUNS = """query($filter: RunsFilter) { runsOrError(filter: $filter) { ... on Runs { results { runId status
  tags { key value } } } } }"""
LOCATION_STATUS = """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
RELOAD = """mutation($name: String!) { reloadRepositoryLocation(repositoryLocationName: $name) { __typename
  ... on WorkspaceLocationEntry { loadStatus locationOrLoadError { __typename ... on PythonError { message } } }
  ... on PythonError { message } } }"""
SENSOR_TICKS = """query($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
  ... on Sensor { sensorState { ticks(limit: 20) { status skipReason timestamp } } } } }"""
RUN = """query($id: ID!) { runOrError(runId: $id) { ... on Run { status creationTime startTime endTime
  stepStats { stepKey startTime endTime status } } } }"""


@functools.cache
def synthetic_sgs_url() -> str:
    """A synthetic SGS server on loopback for this process's lifetime: the macro series of the processes started
    here, without the internet."""
    return SyntheticSgs().__enter__()


def embedded_env(work: Path, rows: int, **extra: str) -> dict[str, str]:
    """The environment of the embedded stack (SQLite source, local lake, DuckDB warehouse, synthetic macro
    series) under `work`, without any AEGIS_* or DAGSTER_* variable of the caller's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AEGIS_", "DAGSTER_"))}
    env.update({"DAGSTER_HOME": str(work / "dagster_home"), "AEGIS_SOURCE_URL": f"sqlite:///{work}/source.db",
                "AEGIS_LAKE_URL": f"file://{work}/lake", "AEGIS_WAREHOUSE_URL": f"duckdb:///{work}/warehouse.duckdb",
                "AEGIS_PII_KEY": "dev-only-local-platform", "AEGIS_ROWS_PER_DAY": str(rows),
                "AEGIS_MACRO_API_URL": synthetic_sgs_url(), **extra})
    return env


def local_home(work: Path) -> Path:
    """A DAGSTER_HOME under `work` with the instance `make up` uses."""
    home = work / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(LOCAL_INSTANCE.read_text())
    return home


@dataclass
class DagsterServer:
    url: str
    home: Path

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"GraphQL answered {exc.code}: {exc.read()[:2000]!r}") from None
        if "errors" in answer:
            raise RuntimeError(f"GraphQL errors: {answer['errors']}")
        return answer["data"]

    def asset_nodes(self) -> list[dict]:
        return self.graphql(ASSET_NODES)["assetNodes"]

    def launch(self, job: str, assets: Sequence[Sequence[str]] | None = None,
               checks: Sequence[tuple[Sequence[str], str]] | None = None, tags: dict[str, str] | None = None,
               run_config: dict | None = None) -> str:
        """Launch a run as the UI does (its `launchRun` mutation) and return its id."""
        selector = {**LOCATION, "pipelineName": job}
        if assets is not None:
            selector["assetSelection"] = [{"path": list(a)} for a in assets]
            selector["assetCheckSelection"] = [{"assetKey": {"path": list(a)}, "name": n} for a, n in checks or ()]
        params = {"mode": "default", "selector": selector, "runConfigData": json.dumps(run_config or {}),
                  "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}}
        result = self.graphql(LAUNCH, {"params": params})["launchRun"]
        if result["__typename"] != "LaunchRunSuccess":
            raise RuntimeError(f"launchRun answered {result}")
        return result["run"]["runId"]

    def materialize(self, groups: Sequence[str], partition: str | None = None, run_config: dict | None = None) -> str:
        """What clicking Materialize on every asset of `groups` sends: the implicit asset job, the assets and
        all their checks, and the chosen partition as a tag."""
        nodes = [n for n in self.asset_nodes() if n["groupName"] in groups]
        if not nodes:
            raise RuntimeError(f"no assets in groups {groups}")
        job = next(j for j in nodes[0]["jobNames"] if j.startswith("__ASSET_JOB"))
        assets = [n["assetKey"]["path"] for n in nodes]
        checks = [(n["assetKey"]["path"], c["name"]) for n in nodes
                  for c in (n["assetChecksOrError"].get("checks") or [])]
        tags = {"dagster/partition": partition} if partition else {}
        return self.launch(job, assets, checks, tags, run_config)

    def run(self, run_id: str) -> dict:
        return self.graphql(RUN, {"id": run_id})["runOrError"]

    def wait_for_run(self, run_id: str, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.run(run_id)
            if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
                return run
            time.sleep(0.25)
        raise TimeoutError(f"run {run_id} did not finish in {timeout} s")

    def runs(self, tags: dict[str, str] | None = None) -> list[dict]:
        """Every run (newest first) with its status and tags as a dict, optionally only those with `tags`."""
        filter_ = {"tags": [{"key": k, "value": v} for k, v in tags.items()]} if tags else {}
        found = self.graphql(RUNS, {"filter": filter_})["runsOrError"]["results"]
        return [{**r, "tags": {t["key"]: t["value"] for t in r["tags"]}} for r in found]

    def location(self) -> dict:
        """The code location as the UI sees it: its load status, and the error when it failed to load."""
        (entry,) = [e for e in self.graphql(LOCATION_STATUS)["workspaceOrError"]["locationEntries"]
                    if e["name"] == LOCATION["repositoryLocationName"]]
        return {"status": entry["loadStatus"], "error": (entry["locationOrLoadError"] or {}).get("message")}

    def reload_location(self) -> dict:
        """What the UI's Reload button does; returns the location as loaded again."""
        self.graphql(RELOAD, {"name": LOCATION["repositoryLocationName"]})
        return self.location()

    def sensor_ticks(self, sensor: str) -> list[dict]:
        selector = {**LOCATION, "sensorName": sensor}
        return self.graphql(SENSOR_TICKS, {"selector": selector})["sensorOrError"]["sensorState"]["ticks"]

    def latest_run_id(self) -> str | None:
        """The newest run a person launched (a click, GraphQL): runs of sensors and schedules — automation may
        start one at any moment — are not counted."""
        by_person = [r for r in self.runs() if not AUTOMATIC_TAGS & set(r["tags"])]
        return by_person[0]["runId"] if by_person else None

    def new_run_id(self, before: str | None, timeout: float = 60) -> str:
        """The run a person launched since `before` was the newest (e.g. by a click in the UI)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            latest = self.latest_run_id()
            if latest and latest != before:
                return latest
            time.sleep(0.25)
        raise TimeoutError(f"no run was launched within {timeout} s")

    def latest_materialization(self, asset: Sequence[str]) -> dict | None:
        """The run id and metadata (text and int entries) of the asset's latest materialisation, or None."""
        found = self.graphql(LATEST_MATERIALIZATION, {"path": list(asset)})["assetOrError"]["assetMaterializations"]
        if not found:
            return None
        metadata = {e["label"]: e.get("text", e.get("intValue")) for e in found[0]["metadataEntries"]}
        return {"run_id": found[0]["runId"], "metadata": metadata}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def dagster_server(env: dict[str, str], cwd: Path, daemon: bool = True,
                   timeout: float = 120) -> Iterator[DagsterServer]:
    """Start the webserver (and the daemon) of the workspace with `env`; stop both on exit.

    `cwd` should be a scratch directory: Dagster loads a `.env` from the working directory, and a developer's
    .env must not point these processes at their real data."""
    _create_storage(env, cwd)
    port = free_port()
    commands = {"webserver": [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port),
                              "-w", str(ROOT / "workspace.yaml")]}
    if daemon:
        commands["daemon"] = [str(BIN / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")]
    logs = {name: open(cwd / f"{name}.log", "wb") for name in commands}
    processes = {name: subprocess.Popen(command, cwd=cwd, env=env, stdout=logs[name], stderr=subprocess.STDOUT,
                                        start_new_session=True) for name, command in commands.items()}
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/server_info", timeout=2):
                    break
            except OSError:
                if processes["webserver"].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the webserver did not start: "
                                       + (cwd / "webserver.log").read_text()[-3000:]) from None
                time.sleep(0.5)
        yield DagsterServer(url=url, home=Path(env["DAGSTER_HOME"]))
    finally:
        for process in processes.values():
            _stop(process)
        for log in logs.values():
            log.close()


def _create_storage(env: dict[str, str], cwd: Path) -> None:
    """Create the instance's storage before two processes open it at once: on a fresh SQLite instance the
    webserver and the daemon would each create the schedule database and its migration table, which can end
    up with two alembic heads ("Version table 'alembic_version' has more than one head present")."""
    done = subprocess.run([str(BIN / "dagster"), "instance", "migrate"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"could not create the Dagster instance's storage: {done.stderr[-2000:]}")


def _stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

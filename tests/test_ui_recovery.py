"""Restores as a user clicks them in the Dagster UI: Chromium against the real webserver and daemon on the
instance `make up` runs, with the embedded stack. Every outcome is checked in the source database itself."""

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.dagster_server import DagsterServer, dagster_server, embedded_env, local_home
from platform_assets.layers.tables import SOURCE_TABLES
from platform_assets.ops.runner import last_days
from resources import SourceDatabase
from tests.conftest import Browser, rows_as_stored

DAY = last_days(1)[0]
TABLES = list(SOURCE_TABLES)


@dataclass
class Platform:
    server: DagsterServer
    db: SourceDatabase
    work: Path

    def materialize(self, assets: list[list[str]], checks=(), partition: str | None = None) -> None:
        tags = {"dagster/partition": partition} if partition else {}
        run = self.server.wait_for_run(self.server.launch("__ASSET_JOB", assets, checks, tags))
        assert run["status"] == "SUCCESS", run

    def checkpoint(self, table: str) -> str:
        self.materialize([["checkpoints", table]], [(["checkpoints", table], "checkpoint_verified")])
        return self.server.latest_materialization(["checkpoints", table])["metadata"]["checkpoint_id"]

    def write_sales(self, count: int) -> None:
        """The application writes `count` more sales (copies of existing ones, with new ids)."""
        with sqlite3.connect(self.work / "source.db") as conn:
            conn.execute(f"INSERT INTO sales SELECT * FROM sales LIMIT {count}")
            conn.execute("UPDATE sales SET id = -rowid WHERE rowid > (SELECT max(rowid) FROM sales) - ?", [count])

    def all_tables(self) -> dict[str, list]:
        return {t: rows_as_stored(self.db, t) for t in sorted(self.db.tables())}


@pytest.fixture(scope="module")
def platform(tmp_path_factory, chromium) -> Platform:
    work = tmp_path_factory.mktemp("ui-recovery")
    local_home(work)
    env = embedded_env(work, 500)
    with dagster_server(env, work) as server:
        world = Platform(server, SourceDatabase(url=env["AEGIS_SOURCE_URL"]), work)
        world.materialize([["source", t] for t in TABLES], partition=DAY)
        world.materialize([["checkpoints", t] for t in TABLES], [(["checkpoints", t], "checkpoint_verified")
                                                                 for t in TABLES])  # one run, as the schedule does
        yield world


@pytest.fixture(scope="module")
def ui(platform: Platform, chromium) -> Browser:
    page = chromium.new_page(viewport={"width": 1500, "height": 1000})
    yield Browser(page, platform.server.url)
    page.close()


def click_materialize(ui: Browser, platform: Platform, path: str, label: str = "Materialize", **click) -> str:
    page = ui.open(path)
    before = platform.server.latest_run_id()
    page.locator("button", has_text=label).first.click(timeout=30_000, **click)
    return before


def test_materialize_all_from_the_lineage_builds_the_day_and_restores_nothing_healthy(platform, ui):
    """The README's quick start: Lineage → Materialize all → the latest day → one run of every asset."""
    before = platform.all_tables()
    started = click_materialize(ui, platform, "/asset-groups", label="Materialize all")
    page = ui.page
    page.get_by_role("button", name="Latest", exact=True).click()
    page.get_by_role("button", name="Launch 1 run").click()
    run_id = platform.server.new_run_id(started)
    run = platform.server.wait_for_run(run_id, timeout=600)
    assert run["status"] == "SUCCESS", "restores swept up with the layers are skipped, never fail the day"
    assert platform.all_tables() == before, "the same day written again, no table restored or set aside"
    assert platform.server.latest_materialization(["recovery", "sales"]) is None
    assert platform.server.latest_materialization(["serving", "fact_sales"])["run_id"] == run_id
    page = ui.open(f"/runs/{run_id}")
    page.get_by_placeholder("Filter…").fill("skipped recovery/sales")
    page.get_by_text("Refused to restore sales").first.wait_for(timeout=60_000)
    ui.screenshot("ui-materialize-all-skips-restores")


def test_materialize_on_a_recovery_asset_refuses_to_discard_rows_written_after_the_checkpoint(platform, ui):
    platform.write_sales(3)
    before = platform.all_tables()

    started = click_materialize(ui, platform, "/assets/recovery/sales")
    run_id = platform.server.new_run_id(started)
    assert platform.server.wait_for_run(run_id)["status"] == "FAILURE", "the run refuses"
    assert platform.all_tables() == before, "every row is still there and nothing was set aside"

    page = ui.open(f"/runs/{run_id}")
    for text in ("Refused to restore sales", "discard 3 row(s) the checkpoint does not hold",
                 "target_table: sales_restored", "replace_live_table: true"):
        page.get_by_text(text).first.wait_for(timeout=60_000)
    ui.screenshot("ui-restore-refused")


def test_replace_live_table_restores_and_keeps_the_replaced_table_listed_in_the_recovery_log(platform, ui):
    live = rows_as_stored(platform.db, "sales")
    started = click_materialize(ui, platform, "/assets/recovery/sales", modifiers=["Shift"])  # the launchpad
    page = ui.page
    page.locator(".CodeMirror").first.click()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text("ops:\n  recovery__sales:\n    config:\n      replace_live_table: true\n")
    page.locator("button", has_text="Materialize").last.click()
    run_id = platform.server.new_run_id(started)
    assert platform.server.wait_for_run(run_id)["status"] == "SUCCESS"

    (aside,) = [t for t in platform.db.tables() if t.startswith("sales__replaced_")]
    assert rows_as_stored(platform.db, aside) == live, "the replaced table is still in the database, whole"
    assert len(rows_as_stored(platform.db, "sales")) == len(live) - 3, "the checkpoint is back in place"
    page = ui.open("/assets/recovery_log")
    page.get_by_text(aside).first.wait_for(timeout=60_000)
    ui.screenshot("ui-recovery-log")


def test_materialize_all_on_the_recovery_group_restores_nothing_healthy(platform, ui):
    before = platform.all_tables()
    started = click_materialize(ui, platform, "/locations/aegis/asset-groups/recovery", label="Materialize all")
    run_id = platform.server.new_run_id(started)
    assert platform.server.wait_for_run(run_id)["status"] == "FAILURE"
    assert platform.all_tables() == before, "no healthy table was restored, none was set aside"
    page = ui.open(f"/runs/{run_id}")
    page.get_by_text("Refused to restore customers").first.wait_for(timeout=60_000)


def test_the_checkpoints_of_a_table_are_listed_and_an_older_one_restored_beside_it_without_typing_its_id(
        platform, ui):
    older = platform.server.latest_materialization(["checkpoints", "sales"])["metadata"]["checkpoint_id"]
    at_older = rows_as_stored(platform.db, "sales")
    platform.write_sales(5)
    newer = platform.checkpoint("sales")
    live = rows_as_stored(platform.db, "sales")

    page = ui.open("/assets/checkpoints/sales")
    for checkpoint_id in (older, newer):  # the kept checkpoints, with rows, bytes, verification and retention
        page.get_by_text(checkpoint_id).first.wait_for(timeout=60_000)
    ui.screenshot("ui-checkpoints-listed")

    started = platform.server.latest_run_id()
    page = ui.open("/locations/aegis/jobs/restore_sales/playground")
    picker = page.get_by_placeholder("Partition")
    picker.click()
    picker.press_sequentially(older[:-4])  # narrows the (virtualised) list to the older checkpoint
    page.get_by_role("menuitem", name=older).click()  # picked from the list: the id is completed by the pick
    chosen = page.locator(".CodeMirror-line", has_text=f"checkpoint_id: '{older}'")  # filled in from the pick
    chosen.click()
    page.keyboard.press("End")
    page.keyboard.press("Enter")  # CodeMirror keeps the indentation
    page.keyboard.insert_text("target_table: sales_before")
    ui.screenshot("ui-restore-older-checkpoint")
    page.locator("button", has_text="Launch Run").click()
    run_id = platform.server.new_run_id(started)
    assert platform.server.wait_for_run(run_id)["status"] == "SUCCESS"

    assert rows_as_stored(platform.db, "sales_before") == at_older, "the older checkpoint, restored beside"
    assert rows_as_stored(platform.db, "sales") == live, "the live table untouched"
    latest = platform.server.latest_materialization(["recovery", "sales"])
    assert latest["run_id"] == run_id and latest["metadata"]["checkpoint_id"] == older


def test_a_dry_run_leaves_the_latest_materialisation_unchanged(platform):
    latest = platform.server.latest_materialization(["recovery", "sales"])
    before = platform.all_tables()
    run_id = platform.server.launch("__ASSET_JOB", [["recovery", "sales"]],
                                    run_config={"ops": {"recovery__sales": {"config": {"dry_run": True}}}})
    assert platform.server.wait_for_run(run_id)["status"] == "SUCCESS"
    assert platform.server.latest_materialization(["recovery", "sales"]) == latest
    assert platform.all_tables() == before

"""The code location loads in Dagster as a user would load it, with every layer and schedule."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from platform_assets.definitions import defs
from platform_assets.layers.partitions import daily
from platform_assets.layers.tables import SOURCE_TABLES

ROOT = Path(__file__).resolve().parent.parent


def test_dagster_definitions_validate_passes_on_the_workspace():
    dagster = Path(sys.executable).parent / "dagster"
    result = subprocess.run([str(dagster), "definitions", "validate", "-w", "workspace.yaml"], cwd=ROOT,
                            capture_output=True, text=True, timeout=180, env={**os.environ, "NO_COLOR": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Validation successful for code location aegis" in result.stdout + result.stderr


def test_every_layer_is_an_asset_group_and_every_asset_is_daily_partitioned():
    graph = defs.resolve_asset_graph()
    groups: dict[str, list] = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        groups.setdefault(node.group_name, []).append(key)
        if node.group_name in ("checkpoints", "recovery", "lake_maintenance", "quality", "security", "capture"):
            assert node.partitions_def is None, key
        else:
            assert node.partitions_def == daily, key
        assert node.description, f"{key.to_user_string()} needs a description for the UI"
    assert set(groups) == {"source", "bronze", "silver", "gold", "serving", "reports", "checkpoints", "recovery",
                           "lake_maintenance", "quality", "security", "capture"}
    assert groups["capture"] == [dg.AssetKey(["changes", "log"])]
    assert groups["quality"] == [dg.AssetKey("quality_gate_log")]
    assert set(groups["security"]) == {dg.AssetKey(["security", "warehouse_access"]),
                                       dg.AssetKey(["security", "posture"]), dg.AssetKey(["security", "erasure_log"])}
    assert set(groups["lake_maintenance"]) == {dg.AssetKey(["lake", "compaction"]), dg.AssetKey(["lake", "vacuum"])}
    for layer in ("checkpoints", "recovery"):
        assert sorted(k.path[1] for k in groups[layer] if len(k.path) == 2) == sorted(SOURCE_TABLES)
    assert dg.AssetKey(["silver", "sales_quarantine"]) in groups["silver"]
    assert dg.AssetKey("recovery_log") in groups["recovery"]


def test_every_asset_depends_on_the_layer_before_it():
    graph = defs.resolve_asset_graph()
    previous = {"bronze": "source", "silver": "bronze", "gold": "silver", "serving": "gold", "reports": "serving",
                "checkpoints": "source", "recovery": "checkpoints"}
    outside = {dg.AssetKey(["bronze", "macro_indicators"]): set(),  # its source is the central bank's API
               dg.AssetKey(["gold", "sales_vs_inflation"]): {"gold", "silver"}}  # daily sales + the macro series
    for key in graph.get_all_asset_keys():
        layer = key.path[0]
        if layer in previous:
            parents = {p.path[0] for p in graph.get(key).parent_keys}
            assert parents == outside.get(key, {previous[layer]}), key


def test_only_true_clocks_are_schedules_and_the_daily_layers_run_by_automation():
    schedules = {s.name: defs.resolve_schedule_def(s.name) for s in defs.schedules}
    expected = {"checkpoints_hourly": ("checkpoint_job", "0 * * * *"),
                "quality_checks_2330": ("quality_checks_job", "30 23 * * *"),
                "lake_maintenance_0300": ("lake_maintenance_job", "0 3 * * *")}
    assert set(schedules) == set(expected)
    for name, (job, cron) in expected.items():
        assert schedules[name].job_name == job
        assert schedules[name].cron_schedule == cron
        assert schedules[name].default_status == dg.DefaultScheduleStatus.RUNNING
    sensor = defs.resolve_sensor_def("daily_layers_automation")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if node.group_name in ("source", "bronze"):
            assert "0 8,20 * * *" in str(node.automation_condition), key
        elif node.group_name in ("silver", "gold", "serving", "reports"):
            label = str(node.automation_condition.get_snapshot())
            assert "all_deps_blocking_checks_passed" in label.lower() or "blocking" in label.lower(), key


def test_jobs_select_their_layers():
    graph = defs.resolve_asset_graph()
    layers = {"ingest_job": {"source", "bronze"}, "transform_job": {"silver", "gold"},
              "publish_job": {"serving", "reports"}}
    for name, expected in layers.items():
        job = defs.resolve_job_def(name)
        keys = job.asset_layer.selected_asset_keys
        assert {k.path[0] for k in keys} == expected
        assert len(keys) == sum(1 for k in graph.get_all_asset_keys() if k.path[0] in expected)
        assert job.partitions_def == daily


def test_every_checkpoint_has_a_blocking_verification_check():
    graph = defs.resolve_asset_graph()
    specs = [graph.get_check_spec(key) for key in graph.asset_check_keys]
    checks = {(c.asset_key.path[1], c.name, c.blocking) for c in specs if c.asset_key.path[0] == "checkpoints"}
    assert checks == {(t, "checkpoint_verified", True) for t in SOURCE_TABLES}


def test_every_daily_asset_but_source_and_reports_is_guarded_by_blocking_checks_per_partition():
    graph = defs.resolve_asset_graph()
    by_asset: dict = {}
    for key in graph.asset_check_keys:
        spec = graph.get_check_spec(key)
        by_asset.setdefault(spec.asset_key, set()).add((spec.name, spec.blocking, spec.partitions_def == daily))
    expected = {"bronze": {"schema_contract", "matches_source"}, "silver": {"expectations", "rows_reconcile"},
                "gold": {"expectations", "totals_match_silver"}, "serving": {"matches_gold"}}
    macro = {dg.AssetKey(["bronze", "macro_indicators"]): {("every_series_answered", True, True),
                                                           ("macro_data_is_fresh", False, True)},  # WARN only
             dg.AssetKey(["gold", "sales_vs_inflation"]): {("expectations", True, True),
                                                           ("matches_daily_sales", True, True)}}
    for key in graph.get_all_asset_keys():
        layer = key.path[0]
        if layer in expected and not key.path[-1].endswith("_quarantine"):
            assert by_asset[key] == macro.get(key, {(name, True, True) for name in expected[layer]}), key


def test_gold_and_serving_have_freshness_policies_matching_their_daily_schedules():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        policy = graph.get(key).freshness_policy
        if key.path[0] in ("gold", "serving"):
            assert policy is not None and policy.fail_window.to_timedelta().total_seconds() == 27 * 3600, key


def test_the_alert_sensor_starts_running():
    assert defs.resolve_sensor_def("quality_alerts").default_status == dg.DefaultSensorStatus.RUNNING


def test_the_source_watch_sensor_starts_running_and_targets_the_recovery_job():
    sensor = defs.resolve_sensor_def("source_table_watch")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.job_name == "recovery_job"
    assert sensor.minimum_interval_seconds <= 5


def test_graph_labels_are_unambiguous_within_each_group_and_descriptions_say_the_role_in_plain_text():
    """The lineage graph labels a node with the last part of its key and the first line of its description;
    several UI lists print descriptions as they are, so they hold no markdown backticks."""
    graph = defs.resolve_asset_graph()
    labels: dict = {}
    roles = {"source": "Source:", "bronze": "Bronze:", "gold": "Gold:", "serving": "Serving:", "reports": "Report:",
             "checkpoints": "Checkpoint:", "recovery": "Restore:", "lake": "Lake maintenance:"}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        labels.setdefault(node.group_name, []).append(key.path[-1])
        assert "`" not in node.description, key
        if key.path[0] in roles:
            assert node.description.startswith(roles[key.path[0]]), key
        elif key.path[0] == "silver":
            assert node.description.startswith("Quarantine:" if key.path[-1].endswith("_quarantine") else "Silver:")
    for group, names in labels.items():
        assert len(names) == len(set(names)), f"two nodes of {group} would show the same label"
    for key in graph.asset_check_keys:
        assert "`" not in (graph.get_check_spec(key).description or ""), key
    for job in defs.jobs:
        assert "`" not in (job.description or ""), job.name


def test_every_run_executes_in_process_and_each_table_has_a_restore_job_over_its_checkpoints():
    assert defs.executor == dg.in_process_executor, "a process per step made a day from the UI take minutes"
    for table in SOURCE_TABLES:
        job = defs.resolve_job_def(f"restore_{table}")
        assert job.partitions_def == dg.DynamicPartitionsDefinition(name=f"checkpoints_{table}")
        assert job.asset_layer.selected_asset_keys == {dg.AssetKey(["recovery", table])}


def test_the_2330_recheck_requests_every_daily_check_and_no_asset_for_the_latest_day():
    import datetime as dt

    schedule = defs.resolve_schedule_def("quality_checks_2330")
    context = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2026, 3, 2, 23, 30, tzinfo=dt.UTC),
                                        repository_def=defs.get_repository_def())
    (request,) = schedule.evaluate_tick(context).run_requests
    graph = defs.resolve_asset_graph()
    daily_checks = {k for k in graph.asset_check_keys if graph.get(k.asset_key).group_name in
                    ("bronze", "silver", "gold", "serving")}
    assert request.partition_key == "2026-03-01" and request.asset_selection == []
    assert set(request.asset_check_keys) == daily_checks and len(daily_checks) == 44

"""Quality gates hold across runs: each layer in its own run (as schedules, automation, backfills and clicks
in the UI launch them), a day whose upstream failed a blocking check is not built from it in any later run,
the block lifts once the upstream is fixed and re-run, and a deliberate override is audited."""

import dagster as dg
import pytest

from platform_assets.definitions import asset_checks, assets
from platform_assets.ops.runner import embedded_resources
from platform_assets.quality.gates import GATE_LOG, OVERRIDE_TAG
from sensors.jobs import quality_checks_job
from tests.test_quality import DAY, ROW_DEFECTS, ROWS, SCHEMA_BREAKS

LAYERS = ("bronze", "silver", "gold", "serving", "reports")


class Platform:
    """One day of the platform, every layer launched as its own run."""

    def __init__(self, tmp_path, instance: dg.DagsterInstance):
        self.resources = embedded_resources(tmp_path, ROWS, pii_key="test-key")
        self.instance = instance
        self.run("source")

    def run(self, group: str, tags: dict | None = None) -> dg.ExecuteInProcessResult:
        return dg.materialize([*assets, *asset_checks], resources=self.resources, instance=self.instance,
                              partition_key=DAY, selection=dg.AssetSelection.groups(group), tags=tags,
                              raise_on_error=False)

    def recheck(self) -> dg.ExecuteInProcessResult:
        """What quality_checks_2330 runs: every check of the daily layers, no asset."""
        job = dg.Definitions(assets=assets, asset_checks=asset_checks, jobs=[quality_checks_job],
                             resources=self.resources).resolve_job_def("quality_checks_job")
        checks = set(job.asset_layer.asset_graph.asset_check_keys)
        return job.get_subset(asset_selection=set(), asset_check_selection=checks).execute_in_process(
            instance=self.instance, partition_key=DAY, raise_on_error=False)

    def break_source(self, statements: list[str]) -> None:
        with self.resources["source_db"].connect() as conn, conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
            conn.commit()

    def layers(self, first: str = "bronze", tags: dict | None = None) -> dict[str, dg.ExecuteInProcessResult]:
        return {layer: self.run(layer, tags) for layer in LAYERS[LAYERS.index(first):]}


def built(results: dict[str, dg.ExecuteInProcessResult]) -> set[str]:
    return {e.asset_key.to_user_string() for r in results.values() for e in r.get_asset_materialization_events()}


def failed_checks(results: dict[str, dg.ExecuteInProcessResult]) -> set[tuple[str, str]]:
    return {(e.asset_key.to_user_string(), e.check_name) for r in results.values()
            for e in r.get_asset_check_evaluations() if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR}


def downstream(asset: str) -> set[str]:
    graph = [a for a in assets if isinstance(a, dg.AssetsDefinition)]
    key = dg.AssetKey(asset.split("/"))
    return {k.to_user_string() for k in dg.AssetSelection.assets(key).downstream(include_self=False).resolve(graph)}


def refusals(results: dict[str, dg.ExecuteInProcessResult]) -> str:
    return "\n".join(str(e.event_specific_data.error.message) for r in results.values()
                     for e in r.all_events if e.is_step_failure)


DEFECTS = {name: (statements, (f"silver/{table}", "expectations")) for name, (statements, table, *_)
           in ROW_DEFECTS.items()}
DEFECTS.update({name: (statements, ("bronze/sales", "schema_contract"))
                for name, (statements, _) in SCHEMA_BREAKS.items()})


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_nothing_downstream_of_a_failed_check_is_built_in_any_later_run(defect, tmp_path):
    statements, (asset, check) = DEFECTS[defect]
    with dg.DagsterInstance.ephemeral() as instance:
        platform = Platform(tmp_path, instance)
        platform.break_source(statements)
        results = platform.layers()
        assert (asset, check) in failed_checks(results)
        later = {layer: r for layer, r in results.items() if LAYERS.index(layer) > LAYERS.index(asset.split("/")[0])}
        leaked = downstream(asset) & built(later)
        assert not leaked, f"built in later runs from data that failed {asset}:{check}: {leaked}"
        assert f"{asset}:{check} failed for {DAY}" in refusals(later), "the refusal names the gate"
        assert "re-materialise the upstream asset" in refusals(later) and OVERRIDE_TAG in refusals(later)
        others = {"gold/video_views_by_network_daily", "serving/video_views_by_network_daily"} - downstream(asset)
        assert others <= built(results), "days of other tables go on"


def test_the_block_lifts_once_the_upstream_is_fixed_and_re_run(tmp_path):
    statements, (asset, check) = DEFECTS["negative prices"]
    with dg.DagsterInstance.ephemeral() as instance:
        platform = Platform(tmp_path, instance)
        platform.break_source(statements)
        platform.layers()
        assert "gold/fact_sales" not in built({"gold": platform.run("gold")}), "still blocked in a later run"

        platform.run("source")  # the source system re-delivers the day, clean
        results = platform.layers()
        assert downstream(asset) <= built(results), "the whole way down, once the check passes again"
        assert not failed_checks(results)


def test_a_tampered_gold_day_blocks_serving_until_gold_is_rebuilt(tmp_path):
    with dg.DagsterInstance.ephemeral() as instance:
        platform = Platform(tmp_path, instance)
        platform.layers()
        lake = platform.resources["lake"]
        gold = lake.read_partition("gold", "server_latency_daily", DAY)
        tampered = gold.set_column(gold.schema.get_field_index("requests"), "requests",
                                   dg_int_column(gold["requests"].to_pylist(), -1))
        lake.write_partition("gold", "server_latency_daily", DAY, tampered, tampered.schema)
        checks = platform.recheck()  # the 23:30 re-check: only the checks
        assert ("gold/server_latency_daily", "totals_match_silver") in failed_checks({"checks": checks})
        results = platform.layers("serving")
        assert not {"serving/server_latency_daily", "reports/infra_audit"} & built(results)
        platform.run("gold")
        assert {"serving/server_latency_daily", "reports/infra_audit"} <= built(platform.layers("serving"))


def dg_int_column(values: list[int], delta: int):
    import pyarrow as pa

    return pa.array([v + delta for v in values], pa.int64())


def test_an_operator_override_builds_anyway_and_is_audited(tmp_path):
    statements, (asset, check) = DEFECTS["negative prices"]
    with dg.DagsterInstance.ephemeral() as instance:
        platform = Platform(tmp_path, instance)
        platform.break_source(statements)
        platform.layers(tags=None)
        result = platform.run("gold", tags={OVERRIDE_TAG: f"{asset}:{check}"})
        assert {"gold/fact_sales", "gold/sales_by_category_daily"} <= built({"gold": result})
        audits = [e.materialization.metadata for e in result.get_asset_materialization_events()
                  if e.asset_key == GATE_LOG]
        assert {a["built_anyway"].value for a in audits} == {"gold/fact_sales", "gold/sales_by_category_daily",
                                                             "gold/dim_product", "gold/sales_vs_inflation"}, \
            "one audit record per asset built"
        for audit in audits:
            assert audit["overridden_gate"].value == f"{asset}:{check}" and audit["partition"].value == DAY
            assert "unit_price" in audit["failed_because"].value and audit["override_run"].value == result.run_id
        assert len(instance.fetch_materializations(GATE_LOG, limit=10).records) == 4, "kept on the instance"

"""Great Expectations, run in code: expectations declared as data (`Expect`), suites validated on Arrow tables,
a plain-dict view of their results and the asset check result that shows them. The suites of each layer are
declared with its contracts (platform_assets/layers/checks.py, gold.py).

Great Expectations is imported once per process, lazily (it takes seconds), with its progress bars off.
Frames are handed to it with Arrow-backed strings: null checks, regexes and uniqueness run in Arrow
instead of over Python objects, and the type rule is a dtype check instead of an `isinstance` per value
(together ~3x faster on a million rows).
Silver suites tolerate a small share of bad rows (`TOLERANCE`: they are quarantined and the partition goes
on); gold suites are strict.
"""

import functools
import os
from dataclasses import dataclass, field

import dagster as dg
import pandas as pd
import pyarrow as pa

from platform_assets.quality.rules import ERROR, WARN, Expect

TOLERANCE = 0.02  # share of rows that may break one expectation of a silver suite before it fails
UNEXPECTED_EXAMPLES = 5


@dataclass
class SuiteOutcome:
    expectations: list[dict] = field(default_factory=list)

    @property
    def failed(self) -> list[dict]:
        return [e for e in self.expectations if not e["success"]]

    @property
    def severity(self) -> str | None:
        """None when everything passed, else the worst severity among the failures."""
        failed = {e["severity"] for e in self.failed}
        return ERROR if ERROR in failed else (WARN if failed else None)

    def describe(self) -> str:
        if not self.failed:
            return f"all {len(self.expectations)} expectations met"
        return "; ".join(f"{e['expectation']}: {e['unexpected_count']} unexpected ({e['unexpected_percent']}%)"
                         f"{' e.g. ' + repr(e['examples'][:3]) if e['examples'] else ''}" for e in self.failed)


@functools.cache
def _great_expectations():
    """(gx module, a batch definition over any pandas DataFrame), built once per process."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # GX fingerprints every in-memory frame under 1 GB (md5 over `hash_pandas_object`, twice per validation)
    # for a batch marker nothing here reads; on a million rows that alone took ~1 s per validation.
    from great_expectations.execution_engine import pandas_execution_engine

    pandas_execution_engine.HASH_THRESHOLD = 0
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    asset = context.data_sources.add_pandas("aegis").add_dataframe_asset("partition")
    return gx, asset.add_batch_definition_whole_dataframe("whole")


def validate(frame: pd.DataFrame, expectations: list[Expect], name: str) -> SuiteOutcome:
    gx, batch_definition = _great_expectations()
    suite = gx.ExpectationSuite(name=name)
    for e in expectations:
        suite.add_expectation(getattr(gx.expectations, e.kind)(**e.kwargs))
    # GX turns the type name "StringDtype" into a dtype with the default storage: make that Arrow, as `to_frame` is
    with pd.option_context("mode.string_storage", "pyarrow"):
        result = batch_definition.get_batch(batch_parameters={"dataframe": frame}).validate(suite)
    by_config = {(e.kind, repr(sorted(e.kwargs.items()))): e for e in expectations}
    outcome = SuiteOutcome()
    for r in result.results:
        config = r.expectation_config
        kind = type(config.to_domain_obj()).__name__
        kwargs = {k: v for k, v in config.kwargs.items() if k != "batch_id"}
        spec = by_config.get((kind, repr(sorted(kwargs.items()))), Expect(kind, kwargs))
        details = r.result or {}
        outcome.expectations.append({
            "expectation": spec.label,
            "severity": spec.severity,
            "success": bool(r.success),
            "unexpected_count": details.get("unexpected_count"),
            "unexpected_percent": None if details.get("unexpected_percent") is None
            else round(float(details["unexpected_percent"]), 3),
            "examples": [_plain(v) for v in (details.get("partial_unexpected_list") or [])[:UNEXPECTED_EXAMPLES]],
            "observed": _plain(details.get("observed_value")),
        })
    return outcome


def _plain(value):
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return None if value != value else value  # NaN → None
    return str(value)


_ARROW_STRINGS = {pa.string(): pd.StringDtype("pyarrow"), pa.large_string(): pd.StringDtype("pyarrow")}


def to_frame(table: pa.Table) -> pd.DataFrame:
    """The frame a suite runs on: strings stay in Arrow memory (see the module docstring)."""
    return table.to_pandas(types_mapper=_ARROW_STRINGS.get)


# ---------------------------------------------------------------- suites


def expect_between(column: str, low=None, high=None, mostly: float = 1.0, severity: str = ERROR) -> Expect:
    kwargs = {"column": column, "mostly": mostly}
    if low is not None:
        kwargs["min_value"] = low
    if high is not None:
        kwargs["max_value"] = high
    return Expect("ExpectColumnValuesToBeBetween", kwargs, severity)


def expect_in_set(column: str, values, mostly: float = 1.0, severity: str = ERROR) -> Expect:
    return Expect("ExpectColumnValuesToBeInSet", {"column": column, "value_set": sorted(values), "mostly": mostly},
                  severity)


def expect_not_null(column: str, mostly: float = 1.0) -> Expect:
    return Expect("ExpectColumnValuesToNotBeNull", {"column": column, "mostly": mostly})


def expect_unique(columns: tuple[str, ...], mostly: float = 1.0) -> Expect:
    if len(columns) == 1:
        return Expect("ExpectColumnValuesToBeUnique", {"column": columns[0], "mostly": mostly})
    return Expect("ExpectCompoundColumnsToBeUnique", {"column_list": list(columns), "mostly": mostly})


def expect_ordered(low: str, high: str) -> Expect:
    return Expect("ExpectColumnPairValuesAToBeGreaterThanB",
                  {"column_A": high, "column_B": low, "or_equal": True})


ROWS_PRESENT = Expect("ExpectTableRowCountToBeBetween", {"min_value": 1})


def gold_suite(suite: tuple[Expect, ...]) -> list[Expect]:
    """A gold table's suite (declared with the table in gold.py), strict, on a partition that has rows."""
    return [ROWS_PRESENT, *suite]


def expectation_table(outcome: SuiteOutcome) -> dg.TableMetadataValue:
    """One row per expectation with a plain verdict: a tolerated share of bad rows is 'passed, N tolerated'."""
    records = []
    for e in outcome.expectations:
        unexpected = e["unexpected_count"] or 0
        if not e["success"]:
            verdict = f"FAILED ({e['severity']})"
        elif unexpected:
            verdict = f"passed: {unexpected:,} bad rows ({e['unexpected_percent']}%) within tolerance, quarantined"
        else:
            verdict = "passed"
        records.append(dg.TableRecord({
            "expectation": e["expectation"], "verdict": verdict, "severity": e["severity"],
            "unexpected": e["unexpected_count"], "unexpected %": e["unexpected_percent"],
            "examples": ", ".join(map(str, e["examples"][:3]))[:80]}))
    return dg.MetadataValue.table(records, schema=dg.TableSchema(columns=[
        dg.TableColumn("expectation", "string"), dg.TableColumn("verdict", "string"),
        dg.TableColumn("severity", "string"), dg.TableColumn("unexpected", "int"),
        dg.TableColumn("unexpected %", "float"), dg.TableColumn("examples", "string")]))


def suite_result(sections: dict[str, SuiteOutcome], **extra) -> dg.AssetCheckResult:
    """A check result for one or more suites, each its own table in the metadata (named by `sections`)."""
    outcome = SuiteOutcome([e for s in sections.values() for e in s.expectations])
    severity = outcome.severity
    return dg.AssetCheckResult(
        passed=severity is None,
        severity=dg.AssetCheckSeverity.WARN if severity == WARN else dg.AssetCheckSeverity.ERROR,
        description=outcome.describe(),
        metadata={"summary": outcome.describe(), "failed": len(outcome.failed),
                  **{name: expectation_table(section) for name, section in sections.items()},
                  "results": dg.MetadataValue.json(outcome.expectations), **extra},
    )

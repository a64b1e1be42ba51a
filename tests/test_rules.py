"""A rule is declared once, in a table's contract: adding one line changes the quarantine, the Great
Expectations suite and the documentation the UI shows, with no second edit."""

import dataclasses
import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc

from platform_assets.layers.bronze import lineage_schema, with_lineage
from platform_assets.layers.checks import silver_input_frame, silver_input_suite
from platform_assets.layers.cleansing import cleanse, typed
from platform_assets.layers.generators import generate
from platform_assets.layers.silver import _silver_assets
from platform_assets.layers.tables import SOURCE_TABLES
from platform_assets.quality import expectations as ex
from platform_assets.quality.rules import between

DAY = "2026-03-01"


def bronze_day(name: str, rows: int) -> pa.Table:
    source = generate(name, DAY, rows)
    schema = lineage_schema(source.schema)
    return pa.Table.from_batches(list(with_lineage(pa.RecordBatchReader.from_batches(
        source.schema, source.to_batches()), schema, "run-1", dt.datetime.now(dt.UTC), [])), schema)


def test_one_new_line_in_a_contract_quarantines_judges_and_documents_it():
    sales = SOURCE_TABLES["sales"]
    contract = dataclasses.replace(sales, rules=(*sales.rules, between("quantity", None, 3, reason="bulk order")))
    bronze = bronze_day("sales", 2000)
    bulky = pc.sum(pc.greater(typed(sales, bronze)["quantity"], 3)).as_py()
    assert bulky > 0.02 * bronze.num_rows, "the data breaks the new rule often enough to fail the suite"

    before, after = cleanse(sales, bronze).reasons(), cleanse(contract, bronze).reasons()
    assert "bulk order" not in before and after["bulk order"] > 0, "the quarantine follows the contract"

    def quantity_verdicts(table_contract) -> list[bool]:
        outcome = ex.validate(silver_input_frame(table_contract, typed(table_contract, bronze)),
                              silver_input_suite(table_contract), table_contract.name)
        return [e["success"] for e in outcome.expectations
                if e["expectation"] == "ExpectColumnValuesToBeBetween(quantity)"]

    assert quantity_verdicts(sales) == [True]
    assert quantity_verdicts(contract) == [True, False], "the suite judges the new rule too"

    spec = next(s for s in _silver_assets(contract).specs if s.key.path == ["silver", "sales"])
    assert "| bulk order | quantity > 3 | quarantined | ExpectColumnValuesToBeBetween(quantity) |" in spec.description

"""The pure functions behind the assets, on small tables built by hand or by the generators."""

import datetime as dt
import hashlib
import hmac

import numpy as np
import pyarrow as pa
import pytest

from platform_assets.layers import aggregations as agg
from platform_assets.layers.audit import audit_markdown, bottlenecks
from platform_assets.layers.cleansing import cleanse
from platform_assets.layers.generators import customers_per_day, generate
from platform_assets.layers.tables import INFRA_LOGS, SALES, SOURCE_TABLES
from resources import PiiMasker
from resources.identifiers import check_identifier, day_range_sql
from resources.prefetch import prefetched
from resources.urls import parse_url, redact

DAY = "2026-05-04"
NOW = dt.datetime(2026, 5, 5, tzinfo=dt.UTC)


@pytest.mark.parametrize("table", list(SOURCE_TABLES))
def test_generators_are_deterministic_per_day_and_match_the_contract(table):
    a, b = generate(table, DAY, 2000), generate(table, DAY, 2000)
    assert a.equals(b)
    assert not a.equals(generate(table, "2026-05-05", 2000))
    assert a.schema == SOURCE_TABLES[table].schema
    base = customers_per_day(2000) if table == "customers" else 2000
    assert a.num_rows == base + max(int(base * 0.02) // 4, 1)


@pytest.mark.parametrize("table", list(SOURCE_TABLES))
def test_clean_generated_data_passes_silver_untouched(table):
    bronze = _with_lineage(generate(table, DAY, 3000, dirty_share=0.0))
    result = cleanse(SOURCE_TABLES[table], bronze)
    assert result.quarantine.num_rows == 0 and result.duplicates == 0
    assert result.clean.num_rows == bronze.num_rows


@pytest.mark.parametrize("table", list(SOURCE_TABLES))
def test_dirty_generated_data_is_split_without_losing_a_row(table):
    bronze = _with_lineage(generate(table, DAY, 5000, dirty_share=0.1))
    result = cleanse(SOURCE_TABLES[table], bronze)
    assert result.quarantine.num_rows > 0 and result.duplicates > 0
    assert bronze.num_rows == result.clean.num_rows + result.duplicates + result.quarantine.num_rows


def test_generated_cpfs_have_valid_check_digits():
    for cpf in generate("customers", DAY, 400, dirty_share=0.0)["cpf"].to_pylist():
        digits = [int(c) for c in cpf if c.isdigit()]
        for n in (9, 10):
            total = sum(d * w for d, w in zip(digits[:n], range(n + 1, 1, -1), strict=True))
            assert digits[n] == total * 10 % 11 % 10, cpf


def _with_lineage(table: pa.Table) -> pa.Table:
    n = table.num_rows
    return table.append_column("_ingested_at", pa.array([NOW] * n, pa.timestamp("us", tz="UTC"))) \
                .append_column("_batch_id", pa.array(["run-1"] * n))


def test_silver_types_sqlite_text_and_names_the_reason_for_each_rejected_row():
    # what bronze looks like when the source is SQLite: timestamps arrive as ISO text
    bronze = _with_lineage(pa.table({
        "id": [1, 2, 2, 3, 4, 5, None],
        "sale_ts": ["2026-05-04T10:00:00.000000"] * 5 + ["not a time", "2026-05-04T11:00:00"],
        "customer_id": [10, 11, 11, 12, 13, 14, 15],
        "category": ["books"] * 7, "product": ["novel"] * 7,
        "quantity": [1, 2, 2, 0, 1, 1, 1],
        "unit_price": [10.0, 5.0, 5.0, 3.0, -1.0, 2.0, 2.0],
        "total": [10.0, 10.0, 10.0, 0.0, -1.0, 2.0, 2.0],
    }))
    result = cleanse(SALES, bronze)
    assert result.clean["id"].to_pylist() == [1, 2]
    assert result.clean.schema.field("sale_ts").type == pa.timestamp("us")
    assert result.duplicates == 1
    assert dict(zip(result.quarantine["id"].to_pylist(), result.quarantine["_reason"].to_pylist(), strict=True)) == {
        "3": "non-positive quantity", "4": "negative price", "5": "unparseable sale_ts", None: "missing id",
    }


def test_masking_is_the_keyed_hmac_and_names_become_initials():
    table = pa.table({"email": ["ana.silva@example.com", None], "name": ["Ana  Maria Silva", None], "n": [1, 2]})
    masked = PiiMasker(key="k3y").mask(table, ["email"], ["name"])
    assert masked["email"][0].as_py() == hmac.new(b"k3y", b"ana.silva@example.com", hashlib.sha256).hexdigest()
    assert masked["name"].to_pylist() == ["A. M. S.", None]
    assert masked["email"][1].as_py() is None and masked["n"].to_pylist() == [1, 2]
    other_key = PiiMasker(key="another").mask(table, ["email"], [])
    assert other_key["email"][0] != masked["email"][0]


def test_latency_percentiles_and_rates_match_numpy():
    rng = np.random.default_rng(1)
    latency = rng.lognormal(4, 1, 1000).round(2)
    status = np.where(np.arange(1000) < 50, 503, 200)
    logs = pa.table({
        "request_id": [f"r{i}" for i in range(1000)], "ts": pa.array([dt.datetime(2026, 5, 4, 12)] * 1000),
        "server": ["srv-a"] * 1000, "region": ["sa-east-1"] * 1000, "endpoint": ["/x"] * 1000,
        "http_status": status, "latency_ms": latency, "cpu_pct": [50.0] * 1000,
    }).cast(INFRA_LOGS.schema)
    row = agg.server_latency_daily(logs).to_pylist()[0]
    for q, column in ((50, "p50_latency_ms"), (95, "p95_latency_ms"), (99, "p99_latency_ms")):
        assert row[column] == pytest.approx(np.percentile(latency, q))
    assert row["error_rate"] == pytest.approx(0.05)
    assert row["requests"] == 1000 and row["status_5xx"] == 50 and row["instability_rank"] == 1


def test_the_audit_names_the_server_with_the_failing_requests():
    def server(name, p95, err, rank):
        return {"server": name, "region": "r", "requests": 100, "p50_latency_ms": 50.0, "p95_latency_ms": p95,
                "p99_latency_ms": p95 * 2, "error_rate": err, "mean_cpu_pct": 40.0, "instability_score": 1.0,
                "instability_rank": rank}
    latency = pa.Table.from_pylist([server("good", 100, 0.001, 2), server("bad", 400, 0.09, 1),
                                    server("ok", 110, 0.0, 3)])
    found = bottlenecks(latency)
    assert [b["server"] for b in found] == ["bad"]
    assert "5xx rate 9.0%" in found[0]["reasons"] and "p95 400 ms" in found[0]["reasons"]
    assert "| 1 | bad |" in audit_markdown(DAY, latency)


def test_identifiers_and_day_filters_admit_only_plain_names_and_real_days():
    assert check_identifier("sales_2026") == "sales_2026"
    assert day_range_sql("sale_ts", "2026-05-04") == "\"sale_ts\" >= '2026-05-04' AND \"sale_ts\" < '2026-05-05'"
    assert day_range_sql("d", "2026-12-31").endswith("'2027-01-01'")


def test_urls_parse_relative_and_absolute_paths_and_redact_passwords():
    schemes = {"sqlite": "sqlite:///x", "postgresql": "postgresql://h/db"}
    assert parse_url("sqlite:///data/source.db", "V", schemes).location == "data/source.db"
    assert parse_url("sqlite:////srv/source.db", "V", schemes).location == "/srv/source.db"
    assert redact("postgresql://aegis:s3cret@db:5432/source") == "postgresql://aegis:***@db:5432/source"


def test_prefetched_keeps_order_raises_source_errors_and_stops_its_worker_early():
    with prefetched(iter(range(1000)), depth=3) as items:
        assert list(items) == list(range(1000))

    def failing():
        yield 1
        raise OSError("source went away")
    with pytest.raises(OSError, match="source went away"), prefetched(failing()) as items:
        list(items)

    pulled = []

    def endless():
        while True:
            pulled.append(1)
            yield len(pulled)
    with prefetched(endless(), depth=2) as items:
        assert next(items) == 1
    before = len(pulled)
    assert before <= 4, "the worker reads at most `depth` ahead"
    assert len(pulled) == before, "leaving the block stops the worker"


def test_column_encodings_leave_dictionaries_to_repetitive_columns_and_delta_encode_the_rest():
    from resources.checkpoints.format import column_encodings

    n = 1000
    batch = pa.RecordBatch.from_pydict({
        "id": pa.array(range(n), pa.int64()),
        "ts": pa.array([dt.datetime(2026, 6, 1) + dt.timedelta(seconds=i) for i in range(n)], pa.timestamp("us")),
        "email": [f"user{i}@example.com" for i in range(n)],
        "price": [i * 1.01 for i in range(n)],
        "state": ["SP", "RJ"] * (n // 2),
        "quantity": pa.array([i % 5 for i in range(n)], pa.int64()),
    })
    assert column_encodings(batch) == {"id": "DELTA_BINARY_PACKED", "ts": "DELTA_BINARY_PACKED",
                                       "email": "DELTA_BYTE_ARRAY", "price": "BYTE_STREAM_SPLIT"}
    assert column_encodings(batch.slice(0, 0)) == {}


def test_suites_on_arrow_backed_strings_still_name_nulls_bad_values_and_wrong_types():
    from platform_assets.layers.checks import _PANDAS_TYPES
    from platform_assets.quality import expectations as ex

    table = pa.table({"email": ["a@b.com", None, "not an email", "ção@exemplo.com.br"],
                      "code": pa.array([1, 2, 3, 4], pa.int64())})
    frame = ex.to_frame(table)
    assert str(frame["email"].dtype) == "string" and frame["email"].isna().tolist() == [False, True, False, False]
    strings = _PANDAS_TYPES[pa.string()]
    outcome = ex.validate(frame, [
        ex.expect_not_null("email"),
        ex.Expect("ExpectColumnValuesToMatchRegex", {"column": "email", "regex": r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$"}),
        ex.Expect("ExpectColumnValuesToBeInTypeList", {"column": "email", "type_list": strings}),
        ex.Expect("ExpectColumnValuesToBeInTypeList", {"column": "code", "type_list": strings}),
    ], "arrow_strings")
    failed = {e["expectation"]: e for e in outcome.failed}
    assert set(failed) == {"ExpectColumnValuesToNotBeNull(email)", "ExpectColumnValuesToMatchRegex(email)",
                           "ExpectColumnValuesToBeInTypeList(code)"}
    assert failed["ExpectColumnValuesToMatchRegex(email)"]["examples"] == ["not an email"]
    assert failed["ExpectColumnValuesToNotBeNull(email)"]["unexpected_count"] == 1

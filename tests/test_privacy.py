"""No raw e-mail, CPF, phone or full name leaves the source: scan every file and table downstream."""

import hashlib
import hmac
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import PII_KEY, World

PII_COLUMNS = ("email", "cpf", "phone", "name")


def raw_personal_values(world: World) -> set[str]:
    values: set[str] = set()
    for day in world.days:
        with world.source_db.read_day("customers", "signup_date", day) as reader:
            table = reader.read_all()
        for column in PII_COLUMNS:
            values |= {v for v in table[column].to_pylist() if v and len(v) >= 6}
    assert len(values) > 1000, "the scan needs real personal data to look for"
    return values


def strings_in(table: pa.Table) -> set[str]:
    found: set[str] = set()
    for field in table.schema:
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            found |= {v for v in table[field.name].to_pylist() if v}
    return found


@pytest.fixture(scope="module")
def raw_values(embedded_world: World) -> set[str]:
    return raw_personal_values(embedded_world)


def test_no_raw_pii_in_any_lake_file_downstream_of_bronze(embedded_world: World, raw_values: set[str]):
    lake = embedded_world.lake_root
    files = [p for layer in ("silver", "gold", "reports") for p in (lake / layer).rglob("*") if p.is_file()]
    parquet = [p for p in files if p.suffix == ".parquet"]
    assert len(parquet) >= 2 * (8 + 7), "expected silver, quarantine and gold files for both days"
    for path in files:
        if path.suffix == ".parquet":
            leaked = strings_in(pq.read_table(path, partitioning=None)) & raw_values
        else:
            text = path.read_bytes().decode("latin-1")
            leaked = {v for v in raw_values if v in text}
        assert not leaked, f"{path.relative_to(lake)} holds raw personal data: {sorted(leaked)[:3]}"


def test_no_raw_pii_in_any_serving_table(embedded_world: World, raw_values: set[str]):
    warehouse = embedded_world.warehouse
    tables = warehouse.query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'serving'"
    )["table_name"].to_pylist()
    assert "dim_customer" in tables and len(tables) == 8
    for name in tables:
        leaked = strings_in(warehouse.query(f"SELECT * FROM {warehouse.qualified(name)}")) & raw_values
        assert not leaked, f"serving.{name} holds raw personal data: {sorted(leaked)[:3]}"


def test_raw_bytes_of_the_warehouse_file_hold_no_email(embedded_world: World):
    """Belt and braces: DuckDB stores short strings uncompressed; no e-mail address may be in the file."""
    path = Path(embedded_world.warehouse.parsed.location)
    assert b"@example.com" not in path.read_bytes()


def test_masked_emails_are_the_keyed_hmac_so_joins_still_work(embedded_world: World):
    day = embedded_world.days[0]
    with embedded_world.source_db.read_day("customers", "signup_date", day) as reader:
        source = {r["id"]: r for r in reader.read_all().to_pylist()}
    silver = embedded_world.lake.read_partition("silver", "customers", day).to_pylist()
    checked = 0
    for row in silver[:200]:
        raw = source[row["id"]]
        expected = hmac.new(PII_KEY.encode(), raw["email"].encode(), hashlib.sha256).hexdigest()
        assert row["email"] == expected
        first, last = raw["name"].split()
        assert row["name"] == f"{first[0]}. {last[0]}."
        checked += 1
    assert checked == 200

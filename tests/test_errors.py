"""Bad input gets a clear error that names what is wrong, and loses nothing."""

import dagster as dg
import pyarrow as pa
import pytest

from platform_assets.layers import source
from platform_assets.layers.cleansing import ContractBreakError, cleanse
from platform_assets.layers.tables import SALES
from platform_assets.ops.runner import check_partitions
from resources import Lake, PiiMasker, SourceDatabase, SyntheticVolume, Warehouse
from resources.databases.adbc import DatabaseUnreachableError
from resources.databases.source_database import UnknownTableError
from resources.identifiers import InvalidIdentifierError
from resources.lake.lake import LakeUnreachableError, PartitionNotFoundError
from resources.urls import ConfigurationError
from tests.conftest import World


@pytest.mark.parametrize("resource, variable", [
    (SourceDatabase(url="mysql://root@localhost/source"), "AEGIS_SOURCE_URL"),
    (Lake(url="ftp://files.example.com/lake"), "AEGIS_LAKE_URL"),
    (Warehouse(url="sqlite:///warehouse.db"), "AEGIS_WAREHOUSE_URL"),
])
def test_unknown_url_scheme_names_the_variable_and_the_accepted_schemes(resource, variable):
    with pytest.raises(ConfigurationError) as error:
        resource.parsed  # noqa: B018 - parsing is the point
    assert variable in str(error.value) and "unsupported URL scheme" in str(error.value)


def test_unreachable_database_names_the_variable_and_hides_the_password():
    db = SourceDatabase(url="postgresql://aegis:supersecret@127.0.0.1:1/source")
    with pytest.raises(DatabaseUnreachableError) as error:
        db.table_exists("sales")
    message = str(error.value)
    assert "AEGIS_SOURCE_URL" in message and "cannot connect" in message
    assert "supersecret" not in message and "***" in message


def test_unreachable_warehouse_names_its_variable():
    with pytest.raises(DatabaseUnreachableError, match="AEGIS_WAREHOUSE_URL"):
        Warehouse(url="postgresql://127.0.0.1:1/serving").read("fact_sales", "day", "2026-01-01", "2026-01-02")


def test_unreachable_s3_names_the_lake_variable_and_endpoint(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "someone")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "something")
    lake = Lake(url="s3://aegis-lake/prod", endpoint_url="http://127.0.0.1:1")
    with pytest.raises(LakeUnreachableError, match=r"AEGIS_LAKE_URL=s3://aegis-lake/prod.*127\.0\.0\.1:1"):
        lake.read_partition("bronze", "sales", "2026-01-01")


def test_s3_without_credentials_says_so(monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    lake = Lake(url="s3://aegis-lake/prod", endpoint_url="http://127.0.0.1:1")
    with pytest.raises(LakeUnreachableError, match=r"AEGIS_LAKE_URL=s3://aegis-lake/prod: no S3 credentials"):
        lake.read_partition("bronze", "sales", "2026-01-01")


@pytest.mark.parametrize("name", ["sales; DROP TABLE sales", "sales--", '"sales"', "../etc", "", "a" * 64])
def test_table_names_that_are_not_identifiers_are_refused_before_any_sql(embedded_world: World, name: str):
    with pytest.raises(InvalidIdentifierError):
        embedded_world.source_db.count_day(name, "sale_ts", embedded_world.days[0])
    with pytest.raises(InvalidIdentifierError):
        embedded_world.lake.read_partition("bronze", name, embedded_world.days[0])
    assert embedded_world.source_db.table_exists("sales"), "nothing may be lost"


def test_unknown_table_is_named(embedded_world: World):
    with pytest.raises(UnknownTableError, match="'payments' does not exist in AEGIS_SOURCE_URL"):
        embedded_world.source_db.count_day("payments", "ts", embedded_world.days[0])


@pytest.mark.parametrize("day", ["2026-13-01", "../../etc/passwd", "2026-1-1", "yesterday", "2026-02-30"])
def test_malformed_days_never_reach_sql_or_paths(embedded_world: World, day: str):
    with pytest.raises(ValueError, match="invalid day"):
        embedded_world.lake.read_partition("bronze", "sales", day)
    with pytest.raises(ValueError, match="invalid day"):
        embedded_world.source_db.count_day("sales", "sale_ts", day)


def test_partition_key_outside_the_range_is_refused_by_dagster_and_by_the_runner(tmp_path):
    resources = {"source_db": SourceDatabase(url=f"sqlite:///{tmp_path}/s.db"),
                 "volume": SyntheticVolume(rows_per_day=10)}
    with pytest.raises(dg.DagsterUnknownPartitionError, match="2019-01-01"):
        dg.materialize(source.assets[:1], resources=resources, partition_key="2019-01-01")
    with pytest.raises(ValueError, match=r"'2019-01-01' is outside the daily partitions 2025-01-01 \.\. "):
        check_partitions(["2019-01-01"])
    assert not (tmp_path / "s.db").exists(), "nothing was written for the refused partition"


def test_missing_environment_variable_is_named(monkeypatch, tmp_path):
    from platform_assets.definitions import resources

    monkeypatch.delenv("AEGIS_SOURCE_URL", raising=False)
    monkeypatch.setenv("AEGIS_ROWS_PER_DAY", "10")
    with pytest.raises(dg.DagsterInvalidConfigError, match="AEGIS_SOURCE_URL"):
        dg.materialize(source.assets[:1], resources=resources, partition_key="2026-01-01")


def test_reading_a_partition_never_written_says_so(tmp_path):
    with pytest.raises(PartitionNotFoundError, match="materialise it first"):
        Lake(url=f"file://{tmp_path}").read_partition("silver", "sales", "2026-01-01")


def test_bronze_missing_a_contract_column_is_a_named_contract_break():
    bronze = pa.table({"id": [1], "_ingested_at": [None], "_batch_id": ["b"]})
    with pytest.raises(ContractBreakError, match="sale_ts"):
        cleanse(SALES, bronze)


def test_empty_pii_key_is_refused_with_the_variable_name():
    with pytest.raises(ConfigurationError, match="AEGIS_PII_KEY"):
        PiiMasker(key="").mask(pa.table({"email": ["a@b.co"]}), ["email"], [])

"""Each security posture finding fires on a configuration that deserves it and stays quiet on a hardened one;
and the checks run in Dagster on the posture asset (the BI role's finding is judged on the real PostgreSQL in
test_security_access.py)."""

import datetime as dt

import dagster as dg
import pyarrow as pa
import pytest

from platform_assets.layers.bronze import lineage_schema, with_lineage
from platform_assets.layers.cleansing import cleanse
from platform_assets.layers.generators import generate
from platform_assets.layers.gold import GOLD_TABLES
from platform_assets.layers.tables import SOURCE_TABLES
from platform_assets.security import assets as security
from platform_assets.security import posture
from resources import PiiMasker

KEY = "ab" * 32
HARDENED = {"AEGIS_CHECKPOINT_KEYS": f"k1*={KEY}", "AEGIS_PII_KEY": "a-long-random-production-secret-123",
            "AEGIS_SOURCE_URL": "postgresql://aegis:Xy7-long-random@db.internal:5432/source",
            "AEGIS_WAREHOUSE_URL": "postgresql://aegis:Qz9-long-random@db.internal:5432/serving",
            "DAGSTER_PG_PASSWORD": "Pw4-long-random", "AEGIS_LAKE_URL": "s3://lake/prod",
            "AWS_ENDPOINT_URL": "https://s3.internal:8333"}


@pytest.mark.parametrize("judge, weak, severity, says", [
    (posture.checkpoints_encrypted, {"AEGIS_CHECKPOINT_KEYS": ""}, posture.WARN, "plaintext"),
    (posture.checkpoints_encrypted, {"AEGIS_CHECKPOINT_KEYS": f"k1={KEY}"}, posture.ERROR, "no key is marked current"),
    (posture.pii_key_is_real, {"AEGIS_PII_KEY": "dev-only-change-me"}, posture.WARN, "development key"),
    (posture.pii_key_is_real, {"AEGIS_PII_KEY": ""}, posture.ERROR, "missing"),
    (posture.database_passwords, {"AEGIS_SOURCE_URL": "postgresql://aegis@db.internal:5432/source"}, posture.WARN,
     "no password"),
    (posture.database_passwords, {"AEGIS_WAREHOUSE_URL": "postgresql://aegis:postgres@db:5432/serving"},
     posture.WARN, "a default password"),
    (posture.database_passwords, {"DAGSTER_PG_PASSWORD": ""}, posture.WARN, "DAGSTER_PG_PASSWORD"),
    (posture.s3_over_https, {"AWS_ENDPOINT_URL": "http://s3.internal:8333"}, posture.ERROR, "plain HTTP"),
])
def test_a_finding_fires_on_a_weak_setting_and_is_quiet_when_hardened(judge, weak, severity, says):
    assert judge(HARDENED).passed, judge(HARDENED)
    judged = judge({**HARDENED, **weak})
    assert not judged.passed and judged.severity == severity and says in judged.description and judged.fix
    assert "postgres@" not in judged.description or ":***@" in judged.description


def test_no_finding_ever_shows_a_secret():
    leaky = {**HARDENED, "AEGIS_WAREHOUSE_URL": "postgresql://aegis:postgres@db:5432/serving",
             "AWS_ENDPOINT_URL": "http://user:s3-secret@s3.internal:8333", "AEGIS_PII_KEY": "dev-only-abc"}
    text = " ".join(j(leaky).description + j(leaky).fix for j in (
        posture.checkpoints_encrypted, posture.pii_key_is_real, posture.database_passwords, posture.s3_over_https))
    assert KEY not in text and "s3-secret" not in text and "dev-only-abc" not in text and ":postgres@" not in text


def test_loopback_http_and_embedded_stacks_are_not_findings():
    embedded = {"AEGIS_SOURCE_URL": "sqlite:///data/source.db", "AEGIS_WAREHOUSE_URL": "duckdb:///w.duckdb",
                "AEGIS_LAKE_URL": "s3://lake/x", "AWS_ENDPOINT_URL": "http://127.0.0.1:8333"}
    assert posture.s3_over_https(embedded).passed and posture.database_passwords(embedded).passed


def test_raw_pii_downstream_is_found_where_it_is_and_nowhere_else():
    raw = {"ana@example.com", "123.456.789-00"}
    clean = [("silver/customers", pa.table({"email": ["5f1e…"], "city": ["Rio"]}))]
    assert posture.raw_pii_downstream(raw, clean).passed
    leaked = ("serving.dim_customer", pa.table({"email_hash": ["ana@example.com"]}))
    judged = posture.raw_pii_downstream(raw, [*clean, leaked])
    assert not judged.passed and judged.severity == posture.ERROR
    assert "serving.dim_customer.email_hash" in judged.description
    assert "ana@example.com" not in judged.description, "the finding names the place, never the value"


def day_of_the_platform(day: str, rows: int, masker: PiiMasker) -> tuple[set[str], list[tuple[str, pa.Table]]]:
    """One day through the platform's own logic: the sampled raw personal values of bronze/customers (as the
    check samples them) and every silver, quarantine and gold table of that day."""
    bronze = {}
    for name in SOURCE_TABLES:
        data = generate(name, day, rows)
        schema = lineage_schema(data.schema)
        stamp = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        bronze[name] = pa.Table.from_batches(list(with_lineage(data.to_reader(), schema, "b1", stamp, [])), schema)
    places, silver = [], {}
    for name, contract in SOURCE_TABLES.items():
        result = cleanse(contract, bronze[name])
        silver[name] = masker.mask(result.clean, contract.hashed_pii, contract.name_pii)
        places += [(f"silver/{name}", silver[name]),
                   (f"silver/quarantine/{name}", masker.mask(result.quarantine, contract.hashed_pii,
                                                             contract.name_pii))]
    places += [(f"gold/{g.name}", g.build(*(silver[i] for i in g.inputs))) for g in GOLD_TABLES]
    contract, sample = SOURCE_TABLES["customers"], bronze["customers"].slice(0, security.SAMPLE_ROWS)
    raw = {v for c in (*contract.hashed_pii, *contract.name_pii) for v in sample[c].to_pylist() if v}
    return raw, places


SWEEP = [(dt.date(2026, 11, 15) + dt.timedelta(days=i)).isoformat() for i in range(60)]  # across a year's end


@pytest.mark.parametrize("day", SWEEP)
def test_the_raw_pii_check_is_quiet_on_the_platforms_own_graph_whatever_the_day(day):
    """60 consecutive days of the platform's own data (the generators draw from the day): never a finding on a
    platform that masks correctly."""
    raw, places = day_of_the_platform(day, 2000, PiiMasker(key="a-real-secret-for-the-sweep"))
    judged = posture.raw_pii_downstream(raw, places)
    assert judged.passed, f"{day}: {judged.description}"


def test_the_raw_pii_check_fires_when_a_personal_column_travels_raw_into_silver_or_gold():
    day = SWEEP[-1]
    raw, places = day_of_the_platform(day, 2000, PiiMasker(key="a-real-secret-for-the-sweep"))
    tables = dict(places)
    silver, gold = tables["silver/customers"], tables["gold/dim_customer"]
    bronze = generate("customers", day, 2000)  # the same rows the sample came from
    raw_phones = bronze["phone"].slice(0, gold.num_rows)
    judged = posture.raw_pii_downstream(raw, [*places, ("gold/dim_customer", gold.append_column("contact",
                                                                                                raw_phones))])
    assert not judged.passed and "gold/dim_customer.contact" in judged.description, judged.description
    raw_names = bronze["name"].slice(0, silver.num_rows)
    judged = posture.raw_pii_downstream(raw, [("silver/customers", silver.append_column("full_name", raw_names))])
    assert not judged.passed and "silver/customers.full_name" in judged.description, judged.description


def test_short_or_numeric_values_are_not_personal_data_by_coincidence():
    assert not posture.distinctive("123") and not posture.distinctive("4567") and not posture.distinctive("12345678")
    assert posture.distinctive("123.456.789-09") and posture.distinctive("+55 11 91234-5678")
    assert posture.distinctive("Ana Lima") and posture.distinctive("ana.lima12@example.com")
    quarantined = [("silver/quarantine/video_events", pa.table({"views": ["123", "-4"], "likes": ["7", "123"]}))]
    assert posture.raw_pii_downstream({"123", "Ana Lima"}, quarantined).passed


def test_the_posture_checks_run_on_the_posture_asset(embedded_world, monkeypatch):
    monkeypatch.setenv("AEGIS_PII_KEY", "dev-only-something")
    monkeypatch.delenv("AEGIS_CHECKPOINT_KEYS", raising=False)
    monkeypatch.delenv("AEGIS_CHECKPOINT_KEY", raising=False)
    result = dg.materialize([*security.assets, *security.checks], selection=[security.POSTURE],
                            resources=embedded_world.resources)
    verdicts = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(verdicts) == {"checkpoints_encrypted", "pii_key_is_real", "database_passwords", "s3_over_https",
                             "bi_role_read_only", "no_raw_pii_downstream"}
    assert not verdicts["pii_key_is_real"].passed and not verdicts["checkpoints_encrypted"].passed
    assert verdicts["no_raw_pii_downstream"].passed, verdicts["no_raw_pii_downstream"].description
    assert verdicts["bi_role_read_only"].passed and verdicts["s3_over_https"].passed

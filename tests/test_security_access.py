"""Least privilege and row-level security on the real PostgreSQL: the serving tables of a real graph (the
production world's) published into a fresh warehouse database, secured by `security/warehouse_access`, then read
and attacked as BI users who log in for real (trust auth on loopback)."""

import uuid

import adbc_driver_postgresql.dbapi as pg
import dagster as dg
import pytest

from platform_assets.layers.gold import SERVED_TABLES
from platform_assets.security import assets as security
from platform_assets.security import posture
from resources import Warehouse

TAG = uuid.uuid4().hex[:6]
BI, WRITER = f"aegis_bi_t{TAG}", f"aegis_writer_t{TAG}"
RJ, NONE, ALL = f"bi_rj_{TAG}", f"bi_none_{TAG}", f"bi_all_{TAG}"
PLATFORM = f"platform_{TAG}"  # the platform's own login in production: no superuser, a member of the writer role


def sql(url: str, statement: str) -> list[tuple]:
    with pg.connect(url) as conn, conn.cursor() as cur:
        cur.execute(statement)
        rows = cur.fetchall() if cur.description else []
        conn.commit()
        return rows


def as_user(url: str, user: str) -> str:
    return url.replace("://postgres@", f"://{user}@")


def refused(url: str, statement: str) -> str:
    try:
        sql(url, statement)
    except Exception as exc:  # noqa: BLE001 - any refusal by the server counts; its text is checked
        return str(exc)
    return "ALLOWED"


@pytest.fixture(scope="module")
def secured(production_world, postgres_admin, monkeypatch_module):
    name = f"aegis_test_secured_{TAG}"
    with pg.connect(postgres_admin, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    url = postgres_admin.rsplit("/", 1)[0] + f"/{name}"
    warehouse = Warehouse(url=url, writer_role=WRITER)
    day = production_world.days[-1]
    source = production_world.warehouse
    for spec in SERVED_TABLES:
        if spec.key:
            warehouse.upsert(spec.name, source.query(f"SELECT * FROM {source.qualified(spec.name)}"), spec.key)
        else:
            warehouse.publish_partition(spec.name, source.read(spec.name, "day", day, day), "day", day)
    institution = sql(url, "SELECT min(institution) FROM serving.video_views_by_institution_daily")[0][0]
    monkeypatch_module.setenv("AEGIS_BI_ROLE", BI)
    monkeypatch_module.setenv("AEGIS_ROW_ACCESS", f"{RJ}:state=RJ,category=books,institution={institution};"
                              f"{ALL}:state=*,category=*,institution=*")
    result = dg.materialize([security.warehouse_access], resources={"warehouse": warehouse})
    assert result.success
    for user in (RJ, NONE, ALL):
        sql(url, f'CREATE ROLE "{user}" LOGIN IN ROLE "{BI}"')
    sql(url, f'CREATE ROLE "{PLATFORM}" LOGIN IN ROLE "{WRITER}"')
    sql(url, "CREATE TABLE public.staging_sales AS SELECT 1 AS id")
    yield url, warehouse, institution, production_world
    with pg.connect(postgres_admin, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        for role in (RJ, NONE, ALL, PLATFORM, BI, WRITER):
            cur.execute(f'DROP ROLE IF EXISTS "{role}"')


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def count(url: str, table: str, where: str = "true") -> int:
    return sql(url, f"SELECT count(*) FROM serving.{table} WHERE {where}")[0][0]


def test_a_fully_mapped_bi_user_reads_every_serving_table(secured):
    url, *_ = secured
    for spec in SERVED_TABLES:
        assert count(as_user(url, ALL), spec.name) == count(url, spec.name) > 0, spec.name


def test_a_mapped_user_sees_only_their_rows_and_an_unmapped_user_nothing(secured):
    url, _, institution, _ = secured
    rj = as_user(url, RJ)
    assert count(rj, "dim_customer") == count(url, "dim_customer", "state = 'RJ'") > 0
    assert count(rj, "dim_customer", "state <> 'RJ'") == 0
    assert count(rj, "sales_by_category_daily") == count(url, "sales_by_category_daily", "category = 'books'") > 0
    assert count(rj, "sales_vs_inflation", "category <> 'books'") == 0
    books_or_rj = ("product_key IN (SELECT product_key FROM serving.dim_product WHERE category = 'books') OR "
                   "customer_key IN (SELECT customer_key FROM serving.dim_customer WHERE state = 'RJ')")
    assert count(rj, "fact_sales") == count(url, "fact_sales", books_or_rj) > 0, "its product's or customer's"
    assert count(rj, "video_views_by_institution_daily") == count(
        url, "video_views_by_institution_daily", f"institution = '{institution}'") > 0
    assert count(rj, "server_latency_daily") == count(url, "server_latency_daily"), "no row scope: any mapped user"
    for spec in SERVED_TABLES:
        assert count(as_user(url, NONE), spec.name) == 0, spec.name


def test_the_bi_role_writes_creates_and_reads_nothing_else(secured):
    url, _, _, world = secured
    rj = as_user(url, RJ)
    for statement in ("INSERT INTO serving.dim_customer (customer_key) VALUES (-1)",
                      "UPDATE serving.dim_customer SET city = 'x'", "DELETE FROM serving.fact_sales",
                      "TRUNCATE serving.fact_sales", "CREATE TABLE serving.mine (a int)",
                      "CREATE TABLE public.mine (a int)", "CREATE TEMP TABLE mine (a int)", "CREATE SCHEMA mine",
                      "SELECT * FROM public.staging_sales", "SELECT * FROM aegis_security.row_access",
                      "ALTER TABLE serving.fact_sales DISABLE ROW LEVEL SECURITY"):
        said = refused(rj, statement)
        assert "permission denied" in said or "must be owner" in said, (statement, said)
    source = as_user(world.source_db.url, RJ)
    assert "permission denied" in refused(source, "SELECT count(*) FROM sales")
    (superuser, bypass), = sql(url, f"SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = '{BI}'")
    assert not superuser and not bypass, "the BI role never bypasses row-level security"
    owners = sql(url, "SELECT c.relname, pg_get_userbyid(c.relowner), c.relrowsecurity FROM pg_class c JOIN "
                 "pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'serving' AND c.relkind = 'r'")
    assert {r[0] for r in owners} == {s.name for s in SERVED_TABLES}
    assert all(owner == WRITER and rls for _, owner, rls in owners), owners


def test_the_platform_still_publishes_and_a_new_table_shows_bi_nothing_until_secured(secured):
    url, warehouse, _, world = secured
    day = world.days[-1]
    products = world.warehouse.query("SELECT * FROM serving.dim_product")
    warehouse.upsert("dim_product", products, ["product_key"])  # staged in a temporary table, as the writer
    warehouse.publish_partition("brand_new", world.warehouse.read("fact_sales", "day", day, day), "day", day)
    assert count(url, "brand_new") > 0 and count(as_user(url, ALL), "brand_new") == 0, "deny by default"
    dg.materialize([security.warehouse_access], resources={"warehouse": warehouse})
    assert count(as_user(url, ALL), "brand_new") == count(url, "brand_new")
    sql(url, "DROP TABLE serving.brand_new")


def test_the_platform_login_without_superuser_reads_everything_and_publishes_as_the_writer(secured):
    url, _, _, world = secured
    mine = as_user(url, PLATFORM)
    for spec in SERVED_TABLES:
        assert count(mine, spec.name) == count(url, spec.name), spec.name  # reports and checks see every row
    platform = Warehouse(url=mine, writer_role=WRITER)
    day = world.days[-1]
    platform.publish_partition("fact_sales", world.warehouse.read("fact_sales", "day", day, day), "day", day)
    platform.upsert("dim_product", world.warehouse.query("SELECT * FROM serving.dim_product"), ["product_key"])
    assert platform.erase("dim_customer", "customer_key", -12345) == 0
    assert "permission denied" in refused(mine, "CREATE TABLE public.mine (a int)")


def test_the_posture_check_fires_when_the_bi_role_can_write(secured):
    url, warehouse, _, _ = secured
    assert posture.bi_role_read_only(warehouse.role_privileges(BI)).passed
    sql(url, f'GRANT INSERT ON serving.dim_customer TO "{BI}"')
    judged = posture.bi_role_read_only(warehouse.role_privileges(BI))
    assert not judged.passed and judged.severity == posture.ERROR and "write" in judged.description
    sql(url, f'REVOKE INSERT ON serving.dim_customer FROM "{BI}"')
    assert not posture.bi_role_read_only(warehouse.role_privileges("no_such_role_x")).passed

"""Users choose what is protected: AEGIS_PROTECTED_TABLES (names, schema.table, patterns, -exclusions)
resolved against the real database, one checkpoint and one recovery asset per table, and the watch sensor
restores any of them."""

import subprocess

import dagster as dg
import pytest

from platform_assets import checkpoints, recovery
from platform_assets.protected import resolve
from resources import CheckpointStore, Lake, RecoveryPolicy, SourceDatabase
from resources.consistency_groups import ConsistencyGroup
from resources.table_refs import TableRef, UnknownProtectedTableError, resolve_protected, safe_component
from sensors.source_watch import build_source_watch
from tests.conftest import schema_as_dumped

SCHEMA = """
CREATE SCHEMA ops;
CREATE TABLE public.orders (id int PRIMARY KEY, total numeric(12,2));
CREATE TABLE public.tmp_scratch (x int);
CREATE TABLE public."Order Items" (id int PRIMARY KEY, order_id int REFERENCES public.orders(id), sku uuid);
CREATE TABLE ops.jobs (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, spec jsonb);
INSERT INTO public.orders VALUES (1, 10.50), (2, 3.33);
INSERT INTO public."Order Items" VALUES (1, 1, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11');
INSERT INTO ops.jobs (spec) VALUES ('{"a": 1}'), ('[]');
"""


@pytest.fixture
def user_db(make_pg_database):
    url = make_pg_database("protected")
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", SCHEMA], check=True)
    return url


def test_patterns_exclusions_and_schemas_resolve_to_the_right_tables(user_db):
    found = resolve(user_db, "public.*,-public.tmp_*,ops.jobs")[0].tables
    assert {(t.schema, t.name) for t in found} >= {(None, "orders"), (None, "Order Items"), ("ops", "jobs")}
    assert not [t for t in found if t.name == "tmp_scratch"], "excluded by -public.tmp_*"
    ids = {t.id for t in found}
    assert {"orders", "ops/jobs", safe_component("Order Items")} <= ids
    assert all(part.replace("_", "").isalnum() for i in ids for part in i.split("/")), "safe keys and paths"


def test_an_unknown_exact_name_is_a_clear_error_but_an_empty_pattern_is_not(user_db):
    with pytest.raises(UnknownProtectedTableError, match="'ops.missing'.*no table ops.missing"):
        resolve(user_db, "orders,ops.missing")
    resolution, _ = resolve(user_db, "orders,archive_*")
    assert resolution.empty_patterns == ["archive_*"]


def test_quoted_names_with_dots_and_case_are_kept_exactly():
    existing = {("main", "a.b"), ("main", "Sales"), ("main", "sales")}
    found = resolve_protected('"a.b",Sales', existing, "main").tables
    assert [(t.name, t.sql) for t in found] == [("a.b", '"a.b"'), ("Sales", '"Sales"')]


def test_a_dropped_protected_table_in_another_schema_is_restored_by_the_sensor(user_db, tmp_path):
    db = SourceDatabase(url=user_db)
    store = CheckpointStore(lake=Lake(url=f"file://{tmp_path}/lake"), encryption_key="")
    jobs, items = TableRef("ops", "jobs", default_schema=False), TableRef(None, "Order Items")
    resources = {"source_db": db, "checkpoints": store, "recovery_policy": RecoveryPolicy()}
    groups = [ConsistencyGroup((jobs,)), ConsistencyGroup((items,))]
    assets = [checkpoints._checkpoint_assets(group) for group in groups]
    assets += [recovery._recovery_assets(group) for group in groups]
    with dg.instance_for_test() as instance:
        assert dg.materialize(assets[:2], instance=instance, resources=resources).success
        before = {ref.sql: schema_as_dumped(db, ref.sql) for ref in (jobs, items)}
        subprocess.run(["psql", "-X", "-q", "-d", user_db, "-c", 'DROP TABLE ops.jobs'], check=True)
        sensor = build_source_watch([jobs, items], recovery.jobs[0], RecoveryPolicy())
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            result = sensor.evaluate_tick(context)
        (request,) = result.run_requests
        assert request.asset_selection == [dg.AssetKey(["recovery", "ops", "jobs"])]
        run = dg.materialize(assets, instance=instance, resources=resources, selection=request.asset_selection,
                             tags=request.tags)
        assert run.success
        assert {ref.sql: schema_as_dumped(db, ref.sql) for ref in (jobs, items)} == before

"""Any protected table comes back exactly: every value with its type (judged by the database itself:
`t::text` of every row, `typeof()`/`quote()` in SQLite), every schema object (`pg_dump --schema-only`,
`sqlite_master`, `sqlite_sequence`) — or the checkpoint refuses before writing anything."""

import sqlite3
import subprocess
import uuid
from pathlib import Path

import pytest

from platform_assets.protection.restoring import RestoreFailedError, plan_restore, restore
from resources import CheckpointStore, Lake, SourceDatabase
from resources.databases import postgres_tables, sqlite_tables
from resources.databases.postgres_tables import UnsupportedTypeError
from resources.databases.table_refs import TableRef
from tests.conftest import schema_as_dumped

REALISTIC = Path(__file__).parent / "sql" / "realistic_postgres.sql"
ITEMS = TableRef("Ops", "Order Items", default_schema=False)
TYPES = TableRef(None, "types")


def psql(url: str, sql: str) -> str:
    return subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
                          capture_output=True, text=True, check=True).stdout


def pg_rows(url: str, table_sql: str) -> list[str]:
    return psql(url, f"SELECT r::text FROM {table_sql} r ORDER BY 1").splitlines()


@pytest.fixture
def realistic(make_pg_database, tmp_path):
    """The realistic schema in a database of its own; its reader role (roles are server-wide) is named for this
    test alone and dropped after it."""
    url = make_pg_database("exact")
    reader = f"aegis_reader_{uuid.uuid4().hex[:8]}"
    psql(url, REALISTIC.read_text().replace("aegis_test_reader", reader))
    yield SourceDatabase(url=url), CheckpointStore(lake=Lake(url=f"file://{tmp_path}/lake"), encryption_key="")
    psql(url, f"DROP OWNED BY {reader}; DROP ROLE {reader}")


def test_every_common_postgres_type_round_trips_exactly(realistic):
    db, store = realistic
    before = pg_rows(db.url, TYPES.sql)
    manifest = store.write(db, TYPES)
    travel = {c["name"]: c["travel"] for c in manifest["columns"]}
    assert travel["n"] == travel["u"] == travel["jb"] == travel["iv"] == "text" and travel["m"] == "money"
    psql(db.url, "DROP TABLE types")
    restore(store, db, plan_restore(store, TYPES.id))
    assert pg_rows(db.url, TYPES.sql) == before, "numeric(30 digits), infinity, arrays, jsonb … as the server prints"


def test_a_realistic_schema_survives_drop_cascade_and_the_application_can_insert_again(realistic):
    db, store = realistic
    schema, rows = schema_as_dumped(db, ITEMS.sql), pg_rows(db.url, ITEMS.sql)
    child = schema_as_dumped(db, "public.child")
    store.write(db, ITEMS)
    psql(db.url, 'DROP TABLE "Ops"."Order Items" CASCADE')  # also drops child's foreign key onto it
    outcome = restore(store, db, plan_restore(store, ITEMS.id))
    assert outcome.warnings == []
    assert schema_as_dumped(db, ITEMS.sql) == schema, \
        "identity, PK, FK, CHECK, defaults, indexes, trigger, comments, grant, RLS policy, owner"
    assert schema_as_dumped(db, "public.child") == child, "the foreign key of another table onto it is back"
    assert pg_rows(db.url, ITEMS.sql) == rows
    new_id = psql(db.url, 'INSERT INTO "Ops"."Order Items" (amount) VALUES (7) RETURNING id').split()[0]
    assert int(new_id) > 100, "the identity continues past every restored value"


def test_a_table_set_aside_gives_its_incoming_foreign_keys_to_the_restored_one(realistic):
    db, store = realistic
    store.write(db, ITEMS)
    outcome = restore(store, db, plan_restore(store, ITEMS.id), aside="Order_Items__replaced_20261123_120000")
    assert outcome.kept_aside["rows"] == 100
    referenced = psql(db.url, "SELECT confrelid::regclass::text FROM pg_constraint WHERE conname = 'child_item_fkey'")
    assert referenced.strip() == '"Ops"."Order Items"'


def test_a_grant_to_a_role_dropped_since_the_checkpoint_is_reported_and_the_table_still_comes_back(realistic):
    db, store = realistic
    role = f"aegis_gone_{uuid.uuid4().hex[:8]}"
    psql(db.url, f"CREATE ROLE {role}; GRANT SELECT ON types TO {role}")
    rows = pg_rows(db.url, TYPES.sql)
    store.write(db, TYPES)
    psql(db.url, f"DROP TABLE types; DROP ROLE {role}")
    outcome = restore(store, db, plan_restore(store, TYPES.id))
    assert pg_rows(db.url, TYPES.sql) == rows
    (warning,) = outcome.warnings
    assert warning.startswith("GRANT SELECT ON TABLE public.types TO") and f'role "{role}" does not exist' in warning


@pytest.mark.parametrize("sql_type", ["regclass", "tid", "xid"])
def test_a_type_that_cannot_travel_exactly_fails_before_anything_is_written(realistic, tmp_path, sql_type):
    db, store = realistic
    psql(db.url, f"CREATE TABLE odd (id int, ref {sql_type})")
    with pytest.raises(UnsupportedTypeError, match=f"column 'ref' of odd has type {sql_type}"):
        store.write(db, TableRef(None, "odd"))
    assert not (tmp_path / "lake").exists(), "nothing was written"


def test_a_lossy_conversion_in_the_read_path_fails_the_restore(realistic, monkeypatch):
    db, store = realistic
    real = postgres_tables.select_sql
    monkeypatch.setattr(postgres_tables, "select_sql",  # a driver that rounds numerics to 12 digits
                        lambda ref, cols: real(ref, cols).replace('"n"::text', 'round("n", 12)::text'))
    store.write(db, TYPES)
    psql(db.url, "DROP TABLE types")
    with pytest.raises(RestoreFailedError, match="fingerprint"):
        restore(store, db, plan_restore(store, TYPES.id))
    assert psql(db.url, "SELECT to_regclass('public.types') IS NULL").strip() == "t", "nothing half-restored"


SQLITE_SCHEMA = """
CREATE TABLE "Mixed Items" (id INTEGER PRIMARY KEY AUTOINCREMENT, v ANY, r REAL, t TEXT,
                            g INTEGER GENERATED ALWAYS AS (id * 2) VIRTUAL);
CREATE TABLE w (k TEXT PRIMARY KEY, n INTEGER) WITHOUT ROWID;
CREATE TABLE s (a INTEGER, b TEXT) STRICT;
CREATE TABLE audit (n INTEGER);
CREATE INDEX ix_items_t ON "Mixed Items"(t) WHERE t IS NOT NULL;
CREATE TRIGGER items_audit AFTER INSERT ON "Mixed Items" BEGIN INSERT INTO audit VALUES (new.id); END;
INSERT INTO "Mixed Items"(v, r, t) VALUES (1, 0.6666666666666666, 'a'), ('text', 1e300, 'b'), (x'00ff', 2.5e-324, NULL),
    (2.5, NULL, 'é'), ('12', 3, 'x'), (NULL, -1.0, '');
DELETE FROM "Mixed Items" WHERE id = 6;
INSERT INTO w VALUES ('a', 1), ('b', NULL);
INSERT INTO s VALUES (1, 'x'), (NULL, NULL);
DELETE FROM s WHERE a = 1;
"""


def sqlite_rows(path, table: str) -> list:
    with sqlite3.connect(path) as conn:
        names = [r[1] for r in conn.execute(f'PRAGMA table_xinfo("{table}")')]
        values = ", ".join(f'typeof("{n}"), quote("{n}")' for n in names)
        rowid = "" if table == "w" else "_rowid_, "
        return sorted(conn.execute(f'SELECT {rowid}{values} FROM "{table}"').fetchall(), key=repr)


def test_sqlite_tables_round_trip_with_storage_classes_generated_columns_and_sequences(tmp_path):
    path = tmp_path / "s.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(SQLITE_SCHEMA)
    db = SourceDatabase(url=f"sqlite:///{path}")
    store = CheckpointStore(lake=Lake(url=f"file://{tmp_path}/lake"), encryption_key="")
    tables = ["Mixed Items", "w", "s"]
    before = {t: (sqlite_rows(path, t), schema_as_dumped(db, t)) for t in tables}
    for table in tables:
        store.write(db, TableRef(None, table))
    with sqlite3.connect(path) as conn:
        conn.executescript('DROP TABLE "Mixed Items"; DROP TABLE w; DROP TABLE s;')
    for table in tables:
        restore(store, db, plan_restore(store, TableRef(None, table).id))
    for table in tables:
        assert (sqlite_rows(path, table), schema_as_dumped(db, table)) == before[table], table
    with sqlite3.connect(path) as conn:  # AUTOINCREMENT never reuses 6; the trigger fires again
        conn.execute('INSERT INTO "Mixed Items"(v) VALUES (0)')
        assert conn.execute('SELECT max(id) FROM "Mixed Items"').fetchone()[0] == 7
        assert conn.execute("SELECT max(n) FROM audit").fetchone()[0] == 7


def test_a_lossy_sqlite_read_fails_the_restore(tmp_path, monkeypatch):
    path = tmp_path / "s.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(SQLITE_SCHEMA)
    db = SourceDatabase(url=f"sqlite:///{path}")
    store = CheckpointStore(lake=Lake(url=f"file://{tmp_path}/lake"), encryption_key="")
    real = sqlite_tables._plain

    def rounding(column, values):  # REAL to 7 significant digits, as a careless driver would
        return real(column, tuple(float(f"{v:.7g}") if isinstance(v, float) else v for v in values))

    monkeypatch.setattr(sqlite_tables, "_plain", rounding)
    store.write(db, TableRef(None, "Mixed Items"))
    with sqlite3.connect(path) as conn:
        conn.execute('DROP TABLE "Mixed Items"')
    with pytest.raises(RestoreFailedError, match="fingerprint"):
        restore(store, db, plan_restore(store, TableRef(None, "Mixed Items").id))

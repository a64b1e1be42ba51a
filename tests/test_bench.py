"""The benchmark harness runs end to end (quick mode) so it cannot rot. No time is asserted here:
speed is measured by `make bench`, as ratios within one run."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmark_runs_every_case_and_checks_both_sides_agree(tmp_path, postgres_admin):
    report = tmp_path / "report.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AEGIS_", "DAGSTER_HOME"))}
    env["AEGIS_BENCH_PG_URL"] = postgres_admin
    result = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--out", str(report)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = report.read_text()
    for case in ("checkpoint, SQLite source", "restore into SQLite", "checkpoint, PostgreSQL source",
                 "restore into PostgreSQL"):
        assert f"| {case} | 10,000 |" in text, case
    assert "Both sides checked equal" in text
    for section in ("## Storage", "## Whole graph, one day", "## One day from the UI", "## Peak memory", "## Targets",
                    "## Checkpoint and restore: Aegis vs pg_dump -Fc / pg_restore"):
        assert section in text
    dumps = text.split("Aegis vs pg_dump -Fc / pg_restore")[1].split("## Storage")[0]
    assert "| 10,000 | " in dumps and "x** |" in dumps, "the pg_dump / pg_restore comparison ran and printed"
    assert "PostgreSQL checkpoint, 1M rows: >= 2x faster than pg_dump -Fc" in text
    assert "| 10,000 | **" in text.split("## One day from the UI")[1], "the GraphQL-launched day ran to success"
    for table in ("infra_logs", "customers", "sales", "video_events"):
        assert f"| {table} | 10,000 |" in text, f"storage of {table}"

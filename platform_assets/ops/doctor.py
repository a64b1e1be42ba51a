"""`make doctor`: one line per check of every configured backend and setting, OK / WARN / FAIL with what to
do; exit status 1 when anything FAILs. It reads `.env` exactly as Dagster's CLI does (the environment wins over
lines written `NAME=${NAME:-default}`, see resources/env_file.py), so it checks what the platform uses; each
backend's line shows the URL it checked. Secrets are never printed (see health.py)."""

import sys
from pathlib import Path

from platform_assets.ops.health import FAIL, WARN, Finding, run_all
from resources.env_file import apply_env_file

_COLOURS = {"OK": "\033[32m", WARN: "\033[33m", FAIL: "\033[31m"}


def line(finding: Finding, colour: bool = False) -> str:
    status = f"{_COLOURS[finding.status]}{finding.status:<4}\033[0m" if colour else f"{finding.status:<4}"
    return f"{status}  {finding.check:<28} {finding.detail}" + (f" -> {finding.fix}" if finding.fix else "")


def main() -> int:
    hidden = apply_env_file(Path(".env"))
    findings = [Finding(WARN, "configuration", note) for note in hidden] + run_all()
    for finding in findings:
        print(line(finding, colour=sys.stdout.isatty()))
    failed = [f for f in findings if f.status == FAIL]
    warned = [f for f in findings if f.status == WARN]
    print(f"\n{len(findings)} checks: {len(failed)} FAIL, {len(warned)} WARN")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

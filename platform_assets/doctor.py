"""`make doctor`: one line per check of every configured backend and setting, OK / WARN / FAIL with what to
do; exit status 1 when anything FAILs. Secrets are never printed (see health.py)."""

import os
import sys
from pathlib import Path

from platform_assets.health import FAIL, WARN, Finding, run_all

_COLOURS = {"OK": "\033[32m", WARN: "\033[33m", FAIL: "\033[31m"}


def line(finding: Finding, colour: bool = False) -> str:
    status = f"{_COLOURS[finding.status]}{finding.status:<4}\033[0m" if colour else f"{finding.status:<4}"
    return f"{status}  {finding.check:<28} {finding.detail}" + (f" -> {finding.fix}" if finding.fix else "")


def load_env_file(path: Path) -> None:
    """KEY=VALUE lines of `.env`, for the variables the environment does not already set (it wins)."""
    if not path.is_file():
        return
    for raw in path.read_text().splitlines():
        name, sep, value = raw.strip().partition("=")
        if sep and name and not name.startswith("#"):
            os.environ.setdefault(name.strip(), value.strip())


def main() -> int:
    load_env_file(Path(".env"))
    findings = run_all()
    for finding in findings:
        print(line(finding, colour=sys.stdout.isatty()))
    failed = [f for f in findings if f.status == FAIL]
    warned = [f for f in findings if f.status == WARN]
    print(f"\n{len(findings)} checks: {len(failed)} FAIL, {len(warned)} WARN")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""One rule for configuration, everywhere: **the environment wins over `.env`**.

Dagster's CLI (`dagster dev`, so `make up`, and `dagster asset materialize` …) reads `.env` from the working
directory with python-dotenv and puts its values *over* the process environment. So `.env` is written (by
`make env`, from `.env.example`) with every active line as `NAME=${NAME:-default}`: python-dotenv, the shell
(`set -a; . ./.env`) and docker compose all expand it to the environment's value when one is set, else to the
default — the environment wins for Dagster, the doctor, the metrics and the Makefile alike. A line written plainly
(`NAME=value`, e.g. by hand or by an older `make env`) wins over the environment for all of them, the same way;
`make doctor` names every such line whose value hides a different one of the environment.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from dotenv import dotenv_values

from resources.urls import redact

_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")


def apply_env_file(path: Path = Path(".env")) -> list[str]:
    """Put `.env` into this process's environment exactly as Dagster's CLI does, and return a sentence for each
    plain line that hides a different value the environment had (secrets never shown)."""
    if not path.is_file():
        return []
    before = dict(os.environ)
    values = {k: v for k, v in dotenv_values(path).items() if v is not None}  # as Dagster: dagster/_cli/utils.py
    hidden = []
    for line in path.read_text().splitlines():
        match = _LINE.match(line)
        if not match or line.lstrip().startswith("#"):
            continue
        name, raw = match.groups()
        if "${" + name not in raw and name in before and name in values and before[name] != values[name]:
            shown = (f"{redact(before[name])!r} by {redact(values[name])!r}" if name.endswith("_URL")
                     else "the environment's value by another")
            hidden.append(f"{path} sets {name} plainly, so Dagster's CLI (make up, dagster …) and this command "
                          f"replace {shown}: write it as {name}=${{{name}:-…}} to let the environment win")
    os.environ.update(values)
    return hidden

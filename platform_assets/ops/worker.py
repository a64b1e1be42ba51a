"""`make worker`: a Dagster Celery worker for this code location on this host. It takes the steps of runs whose
executor is `AEGIS_EXECUTOR=celery` from the broker (`AEGIS_CELERY_BROKER`) and runs them against the instance
in `DAGSTER_HOME` (which must be the same PostgreSQL-backed instance on every host) with this host's `AEGIS_*`
settings (the same URLs on every host: servers and object stores, not files).

    python -m platform_assets.ops.worker [--queue dagster] [--name aegis-worker] [--concurrency N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import yaml

from resources.execution import celery_config


def worker_config(directory: Path) -> Path:
    """The executor block `dagster-celery worker start -y` reads: the same broker, backend and settings a run uses."""
    path = directory / "celery.yaml"
    path.write_text(yaml.safe_dump({"execution": {"config": celery_config()}}))
    return path


def command(config: Path, queue: str, name: str, concurrency: int | None = None) -> list[str]:
    binary = str(Path(sys.executable).parent / "dagster-celery")
    binary = binary if os.path.exists(binary) else shutil.which("dagster-celery") or "dagster-celery"
    extra = [f"--concurrency={concurrency}"] if concurrency else []
    return [binary, "worker", "start", "-A", "dagster_celery.app", "-y", str(config), "-q", queue, "-n", name,
            *(["--", *extra] if extra else [])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queue", default=os.environ.get("AEGIS_CELERY_QUEUE") or "dagster")
    parser.add_argument("--name", default=f"aegis-{socket.gethostname()}")
    parser.add_argument("--concurrency", type=int, default=None, help="steps at once (default: the cores)")
    args = parser.parse_args(argv)
    if not os.environ.get("DAGSTER_HOME"):
        print("DAGSTER_HOME is not set: a worker needs the instance (dagster.yaml on PostgreSQL) its runs use",
              file=sys.stderr)
        return 2
    config = worker_config(Path(tempfile.mkdtemp(prefix="aegis-worker-")))
    argv = command(config, args.queue, args.name, args.concurrency)
    # dagster-celery starts `celery` from the PATH: this interpreter's own, also when the venv is not activated
    bindir = str(Path(sys.executable).parent)
    os.execve(argv[0], argv, {**os.environ, "PATH": os.pathsep.join([bindir, os.environ.get("PATH", "")])})


if __name__ == "__main__":
    sys.exit(main())

"""`make worker` processes for the scale-out bench and tests: each in its own working directory with its own
DAGSTER_HOME (a copy of the same dagster.yaml, as another host would have), so nothing a step leaves on one
worker's disk can reach another; started until Celery says it is ready, killed or stopped at will."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path


class Workers:
    def __init__(self, env: dict[str, str], work: Path, concurrency: int = 1) -> None:
        self.env, self.work, self.concurrency = env, work, concurrency
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str) -> None:
        home = self.work / name
        (home / "dagster_home").mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(self.env["DAGSTER_HOME"]) / "dagster.yaml", home / "dagster_home" / "dagster.yaml")
        log = home / "worker.log"
        with open(log, "ab") as out:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "platform_assets.ops.worker", "--name", name,
                 "--concurrency", str(self.concurrency), "--queue", self.env["AEGIS_CELERY_QUEUE"]],
                cwd=home, env={**self.env, "DAGSTER_HOME": str(home / "dagster_home")}, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 90
        while b"ready." not in log.read_bytes():
            if self.procs[name].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {name} did not start: {log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)

    def kill(self, name: str) -> None:
        os.killpg(self.procs[name].pid, signal.SIGKILL)
        self.procs[name].wait()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()

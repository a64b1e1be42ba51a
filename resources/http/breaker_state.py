"""A circuit breaker's state kept in a small JSON file (in the lake), so it holds across runs and processes.

pybreaker reads and writes its state through a `CircuitBreakerStorage`; this one reads the file on every
access and writes it whole (atomically) on every change. Two processes may race on a counter; the worst
outcome is one failure counted once instead of twice, never a breaker stuck open.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable

import pyarrow.fs as pafs
import pybreaker


class StoredBreakerState(pybreaker.CircuitBreakerStorage):
    def __init__(self, path: str, fs: pafs.FileSystem, write: Callable[[str, bytes], None]) -> None:
        super().__init__("stored")
        self._path, self._fs, self._write = path, fs, write

    def _load(self) -> dict:
        try:
            with self._fs.open_input_stream(self._path) as f:
                return json.loads(f.read())
        except (FileNotFoundError, OSError, json.JSONDecodeError):
            return {"state": pybreaker.STATE_CLOSED, "failures": 0, "successes": 0, "opened_at": None}

    def _change(self, **values) -> None:
        self._write(self._path, json.dumps({**self._load(), **values}).encode())

    @property
    def state(self) -> str:
        return self._load()["state"]

    @state.setter
    def state(self, state: str) -> None:
        self._change(state=state)

    def increment_counter(self) -> None:
        self._change(failures=self._load()["failures"] + 1)

    def reset_counter(self) -> None:
        self._change(failures=0)

    def increment_success_counter(self) -> None:
        self._change(successes=self._load()["successes"] + 1)

    def reset_success_counter(self) -> None:
        self._change(successes=0)

    @property
    def counter(self) -> int:
        return self._load()["failures"]

    @property
    def success_counter(self) -> int:
        return self._load()["successes"]

    @property
    def opened_at(self) -> dt.datetime | None:
        value = self._load()["opened_at"]
        return dt.datetime.fromisoformat(value) if value else None

    @opened_at.setter
    def opened_at(self, when: dt.datetime) -> None:
        self._change(opened_at=when.isoformat())

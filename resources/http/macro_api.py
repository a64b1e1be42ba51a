"""MacroSeriesApi: the central bank's public time series (SGS) over HTTP, failing gracefully.

`GET {base}/dados/serie/bcdata.sgs.{code}/dados?formato=json&dataInicial=dd/mm/aaaa&dataFinal=dd/mm/aaaa`
answers `[{"data": "dd/mm/aaaa", "valor": "0.52"}, …]` (IPCA monthly % = 433, Selic target = 432).

- Every request has a connect and a read timeout.
- Timeouts, connection errors, 429 (its Retry-After honoured) and 5xx are retried with exponential backoff and
  jitter (tenacity), bounded in attempts and in total time; any other 4xx, or a body that is not the
  expected JSON, fails at once with a message naming the URL.
- A circuit breaker (pybreaker) opens after `breaker_failures` consecutive failed fetches, fails fast while
  open, and lets one probe through after `breaker_reset_seconds`. Its state is kept in the lake
  (`<lake>/_aegis/macro_api_breaker.json`), so it holds across runs and processes.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass
from typing import ClassVar

import dagster as dg
import pybreaker
import requests
import tenacity

from resources.http.breaker_state import StoredBreakerState
from resources.lake.lake import Lake
from resources.urls import ConfigurationError, redact

DEFAULT_URL = "https://api.bcb.gov.br"
SERIES = {"ipca_monthly_pct": 433, "selic_target_pct": 432}


class MacroApiError(RuntimeError):
    """The API answered something it should not (a 4xx other than 429, a body that is not the series)."""


class MacroApiUnavailable(MacroApiError):
    """The API could not be reached or kept failing after the retries, or the breaker is open."""


class MacroApiGarbage(MacroApiUnavailable):
    """The API answered 2xx with a body that is not the series (an HTML error page, a JSON object): the body is
    kept, as received, for whoever looks into it. Counted by the breaker like any failed fetch."""

    def __init__(self, message: str, url: str, status: int, body: bytes) -> None:
        super().__init__(message)
        self.url, self.status, self.body = url, status, body


class _Transient(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Fetched:
    url: str
    status: int
    body: bytes  # exactly as received
    rows: list[dict]  # the parsed JSON array
    attempts: int
    seconds: float


class MacroSeriesApi(dg.ConfigurableResource):
    """A client for SGS series with timeouts, retries, a circuit breaker kept in the lake."""

    lake: Lake
    base_url: str = DEFAULT_URL
    connect_timeout: float = 3.0
    read_timeout: float = 10.0
    attempts: int = 4
    total_seconds: float = 60.0  # no fetch takes longer, whatever the retries
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 8.0
    breaker_failures: int = 3
    breaker_reset_seconds: float = 300.0
    ENV_VAR: ClassVar[str] = "AEGIS_MACRO_API_URL"

    @property
    def display(self) -> str:
        """The base URL as it may be shown (a password in it replaced by ***)."""
        return redact(self.base_url)

    def url(self, code: int, start: dt.date, end: dt.date) -> str:
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigurationError(f"{self.ENV_VAR}={self.display!r} is not an http(s):// URL; expected e.g. "
                                     f"{DEFAULT_URL}")
        return (f"{self.base_url.rstrip('/')}/dados/serie/bcdata.sgs.{int(code)}/dados?formato=json"
                f"&dataInicial={start:%d/%m/%Y}&dataFinal={end:%d/%m/%Y}")

    def _stored_state(self) -> StoredBreakerState:
        fs, root = self.lake.filesystem()
        return StoredBreakerState(f"{root}/_aegis/macro_api_breaker.json", fs, self.lake.write_file)

    def breaker(self) -> pybreaker.CircuitBreaker:
        return pybreaker.CircuitBreaker(fail_max=self.breaker_failures, reset_timeout=self.breaker_reset_seconds,
                                        state_storage=self._stored_state(), name="macro_api",
                                        throw_new_error_on_trip=False,
                                        exclude=[lambda e: type(e) is MacroApiError])

    def breaker_state(self) -> str:
        return self.breaker().current_state

    def breaker_status(self) -> dict[str, str | int | None]:
        """State, consecutive failures and when it opened, as kept in the lake (for metadata and doctor)."""
        stored = self._stored_state()
        opened = stored.opened_at
        return {"state": stored.state, "failures": stored.counter,
                "opened_at": opened.isoformat() if opened else None, "fail_max": self.breaker_failures}

    def fetch(self, code: int, start: dt.date, end: dt.date) -> Fetched:
        url = self.url(code, start, end)
        try:
            return self.breaker().call(self._fetch_with_retries, url)
        except pybreaker.CircuitBreakerError:
            raise MacroApiUnavailable(
                f"{self.ENV_VAR}={self.display}: circuit breaker open after {self.breaker_failures} failed fetches; "
                f"not calling {redact(url)} until {self.breaker_reset_seconds:.0f} s after it opened") from None

    def _fetch_with_retries(self, url: str) -> Fetched:
        started, attempts = time.monotonic(), 0
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts) | tenacity.stop_after_delay(self.total_seconds),
            wait=self._wait, retry=tenacity.retry_if_exception_type(_Transient), reraise=True)
        try:
            for attempt in retrying:
                with attempt:
                    attempts += 1
                    status, body = self._get(url, started)
        except _Transient as exc:
            raise MacroApiUnavailable(f"{self.ENV_VAR}={self.display}: {redact(url)} failed {attempts} time(s) in "
                                      f"{time.monotonic() - started:.1f} s; last: {exc}") from None
        seconds = round(time.monotonic() - started, 3)
        try:
            rows = _parse(url, body)
        except MacroApiError as exc:
            raise MacroApiGarbage(f"{exc} (after {attempts} attempt(s), {seconds} s)", url, status, body) from None
        return Fetched(url, status, body, rows, attempts, seconds)

    def _wait(self, state: tenacity.RetryCallState) -> float:
        backoff = tenacity.wait_exponential_jitter(initial=self.backoff_seconds, max=self.max_backoff_seconds)(state)
        error = state.outcome.exception() if state.outcome else None
        wanted = getattr(error, "retry_after", None)
        return min(max(backoff, wanted or 0.0), self.total_seconds)

    def _get(self, url: str, started: float) -> tuple[int, bytes]:
        left = self.total_seconds - (time.monotonic() - started)
        try:
            response = requests.get(url, timeout=(self.connect_timeout, min(self.read_timeout, max(left, 0.1))),
                                    headers={"Accept": "application/json"})
            body = response.content
        except requests.Timeout as exc:
            raise _Transient(f"timeout ({type(exc).__name__})") from None
        except requests.ConnectionError as exc:
            raise _Transient(f"connection error: {redact(str(exc))[:200]}") from None
        if response.status_code == 429:
            raise _Transient("429 Too Many Requests", _retry_after(response.headers.get("Retry-After")))
        if response.status_code >= 500:
            raise _Transient(f"{response.status_code} {response.reason}")
        if response.status_code >= 400:
            raise MacroApiError(f"{redact(url)} answered {response.status_code} {response.reason}: "
                                f"{body[:200].decode(errors='replace')} (not retried: the request itself is wrong)")
        return response.status_code, body


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        try:
            when = dt.datetime.strptime(value, "%a, %d %b %Y %H:%M:%S GMT").replace(tzinfo=dt.UTC)
        except ValueError:
            return None
        return max((when - dt.datetime.now(dt.UTC)).total_seconds(), 0.0)


def _parse(url: str, body: bytes) -> list[dict]:
    """The JSON array; numbers keep their exact text (never through a float)."""
    try:
        rows = json.loads(body, parse_float=str, parse_int=str, parse_constant=str)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MacroApiError(f"{redact(url)} answered a body that is not JSON ({exc}): {body[:120]!r}") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise MacroApiError(f"{redact(url)} answered JSON that is not a list of observations: {body[:120]!r}")
    return rows


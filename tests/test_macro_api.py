"""MacroSeriesApi against a real HTTP server on loopback, scripted answer by answer: retries only what is
transient, honours Retry-After, never loops unbounded, and its circuit breaker holds across instances."""

import datetime as dt
import json
import time

import pytest

from bench.dagster_server import free_port
from resources import Lake
from resources.http.macro_api import MacroApiError, MacroApiUnavailable, MacroSeriesApi
from tests.scripted_http import GOOD, Scripted

START, END = dt.date(2026, 1, 1), dt.date(2026, 3, 31)


@pytest.fixture
def api(tmp_path):
    def make(url: str, **settings) -> MacroSeriesApi:
        defaults = {"connect_timeout": 0.5, "read_timeout": 0.5, "attempts": 3, "total_seconds": 10.0,
                    "backoff_seconds": 0.05, "max_backoff_seconds": 0.2, "breaker_failures": 2,
                    "breaker_reset_seconds": 1.0}
        return MacroSeriesApi(lake=Lake(url=f"file://{tmp_path}/lake"), base_url=url, **{**defaults, **settings})
    return make


def test_normal_data_comes_back_as_received_with_its_url(api):
    server = Scripted()
    fetched = api(server.url).fetch(433, START, END)
    assert fetched.rows == GOOD and json.loads(fetched.body) == GOOD and fetched.attempts == 1
    assert fetched.url.endswith("/dados/serie/bcdata.sgs.433/dados?formato=json&dataInicial=01/01/2026"
                                "&dataFinal=31/03/2026") and server.requests[0][1] in fetched.url
    server.stop()


def test_5xx_then_success_is_retried_and_counted(api):
    server = Scripted((500, b"oops", {}, 0.0), (503, b"busy", {}, 0.0))
    fetched = api(server.url).fetch(433, START, END)
    assert fetched.rows == GOOD and fetched.attempts == 3 and len(server.requests) == 3
    server.stop()


def test_a_slow_body_hits_the_read_timeout_and_is_retried(api):
    server = Scripted((200, GOOD, {}, 2.0))
    started = time.monotonic()
    fetched = api(server.url).fetch(433, START, END)
    assert fetched.attempts == 2 and time.monotonic() - started < 2.0, "the slow answer was not waited for"
    server.stop()


def test_429_waits_as_long_as_retry_after_says(api):
    server = Scripted((429, b"slow down", {"Retry-After": "1"}, 0.0))
    fetched = api(server.url).fetch(433, START, END)
    (first, _), (second, _) = server.requests
    assert fetched.attempts == 2 and second - first >= 1.0
    server.stop()


def test_404_is_not_retried_and_says_why(api):
    server = Scripted((404, b"no such series", {}, 0.0))
    with pytest.raises(MacroApiError, match="answered 404.*not retried") as error:
        api(server.url).fetch(999999, START, END)
    assert not isinstance(error.value, MacroApiUnavailable) and len(server.requests) == 1
    server.stop()


@pytest.mark.parametrize("body", [b"<html>maintenance</html>", b'{"data": "01/01/2026"}'])
def test_a_body_that_is_not_the_series_is_a_clear_error(api, body):
    server = Scripted((200, body, {}, 0.0))
    with pytest.raises(MacroApiError, match="answered"):
        api(server.url).fetch(433, START, END)
    server.stop()


def test_a_server_down_opens_the_breaker_which_fails_fast_then_a_probe_closes_it(api):
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for _ in range(2):  # two fetches, each after its retries: the breaker opens
        with pytest.raises(MacroApiUnavailable, match="failed 3 time"):
            api(down).fetch(433, START, END)
    later_run = api(down)  # a new resource instance, as a later run would build: the state is in the lake
    assert later_run.breaker_state() == "open"
    started = time.monotonic()
    with pytest.raises(MacroApiUnavailable, match="circuit breaker open"):
        later_run.fetch(433, START, END)
    assert time.monotonic() - started < 0.2, "fails fast while open"

    time.sleep(1.1)  # the reset timeout passes, and the API is back (here: a server at a new port, same lake)
    server = Scripted()
    back = api(server.url)
    assert back.fetch(433, START, END).rows == GOOD, "the half-open probe went through"
    assert back.breaker_state() == "closed" and len(server.requests) == 1
    server.stop()


def test_every_request_loop_is_bounded_in_time(api):
    server = Scripted(after=(503, b"busy", {}, 0.0))
    started = time.monotonic()
    with pytest.raises(MacroApiUnavailable, match="failed"):
        api(server.url, attempts=100, total_seconds=1.0, backoff_seconds=0.2, max_backoff_seconds=0.4).fetch(
            433, START, END)
    assert time.monotonic() - started < 2.0 and len(server.requests) < 10
    server.stop()

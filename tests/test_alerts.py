"""quality_alerts posts exactly once per failure to a real local webhook, and survives it being down."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest

from platform_assets.quality.gates import gated
from sensors.alerts import WEBHOOK_VAR, build_alert_sensor


class Webhook:
    """A local HTTP server that records every JSON body POSTed to it."""

    def __init__(self, port: int = 0):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alerts"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dg.asset
def always_fails():
    raise RuntimeError("upstream exploded")


@dg.asset
def fine_asset() -> int:
    return 1


@dg.asset_check(asset=fine_asset)
@gated
def too_few_rows(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False, description="2 rows, expected at least 100")


class Ticker:
    def __init__(self, instance):
        self.sensor, self.instance, self.cursor = build_alert_sensor([fine_asset.key]), instance, None

    def tick(self) -> str:
        context = dg.build_sensor_context(instance=self.instance, cursor=self.cursor)
        result = self.sensor.evaluate_tick(context)
        self.cursor = result.cursor or context.cursor
        return result.skip_message


def fail_once(instance) -> None:
    """One failed run and, in another run that succeeds, one failed check."""
    dg.materialize([always_fails], instance=instance, raise_on_error=False)
    dg.materialize([fine_asset, too_few_rows], instance=instance, raise_on_error=False)


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


def test_each_failure_is_posted_exactly_once(instance, monkeypatch):
    webhook = Webhook()
    monkeypatch.setenv(WEBHOOK_VAR, webhook.url)
    ticker = Ticker(instance)
    dg.materialize([always_fails], instance=instance, raise_on_error=False)  # history before the sensor
    assert "caught up" in ticker.tick()
    assert webhook.received == [], "failures from before the sensor started are not alerted"

    fail_once(instance)
    assert "2 new alert(s), 2 delivered, 0 waiting" in ticker.tick()
    ticker.tick()
    ticker.tick()
    assert sorted(a["kind"] for a in webhook.received) == ["asset_check_failed", "run_failed"]
    check = next(a for a in webhook.received if a["kind"] == "asset_check_failed")
    assert check["asset"] == "fine_asset" and check["check"] == "too_few_rows"
    assert "expected at least 100" in check["description"]
    run = next(a for a in webhook.received if a["kind"] == "run_failed")
    assert run["job"] == "__ephemeral_asset_job__"
    webhook.stop()


def test_a_dead_webhook_never_breaks_the_sensor_and_alerts_arrive_once_it_is_back(instance, monkeypatch):
    webhook = Webhook()
    port = webhook.port
    webhook.stop()  # the webhook is down
    monkeypatch.setenv(WEBHOOK_VAR, f"http://127.0.0.1:{port}/alerts")
    ticker = Ticker(instance)
    ticker.tick()
    fail_once(instance)
    assert "2 new alert(s), 0 delivered, 2 waiting" in ticker.tick()
    assert "0 new alert(s), 0 delivered, 2 waiting" in ticker.tick()

    revived = Webhook(port)  # back on the same address
    assert "0 new alert(s), 2 delivered, 0 waiting" in ticker.tick()
    ticker.tick()
    assert len(revived.received) == 2
    revived.stop()


def test_without_a_webhook_alerts_are_logged_and_not_kept(instance, monkeypatch):
    monkeypatch.delenv(WEBHOOK_VAR, raising=False)
    ticker = Ticker(instance)
    ticker.tick()
    fail_once(instance)
    assert "2 new alert(s), 0 delivered, 0 waiting" in ticker.tick()

"""A synthetic SGS server on loopback: answers the central bank's series URL format with deterministic values
for any date range, so that the headless demo and the test suite run the macro flow without the internet
(the data of the demo is synthetic anyway). Production reads the real API (`AEGIS_MACRO_API_URL`).

IPCA (433) has one observation per month, dated the 1st, for the months that began 40 days or more before
the end of the range (published late, as the real one); Selic target (432) one per weekday. Values are plain
decimal text.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

_PATH = re.compile(r"/dados/serie/bcdata\.sgs\.(\d+)/dados")


def _noise(code: int, day: dt.date) -> int:
    return int(hashlib.sha256(f"{code}:{day}".encode()).hexdigest()[:6], 16) % 100


def observations(code: int, first: dt.date, last: dt.date) -> list[dict]:
    """The synthetic series `code` between two dates, as SGS answers it."""
    rows, day = [], first
    while day <= last:
        if code == 433 and day.day == 1 and day <= last - dt.timedelta(days=40):  # a month is published late
            rows.append({"data": f"{day:%d/%m/%Y}", "valor": f"{(_noise(code, day) - 20) / 100:.2f}"})
        elif code == 432 and day.weekday() < 5:
            rows.append({"data": f"{day:%d/%m/%Y}", "valor": f"{14 + (day.toordinal() // 45) % 4 * 0.25:.2f}"})
        day += dt.timedelta(days=1)
    return rows


class SyntheticSgs:
    """`with SyntheticSgs() as url:` a server on a free loopback port; `requests` counts what it answered."""

    def __init__(self) -> None:
        self.requests = 0
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                mirror.requests += 1
                url = urlparse(self.path)
                query = parse_qs(url.query)
                match = _PATH.fullmatch(url.path)
                try:
                    first, last = (dt.datetime.strptime(query[k][0], "%d/%m/%Y").date()
                                   for k in ("dataInicial", "dataFinal"))
                except (KeyError, ValueError):
                    match = None
                if not match or int(match.group(1)) not in (432, 433):
                    self._answer(404, b'{"error": "serie nao encontrada"}')
                    return
                self._answer(200, json.dumps(observations(int(match.group(1)), first, last)).encode())

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> str:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

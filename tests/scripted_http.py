"""A real HTTP server on loopback that answers each request with the next scripted answer: the flaky API of
the macro-series tests."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GOOD = [{"data": "01/01/2026", "valor": "0.42"}, {"data": "01/02/2026", "valor": "0.31"}]


class Scripted:
    """Answers each request with the next scripted (status, body, headers, delay); then with `after`."""

    def __init__(self, *script, after=(200, GOOD, {}, 0.0)):
        self.script, self.after, self.requests = list(script), after, []
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server API
                scripted.requests.append((time.monotonic(), self.path))
                status, body, headers, delay = scripted.script.pop(0) if scripted.script else scripted.after
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                time.sleep(delay)
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

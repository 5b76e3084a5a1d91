"""A scriptable HTTP API for delivery tests: every request goes to a Python function.

``ScriptedAPI(handler)`` serves on 127.0.0.1; ``handler(method, path, headers, body)``
returns ``(status, headers, body)`` where body is a dict (sent as JSON), bytes, or the
string ``"drop"`` (the connection is closed without an answer). Every request is kept
in ``requests`` as (method, path, headers, parsed body).
"""

from __future__ import annotations

import json
import threading

from tests.loopback_http import LoopbackServer, QuietHandler


class ScriptedAPI:
    def __init__(self, handler):
        self.handler = handler
        self.requests: list[tuple[str, str, dict, object]] = []
        self.lock = threading.Lock()
        api = self

        class H(QuietHandler):
            def _handle(self):
                raw = self.read_body()
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                headers = dict(self.headers)
                with api.lock:
                    api.requests.append((self.command, self.path, headers, body))
                status, out_headers, out = api.handler(self.command, self.path, headers, body)
                if out == "drop":
                    return self.drop()
                pairs = list((out_headers or {}).items())
                if isinstance(out, bytes):
                    return self.answer(status, pairs, out)
                self.answer(status, pairs + [("Content-Type", "application/json")], json.dumps(out).encode())

            do_GET = do_PUT = do_POST = do_DELETE = _handle

        self.httpd = LoopbackServer(H)
        self.url = self.httpd.url

    def calls(self, method: str, path: str) -> list:
        with self.lock:
            return [r for r in self.requests if r[0] == method and r[1].split("?")[0] == path]

    def close(self):
        self.httpd.close()

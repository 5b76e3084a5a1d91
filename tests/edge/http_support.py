"""A scriptable HTTP API for delivery tests: every request goes to a Python function.

``ScriptedAPI(handler)`` serves on 127.0.0.1; ``handler(method, path, headers, body)``
returns ``(status, headers, body)`` where body is a dict (sent as JSON), bytes, or the
string ``"drop"`` (the connection is closed without an answer). Every request is kept
in ``requests`` as (method, path, headers, parsed body).
"""

from __future__ import annotations

import json
import socket
import threading

from edge_support import _QuietHandler, _Server


class ScriptedAPI:
    def __init__(self, handler):
        self.handler = handler
        self.requests: list[tuple[str, str, dict, object]] = []
        self.lock = threading.Lock()
        api = self

        class H(_QuietHandler):
            def _handle(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                headers = dict(self.headers)
                with api.lock:
                    api.requests.append((self.command, self.path, headers, body))
                status, out_headers, out = api.handler(self.command, self.path, headers, body)
                if out == "drop":
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                data = out if isinstance(out, bytes) else json.dumps(out).encode()
                self.send_response(status)
                for k, v in (out_headers or {}).items():
                    self.send_header(k, v)
                if not isinstance(out, bytes):
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = _handle

        self.httpd = _Server(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def calls(self, method: str, path: str) -> list:
        with self.lock:
            return [r for r in self.requests if r[0] == method and r[1].split("?")[0] == path]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

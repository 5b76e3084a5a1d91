"""The plumbing of the tests' HTTP doubles: a threaded server on a free loopback port, a quiet
keep-alive handler that answers or drops the connection, and forwarding to an upstream.

Used by the faulty AWS (tests/faulty_proxy.py, in front of moto), the edge tests' fake cloud and
fault-injecting proxy (tests/edge/edge_support.py) and their scripted API (tests/edge/http_support.py).
"""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import SplitResult

# Headers the server writes itself (send_response adds Date and Server): never relayed.
_OWN_HEADERS = ("content-length", "transfer-encoding", "connection", "date", "server")
# Request headers the forwarding connection sets itself; Host is kept (AWS signs it).
_HOP_HEADERS = ("content-length", "transfer-encoding", "connection")


class LoopbackServer(ThreadingHTTPServer):
    """A threaded HTTP server on 127.0.0.1 (a free port), serving in a daemon thread from the start."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64  # many agents' or SDK threads' connections at once

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        super().__init__(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive like the real services, no Nagle delay, no request log on stderr."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *_args):
        pass

    def read_body(self) -> bytes:
        """The request's body, sent with a Content-Length or chunked (the AWS SDK streams some)."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def drop(self) -> None:
        """Close the connection without an answer."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def answer(self, status: int, headers: Iterable[tuple[str, str]], data: bytes) -> None:
        """Send ``data`` with these (name, value) headers, less those the server writes itself;
        a client gone meanwhile just closes the connection."""
        try:
            self.send_response(status)
            for name, value in headers:
                if name.lower() not in _OWN_HEADERS:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True


def forward(upstream: SplitResult, method: str, path: str, headers, body: bytes) -> tuple[int, list, bytes]:
    """(status, header pairs, body) of the request sent on to ``upstream`` (its path prefixed).
    Raises OSError when the upstream cannot be reached or breaks off."""
    assert upstream.hostname, f"no host in the upstream URL {upstream.geturl()}"
    connection = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
    try:
        sent = {k: v for k, v in headers.items() if k.lower() not in _HOP_HEADERS}
        sent["Content-Length"] = str(len(body))
        connection.request(method, (upstream.path or "").rstrip("/") + path, body=body, headers=sent)
        answer = connection.getresponse()
        data = answer.read()
        return answer.status, answer.getheaders(), data
    finally:
        connection.close()

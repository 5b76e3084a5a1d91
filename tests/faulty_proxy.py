"""A faulty AWS: an HTTP proxy in front of the moto server that fails a seeded random share of the calls.

The API's AWS endpoint (AWS_ENDPOINT_URL) points here instead of at moto. Per call it either
forwards, or (with probability ``rate``) does what AWS and networks do:

* ``throttle``: the service's throttling answer (DynamoDB ProvisionedThroughputExceededException,
  KMS ThrottlingException, S3 503 SlowDown), not forwarded;
* ``500``: an internal error answer (DynamoDB InternalServerError, KMS KMSInternalException, S3
  InternalError), not forwarded;
* ``drop``: the connection closed without an answer, not forwarded;
* ``hang``: no answer until past the client's read timeout, then closed, not forwarded;
* ``lost``: forwarded (moto carries it out), then the connection closed: the answer is lost.

``outage(seconds)`` fails every call (``drop``) for a while: a region having a bad minute.
The service is told by the request (X-Amz-Target for DynamoDB and KMS, else S3).
"""
import http.client
import random
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

KINDS = ("throttle", "500", "drop", "hang", "lost")

_ANSWERS = {   # service → kind → (status, content type, body)
    "dynamodb": {
        "throttle": (400, "application/x-amz-json-1.0",
                     b'{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",'
                     b'"message":"injected: throughput exceeded"}'),
        "500": (500, "application/x-amz-json-1.0",
                b'{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"injected"}'),
    },
    "kms": {
        "throttle": (400, "application/x-amz-json-1.1", b'{"__type":"ThrottlingException","message":"injected"}'),
        "500": (500, "application/x-amz-json-1.1", b'{"__type":"KMSInternalException","message":"injected"}'),
    },
    "s3": {
        "throttle": (503, "application/xml",
                     b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
                     b"<Message>injected</Message></Error>"),
        "500": (500, "application/xml",
                b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>InternalError</Code>"
                b"<Message>injected</Message></Error>"),
    },
}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64


class FaultyAwsProxy:
    """A threaded HTTP proxy to ``upstream`` (the moto server) failing a share ``rate`` of the calls."""

    def __init__(self, upstream, rate=0.1, seed=0, hang_seconds=5.0, kinds=KINDS):
        self.upstream = urlsplit(upstream)
        self.rate = rate
        self.kinds = tuple(kinds)
        self.hang_seconds = hang_seconds
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.calls = 0
        self.faults = Counter()
        self.by_service = Counter()
        self._outage_until = 0.0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args):
                pass

            def _handle(self):
                body = self._body()
                service = _service(self.headers)
                kind = proxy._pick(service)
                if kind in ("drop", "outage"):
                    return self._drop()
                if kind == "hang":
                    time.sleep(proxy.hang_seconds)
                    return self._drop()
                if kind in ("throttle", "500"):
                    status, media_type, data = _ANSWERS[service][kind]
                    return self._answer(status, [("Content-Type", media_type)], data)
                try:
                    status, headers, data = proxy._forward(self.command, self.path, self.headers, body)
                except OSError:
                    return self._drop()
                if kind == "lost":
                    return self._drop()
                self._answer(status, headers, data)

            def _body(self):
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

            def _drop(self):
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            def _answer(self, status, headers, data):
                try:
                    self.send_response(status)
                    for name, value in headers:
                        if name.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"):
                            self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    self.close_connection = True

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def failed_share(self):
        """The share of AWS calls that failed (outages included)."""
        return sum(self.faults.values()) / self.calls if self.calls else 0.0

    def outage(self, seconds):
        """Fail every call for the next seconds."""
        self._outage_until = time.monotonic() + seconds

    def _pick(self, service):
        with self.lock:
            self.calls += 1
            self.by_service[service] += 1
            if time.monotonic() < self._outage_until:
                kind = "outage"
            elif self.rng.random() < self.rate:
                kind = self.rng.choice(self.kinds)
            else:
                return None
            self.faults[kind] += 1
            return kind

    def _forward(self, method, path, headers, body):
        connection = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=60)
        try:
            sent = {k: v for k, v in headers.items() if k.lower() not in ("connection", "transfer-encoding",
                                                                          "content-length")}
            sent["Content-Length"] = str(len(body))
            connection.request(method, path, body=body, headers=sent)
            answer = connection.getresponse()
            data = answer.read()
            return answer.status, answer.getheaders(), data
        finally:
            connection.close()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _service(headers):
    target = headers.get("X-Amz-Target", "")
    if target.startswith("DynamoDB"):
        return "dynamodb"
    if target.startswith("TrentService"):
        return "kms"
    return "s3"

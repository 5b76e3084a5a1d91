"""The embedded AWS of `make run`: moto's server, its state kept in a directory across runs (tools/aws_state.py).

`python -m tools.aws_server --port 5000 --state .local/stack-8000/aws-state` serves moto like
`python -m moto.server`, after loading the state a previous run saved. Every request passes a
gate and tells the store what it may change (a table's partition, a bucket's objects, the rest);
every SAVE_EVERY seconds the gate closes for as long as it takes to pickle what changed, and the
files are written while requests flow again. On SIGTERM or SIGINT it stops serving, saves what
changed since the last save, and exits without tearing down its objects one by one.

`--port 0` binds a port the kernel chooses; `--ready-file` gets {"pid", "port"} once it serves.

As S3 does, it answers a browser's cross-origin requests by the bucket's own CORS rules only (moto's
server would otherwise allow every origin on every service).
"""
import argparse
import contextlib
import io
import ipaddress
import json
import os
import re
import signal
import sys
import threading
import time
import urllib.parse

from tools.aws_state import ALL, Store
from tools.processes import write_ready

SAVE_EVERY = 5.0
PAUSE_AT_MOST = 2.0     # seconds a periodic save waits for the requests inside the gate
# DynamoDB operations that change nothing; the item writes name their keys; anything else may change a table.
DYNAMODB_READS = {"GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems", "DescribeTable", "ListTables",
                  "DescribeTimeToLive", "ListTagsOfResource", "DescribeContinuousBackups", "DescribeLimits",
                  "DescribeEndpoints"}
# S3 query parameters of object writes that replace or delete whole objects (others may change one in place).
S3_OBJECT_WRITES = {"x-id", "uploadId", "partNumber", "uploads", "delete", "versionId"}
_SCOPE = re.compile(r"Credential=[^/,\s]+/[^/]+/[^/]+/([^/]+)/")


class Busy(Exception):
    """Requests inside the gate did not finish in time (a long poll): the save waits for the next turn."""


class Gate:
    """Requests pass together; a save closes the gate, waits for those inside, and opens it again.

    A periodic save waits at most `timeout` for the requests inside (an SQS long poll can last 20 s,
    and new requests wait behind a closed gate): past it the gate opens again and the save is skipped.
    """

    def __init__(self):
        self._condition = threading.Condition()
        self._inside = 0
        self._closed = False

    @contextlib.contextmanager
    def request(self):
        with self._condition:
            while self._closed:
                self._condition.wait()
            self._inside += 1
        try:
            yield
        finally:
            with self._condition:
                self._inside -= 1
                self._condition.notify_all()

    @contextlib.contextmanager
    def closed(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            while self._closed:
                self._condition.wait()
            self._closed = True
            while self._inside:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    self._closed = False
                    self._condition.notify_all()
                    raise Busy()
                self._condition.wait(left)
        try:
            yield
        finally:
            with self._condition:
                self._closed = False
                self._condition.notify_all()


def _service(environ):
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target.startswith("DynamoDB_"):
        return "dynamodb"
    scope = _SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    if scope:
        return scope.group(1)
    query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
    credential = (query.get("X-Amz-Credential") or [""])[0].split("/")
    return credential[3] if len(credential) > 3 else None


def _path_style(environ):
    host = (environ.get("HTTP_HOST") or "").rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def changes(environ):
    """What this request may change, as the Store's touch calls [(method, args)]; a DynamoDB request's body is
    read (and put back for moto)."""
    service = _service(environ)
    method = environ.get("REQUEST_METHOD", "GET")
    if service == "dynamodb":
        action = environ.get("HTTP_X_AMZ_TARGET", "").partition(".")[2]
        if action in DYNAMODB_READS:
            return []
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            return [("touch_table", (ALL,))]
        return _dynamodb_changes(action, request if isinstance(request, dict) else {})
    if service == "s3":
        if method in ("GET", "HEAD", "OPTIONS"):
            return []
        if not _path_style(environ):
            return [("touch_bucket", (ALL, True))]
        bucket, _slash, key = environ.get("PATH_INFO", "/").lstrip("/").partition("/")
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        # A bucket's settings (?encryption, ?lifecycle...) are in the skeleton; an object's (?acl, ?retention...)
        # change it in place, unseen by the comparison of objects: its whole bucket then.
        in_place = bool(key) and bool(set(query) - S3_OBJECT_WRITES)
        return [("touch_bucket", (bucket or ALL, in_place))]
    if service is None:                 # unsigned: moto's own API (/moto-api/reset...) or unknown
        return [("touch_all", ())]
    return [("touch", ())]              # SQS, KMS: the skeleton


def _table(name):
    """A table's name, given as its name or its ARN (arn:aws:dynamodb:REGION:ACCOUNT:table/NAME)."""
    if isinstance(name, str) and name.startswith("arn:") and ":table/" in name:
        return name.split(":table/", 1)[1].split("/", 1)[0]
    return name


def _dynamodb_changes(action, request):
    if action in ("PutItem", "UpdateItem", "DeleteItem"):
        return [("touch_item", (_table(request.get("TableName")), request.get("Item") or request.get("Key")))]
    if action == "BatchWriteItem":
        return [("touch_item", (_table(table), (write.get("PutRequest") or {}).get("Item")
                                or (write.get("DeleteRequest") or {}).get("Key")))
                for table, writes in (request.get("RequestItems") or {}).items() for write in writes]
    if action == "TransactWriteItems":
        return [("touch_item", (_table(operation[kind].get("TableName")), operation[kind].get("Item")
                                or operation[kind].get("Key")))
                for operation in request.get("TransactItems") or [] for kind in ("Put", "Update", "Delete")
                if kind in operation]
    return [("touch_table", (_table(request.get("TableName")) or ALL,))]


class Recorder:
    """WSGI middleware before moto's app: each request passes the gate, and what it may change is noted in the
    store unless it was refused (a 4xx changes nothing: provisioning's CreateTable of a table that exists
    must not make the next save rewrite that table)."""

    def __init__(self, app, store, gate):
        self.app, self.store, self.gate = app, store, gate

    def __call__(self, environ, start_response):
        with self.gate.request():
            touches = changes(environ)
            status = []

            def starting(code, headers, exc_info=None):
                status.append(int(code.split()[0]))
                return start_response(code, headers, exc_info)

            result = self.app(environ, starting)
            if not (status and 400 <= status[0] < 500):
                for name, args in touches:
                    getattr(self.store, name)(*args)
            return result


def make_server(host, port, store, gate):
    """moto's server application behind the Recorder, on a threaded werkzeug server (port 0: any)."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server as werkzeug_server

    app = Recorder(DomainDispatcherApplication(create_backend_app), store, gate)
    return werkzeug_server(host, port, app, threaded=True, request_handler=MotoRequestHandler)


def _report(what, result):
    if result is not None:
        files, size, seconds = result
        print(f"{what}: {files} files, {size / 1e6:.1f} MB in {seconds:.2f} s", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    parser.add_argument("--state", required=True, help="the directory the state is kept in")
    parser.add_argument("--ready-file", help="written with the pid and port once serving")
    parser.add_argument("--save-every", type=float, default=SAVE_EVERY, help="seconds between saves")
    args = parser.parse_args(argv)
    os.environ["MOTO_DISABLE_GLOBAL_CORS"] = "true"   # read when moto is first imported (the state's load, below)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    store, gate = Store(args.state), Gate()
    started = time.perf_counter()
    restored = store.load()
    print(f"state {'restored from' if restored else 'new; kept in'} {args.state} "
          f"({time.perf_counter() - started:.1f} s)", flush=True)
    if store.dirty():                       # new, or the one-file state of an earlier version
        _report("state saved", store.save())
    try:
        server = make_server(args.host, args.port, store, gate)
    except OSError as error:
        print(f"cannot serve on {args.host}:{args.port}: {error}", file=sys.stderr, flush=True)
        return 2
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    print(f"moto serving on http://{args.host}:{port}", flush=True)
    if args.ready_file:
        write_ready(args.ready_file, port)
    while not stopping.wait(args.save_every):
        try:
            _report("saved", store.save(gate.closed(timeout=PAUSE_AT_MOST)))
        except Busy:
            pass
        except OSError as error:            # a full disk: keep serving, write everything next time
            print(f"could not save the state: {error}", file=sys.stderr, flush=True)
    stop_started = time.perf_counter()
    server.shutdown()
    result = store.save(gate.closed())
    files, size, _seconds = result or (0, 0, 0)
    print(f"stopped: {files} files, {size / 1e6:.1f} MB saved, in {time.perf_counter() - stop_started:.2f} s",
          flush=True)
    return 0


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)      # skip tearing down millions of objects one by one: the state is saved

"""Test doubles for the edge agent: a fake cloud, a fault-injecting proxy, a pty pair.

* ``FakeCloud`` implements PUT /point, POST /data and PUT /status with the contract's
  receipt semantics (accepted / duplicates / rejected by index with a ``code``, 413
  above the batch bound, 401 on a bad key) and an optional delay after storing a
  batch (to kill an agent mid-batch). Its rejection texts are worded unlike the real
  API's on purpose: the agent must act on the code, never on the words.
* ``FaultProxy`` sits in front of any cloud (fake or the real API) and, per
  request, answers 500 or 429, drops the connection before or after forwarding,
  or answers too late (timeout) before or after forwarding.
* ``PtyPair`` links two pseudo-terminals with a thread copying bytes master <->
  master: a null-modem cable in pure Python (no socat needed).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import select
import threading
import time
import tty
from urllib.parse import urlsplit

from tests.loopback_http import LoopbackServer, QuietHandler, forward
from tools.ports import free_port  # noqa: F401  (the edge tests take it from here)


def parse_ts(s: str) -> dt.datetime:
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    t = dt.datetime.fromisoformat(s)
    if t.tzinfo is None:
        raise ValueError("no offset")
    return t.astimezone(dt.timezone.utc)


class FakeCloud:
    """An in-memory cloud with the contract's PUT /point and POST /data."""

    def __init__(self, key: str, max_batch: int = 1000, delay_after_store: float = 0.0, now=time.time):  # noqa: C901  # the fake cloud's request handler, one branch per route it plays
        self.key = key
        self.max_batch = max_batch
        self.delay_after_store = delay_after_store
        self.now = now
        self.points: dict[str, dict] = {}
        self.store: dict[tuple[str, dt.datetime], float] = {}
        self.lock = threading.Lock()
        self.posts = 0
        self.accepted = self.duplicates = self.rejected = 0
        self.rejections: list[str] = []
        self.in_flight = 0
        self.auth_failures = 0
        self.status_route = True  # False: an older cloud without PUT /status (404)
        self.status_reports: list[dict] = []
        cloud = self

        class H(QuietHandler):
            def _reply(self, code, obj):
                self.answer(code, [("Content-Type", "application/json")], json.dumps(obj).encode())

            def _body(self):
                raw = self.read_body()
                try:
                    return json.loads(raw or b"{}")
                except ValueError:
                    return None

            def _auth(self):
                if self.headers.get("X-API-Key") != cloud.key:
                    cloud.auth_failures += 1
                    self._reply(401, {"error": "missing or bad API key"})
                    return False
                return True

            def do_PUT(self):
                body = self._body()
                if not self._auth():
                    return
                if self.path.split("?")[0] == "/status" and cloud.status_route and isinstance(body, dict):
                    with cloud.lock:
                        cloud.status_reports.append(body)
                    return self._reply(200, {"clock_offset": round(cloud.now() - parse_ts(body["time"]).timestamp(), 3)})
                if self.path.split("?")[0] == "/status":
                    return self._reply(404, {"error": "no such route"})
                if self.path.split("?")[0] != "/point" or not isinstance(body, dict) or not body.get("MeterId"):
                    return self._reply(400, {"error": "MeterId required"})
                with cloud.lock:
                    p = cloud.points.setdefault(body["MeterId"], {"id": len(cloud.points) + 1})
                    p.update(body)
                    self._reply(200, dict(p))

            def do_POST(self):
                body = self._body()
                if not self._auth():
                    return
                if self.path.split("?")[0] != "/data":
                    return self._reply(404, {"error": "no such route"})
                if not isinstance(body, dict) or not isinstance(body.get("readings"), list):
                    return self._reply(400, {"error": "readings: a list is required"})
                rs = body["readings"]
                if len(rs) > cloud.max_batch:
                    return self._reply(413, {"error": f"at most {cloud.max_batch} readings per request"})
                receipt = cloud.ingest(rs)
                if cloud.delay_after_store:
                    cloud.in_flight += 1
                    time.sleep(cloud.delay_after_store)
                    cloud.in_flight -= 1
                self._reply(200, receipt)

        self.httpd = LoopbackServer(H)
        self.url = self.httpd.url

    def ingest(self, rs: list) -> dict:
        acc = dup = 0
        rej = []
        with self.lock:
            self.posts += 1
            for i, r in enumerate(rs):
                try:
                    meter = r["MeterId"]
                    if meter not in self.points:
                        raise _Reject("unknown_meter", f"no point is registered as {meter!r}")
                    v = r["value"]
                    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                        raise _Reject("not_finite", "value must be a finite number")
                    t = parse_ts(r["TimeStamping"])
                    if t.timestamp() > self.now() + 600:
                        raise _Reject("future", "time stamp is ahead of the cloud's clock by over 10 minutes")
                except _Reject as exc:
                    rej.append({"index": i, "code": exc.code, "error": exc.text})
                    continue
                except (KeyError, TypeError, ValueError) as exc:
                    rej.append({"index": i, "code": "malformed", "error": str(exc)})
                    continue
                k = (meter, t)
                if k in self.store:
                    if self.store[k] == float(v):
                        dup += 1
                    else:
                        rej.append({"index": i, "code": "conflict",
                                    "error": f"conflicting value: {self.store[k]} already stored"})
                    continue
                self.store[k] = float(v)
                acc += 1
            self.accepted += acc
            self.duplicates += dup
            self.rejected += len(rej)
            self.rejections += [str(x["error"]) for x in rej]
        return {"accepted": acc, "duplicates": dup, "rejected": rej}

    def stored_readings(self, meter: str) -> list[tuple[dt.datetime, float]]:
        with self.lock:
            return sorted((t, v) for (m, t), v in self.store.items() if m == meter)

    def close(self):
        self.httpd.close()


class _Reject(Exception):
    def __init__(self, code: str, text: str):
        super().__init__(text)
        self.code, self.text = code, text


FAULTS = ("500", "429", "drop_before", "drop_after", "timeout_before", "timeout_after", "down")


class FaultProxy:
    """HTTP proxy to ``upstream`` that injects the fault ``policy()`` picks per request."""

    def __init__(self, upstream: str, slow: float = 0.5):
        self.upstream = urlsplit(upstream)
        self.slow = slow
        self.policy = lambda method, path: None
        self.counts: dict[str, int] = {}
        self.requests = 0
        self.bodies: list[tuple[str, str, bytes]] = []  # (method, path, body) of each request, as received
        proxy = self

        class H(QuietHandler):
            def _handle(self):
                body = self.read_body()
                proxy.bodies.append((self.command, self.path, body))  # the policy may look at it
                fault = proxy.policy(self.command, self.path)
                proxy.requests += 1
                proxy.counts[fault or "ok"] = proxy.counts.get(fault or "ok", 0) + 1
                if fault in ("down", "drop_before"):
                    return self.drop()
                if fault == "timeout_before":
                    time.sleep(proxy.slow)
                    return self.drop()
                if fault in ("500", "429"):
                    return self.answer(int(fault), [("Retry-After", "1")] if fault == "429" else [],
                                       json.dumps({"error": f"injected {fault}"}).encode())
                try:
                    status, headers, data = forward(proxy.upstream, self.command, self.path, self.headers, body)
                except OSError:
                    return self.drop()
                if fault == "drop_after":
                    return self.drop()
                if fault == "timeout_after":
                    time.sleep(proxy.slow)
                self.answer(status, headers, data)

            do_GET = do_PUT = do_POST = do_DELETE = _handle

        self.httpd = LoopbackServer(H)
        self.url = self.httpd.url

    def close(self):
        self.httpd.close()


class PtyPair:
    """Two linked pseudo-terminals: bytes written to ``a`` come out of ``b`` and back."""

    def __init__(self):
        self.m1, s1 = os.openpty()
        self.m2, s2 = os.openpty()
        for s in (s1, s2):
            tty.setraw(s)
        self.a, self.b = os.ttyname(s1), os.ttyname(s2)
        self._slaves = (s1, s2)  # keep open so the masters never see EOF
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._pump, daemon=True)
        self._t.start()

    def _pump(self):
        peer = {self.m1: self.m2, self.m2: self.m1}
        while not self._stop.is_set():
            r, _, _ = select.select(list(peer), [], [], 0.05)
            for fd in r:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                if data:
                    os.write(peer[fd], data)

    def close(self):
        self._stop.set()
        self._t.join(2)
        for fd in (self.m1, self.m2, *self._slaves):
            try:
                os.close(fd)
            except OSError:
                pass

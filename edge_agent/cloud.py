"""The cloud API as the agent sees it: PUT /point, POST /data and PUT /status over HTTPS.

The key travels only in the ``X-API-Key`` header; errors raised here carry the
method, path and reason, never headers, so logging them cannot leak the key.
Redirects are never followed: a 3xx is handed back as an answer (with where it
pointed, without any query string) for the caller to report, so the key is
never sent to a host other than the configured one. The ``Date`` of every answer
is evidence of the true time (``ClockCheck.observe_date``), with the monotonic
times the request was sent and answered.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests

from .clock import http_date
from .outbox import Reading


class CloudUnreachable(Exception):
    """No HTTP answer: connection refused or dropped, DNS, TLS, timeout."""


@dataclass
class Answer:
    status: int
    body: object  # parsed JSON, or None
    text: str
    retry_after: float | None = None
    location: str | None = None  # a redirect's target (scheme://host/path), never followed

    @property
    def redirect(self) -> bool:
        return 300 <= self.status < 400


class Cloud:
    """Thin HTTP client; all policy (retries, batching) lives in the Sender."""

    def __init__(self, url: str, key: str, timeout: float = 30.0, session: requests.Session | None = None,
                 now=time.time, clock_check=None, monotonic=time.monotonic):
        self.url = url.rstrip("/")
        self._key = key
        self.timeout = timeout
        self.now = now
        self.clock_check = clock_check  # told the Date of each answer (ClockCheck.observe_date)
        self.monotonic = monotonic
        self.session = session or requests.Session()
        self.session.trust_env = False  # a site proxy variable must not reroute readings silently

    def __repr__(self) -> str:
        return f"Cloud(url={self.url!r})"

    def _call(self, method: str, path: str, payload: dict) -> Answer:
        sent = self.monotonic()
        try:
            r = self.session.request(
                method, self.url + path, data=json.dumps(payload),
                headers={"X-API-Key": self._key, "Content-Type": "application/json", "Accept": "application/json"},
                timeout=(min(10.0, self.timeout), self.timeout), allow_redirects=False,
            )
            if self.clock_check is not None:
                self.clock_check.observe_date(r.headers.get("Date"), sent, self.monotonic())
        except requests.Timeout:
            raise CloudUnreachable(f"{method} {path}: timed out after {self.timeout}s") from None
        except requests.RequestException as exc:
            raise CloudUnreachable(f"{method} {path}: {type(exc).__name__}: {_reason(exc)}") from None
        try:
            body = r.json()
        except ValueError:
            body = None
        location = None
        if 300 <= r.status_code < 400:
            location = _safe_location(r.headers.get("Location"), self.url + path)
        return Answer(r.status_code, body, r.text[:300], _retry_after(r.headers.get("Retry-After"), self.now()),
                      location)

    def put_point(self, point: dict) -> Answer:
        return self._call("PUT", "/point", point)

    def post_data(self, readings: list[Reading]) -> Answer:
        """POST /data; a reading that starts a new register series carries ``"reset": true`` (no other does)."""
        return self._call("POST", "/data", {"readings": [_reading(r) for r in readings]})

    def put_status(self, report: dict) -> Answer:
        return self._call("PUT", "/status", report)


def _reading(r: Reading) -> dict:
    out: dict = {"MeterId": r.meter, "TimeStamping": r.ts, "value": r.value}
    if r.reset:
        out["reset"] = True
    return out


def _retry_after(value: str | None, now: float) -> float | None:
    """Retry-After as seconds (``120``) or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    when = http_date(value)
    return None if when is None else max(0.0, when - now)


def _safe_location(location: str | None, base: str) -> str:
    """Where a redirect pointed, for the log: scheme, host and path only (no query, no user info)."""
    if not location:
        return "(no Location)"
    u = urlsplit(urljoin(base, location))
    host = u.hostname or ""
    if u.port:
        host += f":{u.port}"
    return f"{u.scheme}://{host}{u.path}"


def _reason(exc: Exception) -> str:
    s = str(exc)
    return s[:200]

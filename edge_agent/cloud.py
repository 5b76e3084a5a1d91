"""The cloud API as the agent sees it: PUT /point and POST /data over HTTPS.

The key travels only in the ``X-API-Key`` header; errors raised here carry the
method, path and reason, never headers, so logging them cannot leak the key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import requests

from .outbox import Reading


class CloudUnreachable(Exception):
    """No HTTP answer: connection refused or dropped, DNS, TLS, timeout."""


@dataclass
class Answer:
    status: int
    body: object  # parsed JSON, or None
    text: str
    retry_after: float | None = None


class Cloud:
    """Thin HTTP client; all policy (retries, batching) lives in the Sender."""

    def __init__(self, url: str, key: str, timeout: float = 30.0, session: requests.Session | None = None):
        self.url = url.rstrip("/")
        self._key = key
        self.timeout = timeout
        self.session = session or requests.Session()
        self.session.trust_env = False  # a site proxy variable must not reroute readings silently

    def __repr__(self) -> str:
        return f"Cloud(url={self.url!r})"

    def _call(self, method: str, path: str, payload: dict) -> Answer:
        try:
            r = self.session.request(
                method, self.url + path, data=json.dumps(payload),
                headers={"X-API-Key": self._key, "Content-Type": "application/json", "Accept": "application/json"},
                timeout=(min(10.0, self.timeout), self.timeout),
            )
        except requests.Timeout:
            raise CloudUnreachable(f"{method} {path}: timed out after {self.timeout}s") from None
        except requests.RequestException as exc:
            raise CloudUnreachable(f"{method} {path}: {type(exc).__name__}: {_reason(exc)}") from None
        try:
            body = r.json()
        except ValueError:
            body = None
        ra = None
        if "Retry-After" in r.headers:
            try:
                ra = float(r.headers["Retry-After"])
            except ValueError:
                ra = None
        return Answer(r.status_code, body, r.text[:300], ra)

    def put_point(self, point: dict) -> Answer:
        return self._call("PUT", "/point", point)

    def post_data(self, readings: list[Reading]) -> Answer:
        return self._call("POST", "/data", {
            "readings": [{"MeterId": r.meter, "TimeStamping": r.ts, "value": r.value} for r in readings]
        })


def _reason(exc: Exception) -> str:
    s = str(exc)
    return s[:200]

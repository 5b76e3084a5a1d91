"""Delivery: drain the outbox to POST /data, oldest first, in batches.

A reading is marked delivered only when the cloud's receipt covers it
(accepted or duplicate). Network errors, timeouts, 408, 425, 429 and 5xx (503 with
its Retry-After honoured) are retried forever with exponential backoff and
jitter; nothing is skipped, so order holds, and nothing is dead-lettered for
them. 401/403/404/405 are configuration problems, and a redirect (3xx) is
refused (never followed: the key must not travel to another host): logged at
ERROR and retried with backoff (the key or URL may be fixed). 413 halves the
batch. A 400 for a whole batch is narrowed down by halving until the one bad
reading is found.

A reading the cloud rejects (by index in the receipt) is handled by the
rejection's ``code``, never by its English text: ``unknown_meter`` registers the
meter again and keeps its readings pending (once per episode: a repeat with no
reading of that meter accepted in between is dead-lettered); ``busy`` keeps the
reading pending and backs off; every other code (``conflict``, ``future``,
``malformed``, ``not_finite``, ``out_of_range``, ``day_full``, or one this agent
does not know) moves it to the dead letters with the code and the reason.

Meters are registered (PUT /point) before any reading is sent, at start and on
every config change, so the first readings after an outage are never rejected
as unknown.
"""

from __future__ import annotations

import logging
import random
import threading
from typing import Any

from . import log
from .clock import Clock
from .cloud import Cloud, CloudUnreachable
from .config import MAX_BATCH, Meter, default
from .outbox import Outbox

logger = log.get("send")


class Sender:
    """One step at a time (``step`` returns how long to wait), or ``run`` forever."""

    def __init__(self, outbox: Outbox, cloud: Cloud, meters: list[Meter], *,
                 batch_size: int = default("cloud", "batch_size"),
                 backoff_initial: float = default("cloud", "backoff_initial"),
                 backoff_max: float = default("cloud", "backoff_max"), idle: float = 30.0,
                 retention_days: int = default("agent", "retention_days"), clock: Clock | None = None,
                 rng: random.Random | None = None, on_delivery=None):
        self.outbox, self.cloud = outbox, cloud
        self.meters = {m.MeterId: m for m in meters}
        self.to_register = list(self.meters)
        self.max_batch = min(MAX_BATCH, batch_size)
        self.batch_size = self.max_batch
        self.backoff_initial, self.backoff_max, self.idle = backoff_initial, backoff_max, idle
        self.retention_days = retention_days
        self.clock = clock or Clock()
        self.rng = rng or random.Random()
        self.failures = 0
        self.reregistered: set[str] = set()  # re-registered for unknown_meter, no reading accepted since
        self.on_delivery = on_delivery or (lambda: None)
        self.wake = threading.Event()
        self.stats = {"requests": 0, "batches_ok": 0, "delivered": 0, "duplicates": 0, "dead": 0, "errors": 0,
                      "busy": 0}
        self._last_prune = 0.0

    # -- policy helpers -------------------------------------------------------------
    def _backoff(self, at_least: float | None = None) -> float:
        """Exponential backoff with equal jitter: half fixed, half random."""
        self.failures += 1
        d = min(self.backoff_max, self.backoff_initial * 2 ** min(self.failures - 1, 30))
        d = d / 2 + self.rng.uniform(0, d / 2)
        return max(d, min(at_least or 0.0, RETRY_AFTER_MAX))

    def _ok(self) -> None:
        self.failures = 0

    # -- registration -------------------------------------------------------------
    def _register(self) -> float | None:
        """PUT /point for each meter still to register; a wait on failure, else None."""
        while self.to_register:
            name = self.to_register[0]
            m = self.meters[name]
            try:
                ans = self.cloud.put_point(m.point())
            except CloudUnreachable as exc:
                d = self._backoff()
                log.event(logger, logging.WARNING, "register_unreachable", meter=name, error=str(exc), retry_in=round(d, 1))
                return d
            self.stats["requests"] += 1
            if 200 <= ans.status < 300:
                self.outbox.set_registered(name, m.fingerprint())
                log.event(logger, logging.INFO, "registered", meter=name, bus=m.Port)
                self.to_register.pop(0)
                self._ok()
                continue
            if ans.redirect:
                d = self._backoff()
                _redirect_refused(ans, "PUT /point", d)
                return d
            if ans.status in (401, 403, 404, 405) or _transient(ans.status) or not isinstance(ans.body, dict):
                # refused key or URL, "not now", or not the API speaking (a proxy's page): try again later
                d = self._backoff(ans.retry_after)
                lvl = logging.WARNING if _transient(ans.status) else logging.ERROR
                log.event(logger, lvl, "register_failed", meter=name, status=ans.status, error=_err(ans), retry_in=round(d, 1))
                return d
            # the cloud refuses this meter's fields: report, do not block the others
            log.event(logger, logging.ERROR, "register_rejected", meter=name, bus=m.Port, status=ans.status, error=_err(ans))
            self.to_register.pop(0)
        return None

    # -- one step -------------------------------------------------------------------
    def step(self) -> float:  # noqa: C901  # the delivery loop's one step: register, batch, send, read the answer, back off
        """Register what needs it, then send one batch. Returns seconds to wait."""
        wait = self._register()
        if wait is not None:
            return wait
        now = self.clock.now()
        if now - self._last_prune > 3600:
            self._last_prune = now
            self.outbox.prune(self.retention_days)
        batch = self.outbox.pending(self.batch_size)
        if not batch:
            self.batch_size = self.max_batch
            return self.idle
        try:
            ans = self.cloud.post_data(batch)
        except CloudUnreachable as exc:
            self.stats["errors"] += 1
            d = self._backoff()
            log.event(logger, logging.WARNING, "send_unreachable", batch=len(batch), oldest=batch[0].ts,
                      error=str(exc), failures=self.failures, retry_in=round(d, 1))
            return d
        self.stats["requests"] += 1
        s = ans.status
        if 200 <= s < 300:
            return self._receipt(batch, ans)
        self.stats["errors"] += 1
        if s == 413:
            self.batch_size = max(1, len(batch) // 2)
            log.event(logger, logging.WARNING, "batch_too_large", batch=len(batch), next_batch=self.batch_size)
            return 0.0
        if _transient(s):
            d = self._backoff(ans.retry_after)
            log.event(logger, logging.WARNING, "send_retry", status=s, batch=len(batch), failures=self.failures,
                      retry_after=ans.retry_after, retry_in=round(d, 1))
            return d
        if ans.redirect:
            d = self._backoff()
            _redirect_refused(ans, "POST /data", d)
            return d
        if s in (401, 403, 404, 405) or not isinstance(ans.body, dict):
            # a refusal of the key or the URL, or a 4xx that is not the API speaking (a proxy's page):
            # never a reason to give up readings
            d = self._backoff()
            log.event(logger, logging.ERROR, "send_refused", status=s, error=_err(ans),
                      hint="check cloud.url and the API key", retry_in=round(d, 1))
            return d
        # another 4xx from the API for the whole batch: narrow it down to the reading(s) at fault
        if len(batch) > 1:
            self.batch_size = max(1, len(batch) // 2)
            log.event(logger, logging.WARNING, "batch_refused_narrowing", status=s, batch=len(batch), error=_err(ans))
            return 0.0
        code = ans.body.get("code")
        self._dead(batch[0], f"HTTP {s}: {_err(ans)}", code if isinstance(code, str) and code else f"http_{s}")
        return 0.0

    def _receipt(self, batch, ans) -> float:  # noqa: C901  # one branch per receipt code of POST /data (docs/API.md)
        body: Any = ans.body if isinstance(ans.body, dict) else {}  # JSON: checked field by field below
        acc, dup, rej = body.get("accepted"), body.get("duplicates"), body.get("rejected", [])
        ok_shape = isinstance(acc, int) and isinstance(dup, int) and isinstance(rej, list)
        bad: dict[int, tuple[str | None, str]] = {}  # index -> (code, reason)
        if ok_shape:
            for item in rej:
                if isinstance(item, dict) and isinstance(item.get("index"), int) and 0 <= item["index"] < len(batch):
                    code = item.get("code")
                    bad[item["index"]] = (code if isinstance(code, str) and code else None,
                                          str(item.get("error", "rejected")))
                else:
                    ok_shape = False
        if not ok_shape or acc + dup + len(bad) != len(batch):
            self.stats["errors"] += 1
            d = self._backoff()
            log.event(logger, logging.ERROR, "receipt_invalid", status=ans.status, batch=len(batch), body=ans.text[:200], retry_in=round(d, 1))
            return d
        keep: set[int] = set()  # rejected but kept pending: sent again
        retry_meters: set[str] = set()  # meters the cloud does not know: register again, keep their readings
        for i, (code, _) in bad.items():
            m = batch[i].meter
            if code == UNKNOWN_METER and m in self.meters and (m not in self.reregistered or m in retry_meters):
                retry_meters.add(m)
                keep.add(i)
            elif code == BUSY:
                keep.add(i)
        for m in sorted(retry_meters):
            self.reregistered.add(m)
            self.to_register.append(m)
            log.event(logger, logging.WARNING, "meter_unknown_reregistering", meter=m, bus=self.meters[m].Port)
        for i, (code, reason) in bad.items():
            if i not in keep:
                self._dead(batch[i], reason, code)
        delivered = [r for i, r in enumerate(batch) if i not in bad]
        self.outbox.mark_delivered(delivered)
        self.reregistered.difference_update({r.meter for r in delivered})
        busy = sum(1 for code, _ in bad.values() if code == BUSY)
        self.stats["batches_ok"] += 1
        self.stats["delivered"] += len(delivered)
        self.stats["duplicates"] += dup
        self.stats["busy"] += busy
        if self.batch_size < self.max_batch and not bad:
            self.batch_size = min(self.max_batch, self.batch_size * 2)
        log.event(logger, logging.INFO, "delivered", batch=len(batch), accepted=acc, duplicates=dup, rejected=len(bad),
                  kept_pending=len(keep) or None, first=batch[0].ts, last=batch[-1].ts)
        self.on_delivery()
        if busy:  # the cloud asks for these again later: back off, they stay first in line
            d = self._backoff()
            log.event(logger, logging.WARNING, "readings_busy_retry", busy=busy, retry_in=round(d, 1))
            return d
        self._ok()
        return 0.0

    def _dead(self, r, reason: str, code: str | None = None) -> None:
        self.outbox.dead_letter(r, reason, code)
        self.stats["dead"] += 1
        log.event(logger, logging.ERROR, "reading_rejected", meter=r.meter, ts=r.ts, value=r.value, code=code or "none",
                  reason=reason, note="kept in dead_letters; see status")

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                d = self.step()
            except Exception:  # noqa: BLE001 - e.g. database locked: keep delivering
                log.event(logger, logging.ERROR, "send_step_failed", exc_info=True)
                d = self._backoff()
            if d > 0 and self._wait(stop, d):
                return

    def _wait(self, stop: threading.Event, d: float) -> bool:
        """Wait d seconds; when idle (not backing off), new readings end the wait early."""
        self.wake.clear()
        end = self.clock.now() + d
        while (left := end - self.clock.now()) > 0:
            if self.clock.wait(stop, min(0.5, left)):
                return True
            if self.wake.is_set() and not self.failures:
                return False
        return stop.is_set()


UNKNOWN_METER, BUSY = "unknown_meter", "busy"
RETRY_AFTER_MAX = 3600.0  # a Retry-After is honoured up to an hour (a longer one is taken as a mistake)


def _transient(status: int) -> bool:
    """Answers that say "not now": retried with backoff, never a reason to drop a reading."""
    return status in (408, 425, 429) or status >= 500


def _redirect_refused(ans, call: str, retry_in: float) -> None:
    log.event(logger, logging.ERROR, "redirect_refused", call=call, status=ans.status, location=ans.location,
              hint="set cloud.url to the API's final https:// address; redirects are never followed",
              retry_in=round(retry_in, 1))


def _err(ans) -> str:
    if isinstance(ans.body, dict) and "error" in ans.body:
        return str(ans.body["error"])[:300]
    return ans.text[:200]

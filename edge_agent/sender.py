"""Delivery: drain the outbox to POST /data, oldest first, in batches.

A reading is marked delivered only when the cloud's receipt covers it
(accepted or duplicate). Network errors, timeouts, 429 and 5xx are retried
forever with exponential backoff and jitter; nothing is skipped, so order holds.
401/403/404 are configuration problems: logged at ERROR and retried with
backoff (the key or URL may be fixed). 413 halves the batch. A 400 for a whole
batch is narrowed down by halving until the one bad reading is found. A reading
the cloud rejects (by index in the receipt) goes to the dead-letter table with
the reason, once: an "unknown meter" rejection first re-registers the meter.

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
from .config import Meter
from .outbox import Outbox

L = log.get("send")


class Sender:
    """One step at a time (``step`` returns how long to wait), or ``run`` forever."""

    def __init__(self, outbox: Outbox, cloud: Cloud, meters: list[Meter], *, batch_size: int = 500,
                 backoff_initial: float = 1.0, backoff_max: float = 300.0, idle: float = 30.0,
                 retention_days: int = 14, clock: Clock | None = None, rng: random.Random | None = None):
        self.outbox, self.cloud = outbox, cloud
        self.meters = {m.MeterId: m for m in meters}
        self.to_register = list(self.meters)
        self.max_batch = min(1000, batch_size)
        self.batch_size = self.max_batch
        self.backoff_initial, self.backoff_max, self.idle = backoff_initial, backoff_max, idle
        self.retention_days = retention_days
        self.clock = clock or Clock()
        self.rng = rng or random.Random()
        self.failures = 0
        self.reregistered: set[str] = set()
        self.wake = threading.Event()
        self.stats = {"requests": 0, "batches_ok": 0, "delivered": 0, "duplicates": 0, "dead": 0, "errors": 0}
        self._last_prune = 0.0

    # -- policy helpers -------------------------------------------------------------
    def _backoff(self, at_least: float | None = None) -> float:
        """Exponential backoff with equal jitter: half fixed, half random."""
        self.failures += 1
        d = min(self.backoff_max, self.backoff_initial * 2 ** min(self.failures - 1, 30))
        d = d / 2 + self.rng.uniform(0, d / 2)
        return max(d, min(at_least or 0.0, self.backoff_max))

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
                log.event(L, logging.WARNING, "register_unreachable", meter=name, error=str(exc), retry_in=round(d, 1))
                return d
            self.stats["requests"] += 1
            if 200 <= ans.status < 300:
                self.outbox.set_registered(name, m.fingerprint())
                log.event(L, logging.INFO, "registered", meter=name, bus=m.Port)
                self.to_register.pop(0)
                self._ok()
                continue
            if ans.status in (401, 403, 404, 405, 429) or ans.status >= 500:
                d = self._backoff(ans.retry_after)
                lvl = logging.ERROR if ans.status in (401, 403, 404, 405) else logging.WARNING
                log.event(L, lvl, "register_failed", meter=name, status=ans.status, error=_err(ans), retry_in=round(d, 1))
                return d
            # the cloud refuses this meter's fields: report, do not block the others
            log.event(L, logging.ERROR, "register_rejected", meter=name, bus=m.Port, status=ans.status, error=_err(ans))
            self.to_register.pop(0)
        return None

    # -- one step -------------------------------------------------------------------
    def step(self) -> float:
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
            log.event(L, logging.WARNING, "send_unreachable", batch=len(batch), oldest=batch[0].ts,
                      error=str(exc), failures=self.failures, retry_in=round(d, 1))
            return d
        self.stats["requests"] += 1
        s = ans.status
        if 200 <= s < 300:
            return self._receipt(batch, ans)
        self.stats["errors"] += 1
        if s == 413:
            self.batch_size = max(1, len(batch) // 2)
            log.event(L, logging.WARNING, "batch_too_large", batch=len(batch), next_batch=self.batch_size)
            return 0.0
        if s == 429 or s >= 500:
            d = self._backoff(ans.retry_after)
            log.event(L, logging.WARNING, "send_retry", status=s, batch=len(batch), failures=self.failures, retry_in=round(d, 1))
            return d
        if s in (401, 403, 404, 405):
            d = self._backoff()
            log.event(L, logging.ERROR, "send_refused", status=s, error=_err(ans),
                      hint="check cloud.url and the API key", retry_in=round(d, 1))
            return d
        # another 4xx for the whole batch: narrow it down to the reading(s) at fault
        if len(batch) > 1:
            self.batch_size = max(1, len(batch) // 2)
            log.event(L, logging.WARNING, "batch_refused_narrowing", status=s, batch=len(batch), error=_err(ans))
            return 0.0
        self._dead(batch[0], f"HTTP {s}: {_err(ans)}")
        return 0.0

    def _receipt(self, batch, ans) -> float:
        body: Any = ans.body if isinstance(ans.body, dict) else {}  # JSON: checked field by field below
        acc, dup, rej = body.get("accepted"), body.get("duplicates"), body.get("rejected", [])
        ok_shape = isinstance(acc, int) and isinstance(dup, int) and isinstance(rej, list)
        bad: dict[int, str] = {}
        if ok_shape:
            for item in rej:
                if isinstance(item, dict) and isinstance(item.get("index"), int) and 0 <= item["index"] < len(batch):
                    bad[item["index"]] = str(item.get("error", "rejected"))
                else:
                    ok_shape = False
        if not ok_shape or acc + dup + len(bad) != len(batch):
            self.stats["errors"] += 1
            d = self._backoff()
            log.event(L, logging.ERROR, "receipt_invalid", status=ans.status, batch=len(batch), body=ans.text[:200], retry_in=round(d, 1))
            return d
        retry_meters = set()  # meters the cloud does not know: register again, keep their readings
        for i, reason in bad.items():
            r = batch[i]
            if "unknown meter" in reason.lower() and r.meter in self.meters and r.meter not in self.reregistered:
                retry_meters.add(r.meter)
        for m in sorted(retry_meters):
            self.reregistered.add(m)
            self.to_register.append(m)
            log.event(L, logging.WARNING, "meter_unknown_reregistering", meter=m, bus=self.meters[m].Port)
        for i, reason in bad.items():
            if batch[i].meter not in retry_meters:
                self._dead(batch[i], reason)
        delivered = [r for i, r in enumerate(batch) if i not in bad]
        self.outbox.mark_delivered(delivered)
        self._ok()
        self.stats["batches_ok"] += 1
        self.stats["delivered"] += len(delivered)
        self.stats["duplicates"] += dup
        if self.batch_size < self.max_batch and not bad:
            self.batch_size = min(self.max_batch, self.batch_size * 2)
        log.event(L, logging.INFO, "delivered", batch=len(batch), accepted=acc, duplicates=dup, rejected=len(bad),
                  first=batch[0].ts, last=batch[-1].ts)
        return 0.0

    def _dead(self, r, reason: str) -> None:
        self.outbox.dead_letter(r, reason)
        self.stats["dead"] += 1
        log.event(L, logging.ERROR, "reading_rejected", meter=r.meter, ts=r.ts, value=r.value, reason=reason,
                  note="kept in dead_letters; see status")

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                d = self.step()
            except Exception:  # noqa: BLE001 - e.g. database locked: keep delivering
                log.event(L, logging.ERROR, "send_step_failed", exc_info=True)
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


def _err(ans) -> str:
    if isinstance(ans.body, dict) and "error" in ans.body:
        return str(ans.body["error"])[:300]
    return ans.text[:200]

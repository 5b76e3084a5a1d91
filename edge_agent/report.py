"""PUT /status: the agent tells the cloud how it is, each minute and after deliveries.

The report is ``{"version", "backlog", "dead_letters", "failing_meters": [names],
"time"}`` read from the outbox. The cloud answers ``{"clock_offset": s}`` (its time
minus the agent's): the last one is kept in the outbox's ``meta`` (``status --json``
shows it under ``clock_offset`` and ``cloud_report``) and a WARNING is logged when
the site clock is off by more than ``CLOCK_WARN_S`` beyond the request's own round
trip, and the offset is given to the clock check (``ClockCheck.observe``) as evidence of
the true time. This module only warns and reports; which time readings are stamped with
belongs to the clock check. A cloud without the route (404/405) is tolerated: logged
once at INFO, then asked again quietly each interval.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time

from . import __version__, log
from .clock import Clock, iso
from .cloud import Cloud, CloudUnreachable
from .outbox import Outbox

logger = log.get("report")

CLOCK_WARN_S = 30.0  # site clock vs cloud clock, beyond the round trip: warn
INTERVAL_S = 60.0  # a report each minute
MIN_GAP_S = 5.0  # reports after deliveries coalesce to one per 5 s (a backlog drains in many batches)
REPEAT_WARNING_S = 3600.0  # a lasting clock warning is repeated hourly, not each minute


class StatusReporter:
    """``report_once`` sends one report; ``run`` sends one each interval and after each ``poke``."""

    def __init__(self, outbox: Outbox, cloud: Cloud, clock: Clock | None = None, *, version: str = __version__,
                 interval: float = INTERVAL_S, min_gap: float = MIN_GAP_S, warn_after: float = CLOCK_WARN_S,
                 monotonic=time.monotonic, clock_check=None):
        self.outbox, self.cloud = outbox, cloud
        self.clock = clock or Clock()
        self.version = version
        self.interval, self.min_gap, self.warn_after = interval, min_gap, warn_after
        self.monotonic = monotonic
        self.clock_check = clock_check  # told the cloud's time (ClockCheck.observe)
        self.poked = threading.Event()
        self.reports = 0
        self._state: str | None = None  # last outcome, to log changes only
        self._warned_at: float | None = None

    def poke(self) -> None:
        """A delivery happened: report soon."""
        self.poked.set()

    def report_once(self) -> dict:
        """Send one report; keep and return what ``status`` shows."""
        st = self.outbox.status()
        t = self.clock.now()
        body = {"version": self.version, "backlog": st["pending"], "dead_letters": st["dead_letters"],
                "failing_meters": sorted(f["MeterId"] for f in st["failing_meters"]), "time": iso(t)}
        kept = dict(st.get("cloud_report") or {})
        kept.update(last_report=iso(t), threshold=self.warn_after)
        t0 = self.monotonic()
        try:
            ans = self.cloud.put_status(body)
        except CloudUnreachable as exc:
            self._change("unreachable", logging.DEBUG, error=str(exc))
            kept.update(state="unreachable", http_status=None)
            return self._keep(kept)
        rtt = max(0.0, self.monotonic() - t0)
        self.reports += 1
        s = ans.status
        kept["http_status"] = s
        offset = ans.body.get("clock_offset") if isinstance(ans.body, dict) else None
        if 200 <= s < 300 and isinstance(offset, (int, float)) and not isinstance(offset, bool) and math.isfinite(offset):
            # the report said whole seconds: take the fraction the cloud could not see off its answer
            offset = float(offset) - (t - math.floor(t))
            if self.clock_check is not None:  # the cloud's clock read t + offset while the request was out
                self.clock_check.observe(t + offset - 0.001, t + offset + 0.001, t0, t0 + rtt, "status")
            kept.update(state="ok", clock_offset=round(offset, 3), clock_offset_at=iso(t), round_trip=round(rtt, 3))
            kept["clock_warning"] = self._check_clock(offset, rtt)
            self._change("ok", logging.INFO)
        elif s in (404, 405):
            kept.update(state="unsupported")
            self._change("unsupported", logging.INFO, note="this cloud has no PUT /status; reports are skipped quietly")
        elif ans.redirect:
            kept.update(state="refused")
            self._change(f"redirect {s}", logging.ERROR, location=ans.location,
                         hint="set cloud.url to the API's final https:// address; redirects are never followed")
        else:
            kept.update(state="refused")
            self._change(f"http {s}", logging.WARNING, body=ans.text[:200])
        return self._keep(kept)

    def _check_clock(self, offset: float, rtt: float) -> bool:
        """Warn when the site clock is off by more than the threshold (beyond what the round trip explains)."""
        now = self.monotonic()
        if abs(offset) - rtt > self.warn_after:
            if self._warned_at is None or now - self._warned_at >= REPEAT_WARNING_S:
                self._warned_at = now
                log.event(logger, logging.WARNING, "clock_offset_large", clock_offset=round(offset, 1),
                          threshold=self.warn_after, round_trip=round(rtt, 3),
                          hint="the site clock differs from the cloud's: check time sync (timedatectl, NTP)")
            return True
        if self._warned_at is not None:
            self._warned_at = None
            log.event(logger, logging.INFO, "clock_offset_ok", clock_offset=round(offset, 1), threshold=self.warn_after)
        return False

    def _change(self, state: str, level: int, **kv) -> None:
        if state != self._state:
            self._state = state
            log.event(logger, level, "status_report", outcome=state, **kv)

    def _keep(self, kept: dict) -> dict:
        self.outbox.set_meta("cloud_report", json.dumps(kept, sort_keys=True))
        return kept

    def run(self, stop: threading.Event) -> None:
        """A report now, then each interval, and after a delivery (at most one per min_gap)."""
        while not stop.is_set():
            self.poked.clear()
            try:
                self.report_once()
            except Exception:  # noqa: BLE001 - e.g. database locked: reporting must not stop
                log.event(logger, logging.WARNING, "status_report_failed", exc_info=True)
            if self.clock.wait(stop, self.min_gap):
                return
            end = self.clock.now() + max(0.0, self.interval - self.min_gap)
            while not self.poked.is_set() and (left := end - self.clock.now()) > 0:
                if self.clock.wait(stop, min(0.5, left)):
                    return

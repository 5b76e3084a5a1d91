"""Time, injectable: the scheduler and the sender ask a Clock, never ``time`` directly.

``Clock`` is the wall clock. ``FakeClock`` is virtual time for tests: waiting
advances it instantly, so a 24-hour outage runs in seconds.

``ClockCheck`` decides from evidence whether the wall clock may stamp readings.
A box without a real-time clock boots at a wrong time, so the agent refuses to
stamp while the clock is evidently wrong:

* before ``RELEASE_DATE`` (set at each release: this version cannot run before it
  was made), or
* behind a boundary already stamped (the clock jumped backward past readings taken).

The kernel's "unsynchronised" flag (adjtimex TIME_ERROR / STA_UNSYNC) is only a
warning: many healthy boxes and CI machines report it although their time is right.
"""

from __future__ import annotations

import calendar
import ctypes
import ctypes.util
import sys
import threading
import time

# Set at each release to the release date (any earlier date is also right: it is a lower bound).
# A clock before it is wrong. This version: November 2026.
RELEASE_DATE = "2026-11-01"
RELEASE_EPOCH = float(calendar.timegm(time.strptime(RELEASE_DATE, "%Y-%m-%d")))


class Clock:
    """Wall-clock time in epoch seconds; waits end early when the event is set."""

    def now(self) -> float:
        return time.time()

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Wait up to ``seconds``; True if the event was set."""
        return event.wait(max(0.0, seconds))


class FakeClock(Clock):
    """Virtual time: ``wait`` and ``advance`` move it forward without sleeping."""

    def __init__(self, start: float = 1_700_000_000.0):
        self.t = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self.t

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.t += max(0.0, seconds)

    def set(self, t: float) -> None:
        with self._lock:
            self.t = max(self.t, float(t))

    def wait(self, event: threading.Event, seconds: float) -> bool:
        if event.is_set():
            return True
        self.advance(seconds)
        time.sleep(0)  # let other threads run
        return event.is_set()


def iso(t: float) -> str:
    """Epoch seconds -> ISO 8601 UTC with Z, as sent to the cloud."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def from_iso(ts: str) -> float:
    """ISO 8601 UTC with Z -> epoch seconds (the inverse of ``iso``)."""
    return float(calendar.timegm(time.strptime(ts, "%Y-%m-%dT%H:%M:%SZ")))


TIME_ERROR = 5  # adjtimex's return value while STA_UNSYNC is set


def kernel_sync_state() -> str:
    """'synchronised', 'unsynchronised' (TIME_ERROR / STA_UNSYNC) or 'unknown' (not Linux)."""
    if not sys.platform.startswith("linux"):
        return "unknown"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        buf = ctypes.create_string_buffer(512)  # struct timex, modes = 0: read only
        rc = libc.adjtimex(buf)
    except (OSError, AttributeError):
        return "unknown"
    if rc < 0:
        return "unknown"
    return "unsynchronised" if rc == TIME_ERROR else "synchronised"


class ClockCheck:
    """Whether the wall clock can stamp readings: 'ok', 'before_release' or 'behind_readings'."""

    def __init__(self, not_before: float = RELEASE_EPOCH, kernel_state=kernel_sync_state):
        self.not_before = not_before
        self.kernel_state = kernel_state

    def verdict(self, now: float, last_stamped: float | None) -> tuple[str, str]:
        if now < self.not_before:
            return "before_release", (f"system time {iso(now)} is before this agent's release date "
                                      f"{iso(self.not_before)}: the clock is wrong (no RTC, no NTP yet?)")
        if last_stamped and now < last_stamped:
            return "behind_readings", (f"system time {iso(now)} is behind the reading already stamped at "
                                       f"{iso(last_stamped)}: the clock jumped backward; waiting until it passes it")
        return "ok", ""

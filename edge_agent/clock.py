"""Time, injectable: the scheduler and the sender ask a Clock, never ``time`` directly.

``Clock`` is the wall clock. ``FakeClock`` is virtual time for tests: waiting
advances it instantly, so a 24-hour outage runs in seconds.
"""

from __future__ import annotations

import threading
import time


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

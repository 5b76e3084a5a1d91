"""Time, injectable: the scheduler and the sender ask a Clock, never ``time`` directly.

``Clock`` is the wall clock, and a monotonic clock that counts suspend and is never
stepped (``CLOCK_BOOTTIME``). ``FakeClock`` is virtual time for tests: waiting
advances it instantly, so a 24-hour outage runs in seconds.

``ClockCheck`` decides from all the evidence which time readings are stamped with.
A box without a real-time clock boots at a wrong time (a restored time: fake-hwclock,
timesyncd's clock file), so the box's clock is only one witness:

* **the cloud's time**: the HTTP ``Date`` of every cloud answer and the ``clock_offset``
  of ``PUT /status`` (``observe``) give the true time against the monotonic clock,
  within the request's round trip;
* **the box's own lower bounds**: the release date (this version cannot run before it
  was made) and the last boundary already stamped (kept in the outbox across restarts):
  the true time is past both, so a box clock behind them is wrong by at least that much,
  and stays so until the clock is stepped (the bound is kept against the monotonic clock);
* **the kernel's sync state** (adjtimex): ``synchronised`` (NTP has set the clock) confirms the
  box's clock; ``STA_UNSYNC`` is a warning only, never a reason to think the clock wrong, as many
  healthy boxes and CI machines report it although their time is right.

The verdict: ``ok`` (the box's clock is within ``bound`` of the evidence: stamp with it),
``corrected`` (the cloud's time is known and the box is off by more than ``bound``: stamp
with the cloud's time, the box's clock is not used), ``unconfirmed`` (nothing says the box's
clock is wrong, nothing has confirmed it yet: the cloud has not answered since the agent
started and the kernel is not synchronised; readings are taken at the box's boundaries and
held until the cloud's first answer stamps them, with the boundary they were taken for when the
box was right), or a state that holds readings (``before_release``, ``behind_readings``,
``offset_stale``: the box is known to be wrong by more than ``bound`` and the true time is
not known: readings are taken each minute, held with the monotonic clock, and stamped once it
is). The bound is 2 x the shortest SaveEvery.
"""

from __future__ import annotations

import calendar
import ctypes
import ctypes.util
import email.utils
import functools
import math
import sys
import threading
import time
from dataclasses import dataclass

# Set at each release to the release date (any earlier date is also right: it is a lower bound).
# A clock before it is wrong. This version: November 2026.
RELEASE_DATE = "2026-11-01"
RELEASE_EPOCH = float(calendar.timegm(time.strptime(RELEASE_DATE, "%Y-%m-%d")))


class Clock:
    """Wall-clock time in epoch seconds; waits end early when the event is set."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        """Seconds on a clock that is never stepped and counts suspend (CLOCK_BOOTTIME where there is one)."""
        return time.clock_gettime(_BOOTTIME) if _BOOTTIME is not None else time.monotonic()

    def boot(self) -> str:
        """This boot of the machine: monotonic readings of another boot mean nothing here."""
        try:
            with open("/proc/sys/kernel/random/boot_id") as f:
                return f.read().strip()
        except OSError:
            return "unknown"

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Wait up to ``seconds``; True if the event was set."""
        return event.wait(max(0.0, seconds))


class FakeClock(Clock):
    """Virtual time: ``wait`` and ``advance`` move it forward without sleeping."""

    def __init__(self, start: float = 1_700_000_000.0):
        self.t = float(start)
        self.mono = 1000.0  # the monotonic clock: moved by time passing, never by a step of the wall clock
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self.t

    def monotonic(self) -> float:
        with self._lock:
            return self.mono

    def boot(self) -> str:
        return "virtual"

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.t += max(0.0, seconds)
            self.mono += max(0.0, seconds)

    def set(self, t: float) -> None:
        with self._lock:
            step = max(0.0, float(t) - self.t)
            self.t += step
            self.mono += step

    def wait(self, event: threading.Event, seconds: float) -> bool:
        if event.is_set():
            return True
        self.advance(seconds)
        time.sleep(0)  # let other threads run
        return event.is_set()


_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", None)


def iso(t: float) -> str:
    """Epoch seconds -> ISO 8601 UTC with Z, as sent to the cloud."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def from_iso(ts: str) -> float:
    """ISO 8601 UTC with Z -> epoch seconds (the inverse of ``iso``)."""
    return float(calendar.timegm(time.strptime(ts, "%Y-%m-%dT%H:%M:%SZ")))


TIME_ERROR = 5  # adjtimex's return value while STA_UNSYNC is set


@functools.cache
def _libc():
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)  # find_library runs ldconfig


def kernel_sync_state() -> str:
    """'synchronised', 'unsynchronised' (TIME_ERROR / STA_UNSYNC) or 'unknown' (not Linux)."""
    if not sys.platform.startswith("linux"):
        return "unknown"
    try:
        libc = _libc()
        buf = ctypes.create_string_buffer(512)  # struct timex, modes = 0: read only
        rc = libc.adjtimex(buf)
    except (OSError, AttributeError):
        return "unknown"
    if rc < 0:
        return "unknown"
    return "unsynchronised" if rc == TIME_ERROR else "synchronised"


DRIFT = 2e-4  # how fast the monotonic clock may drift from true time: 200 ppm, ten times a crystal's usual error


@dataclass(frozen=True)
class Anchor:
    """The cloud's time against the monotonic clock: true time = mono + ``offset``, within ``error``
    at ``mono`` (growing with DRIFT from there)."""

    offset: float
    error: float
    mono: float
    source: str

    def error_at(self, mono: float) -> float:
        return self.error + abs(mono - self.mono) * DRIFT


@dataclass(frozen=True)
class Verdict:
    state: str  # ok | corrected | unconfirmed | before_release | behind_readings | offset_stale
    now: float | None  # the time boundaries are taken from (None: unknown, readings held each minute)
    detail: str = ""
    offset: float | None = None  # true time minus the monotonic clock, when known (stamps held readings)
    stamps: bool = True  # False: readings are taken and held, not stamped


HOLDING = ("before_release", "behind_readings", "offset_stale")  # known wrong, true time unknown

class ClockCheck:
    """Which time readings are stamped with, from all the evidence (see the module's docstring)."""

    def __init__(self, not_before: float = RELEASE_EPOCH, kernel_state=kernel_sync_state, bound: float = 600.0):
        self.not_before = not_before
        self.kernel_state = kernel_state
        self.bound = bound
        self.anchor: Anchor | None = None
        self.floor: float | None = None  # the true time is at least mono + floor (release date, readings stamped)
        self.floor_why = ""
        self.observed = 0  # how many cloud answers gave the time
        self.silent = 0  # how many cloud answers had no Date: a cloud that never gives its time confirms nothing
        self._lock = threading.Lock()

    # -- evidence --------------------------------------------------------------------------
    def observe(self, true_lo: float, true_hi: float, mono_lo: float, mono_hi: float, source: str) -> None:
        """The cloud's time was in [true_lo, true_hi] at some moment of [mono_lo, mono_hi] on the monotonic clock."""
        lo, hi = true_lo - mono_hi, true_hi - mono_lo  # true - mono
        new = Anchor((lo + hi) / 2, (hi - lo) / 2, mono_hi, source)
        with self._lock:
            old = self.anchor
            self.observed += 1
            if old is None or new.error <= old.error_at(mono_hi) or abs(new.offset - old.offset) > new.error + old.error_at(mono_hi):
                self.anchor = new  # as good as what we had, or saying something else: the newest wins

    def observe_date(self, header: str | None, mono_sent: float, mono_received: float) -> None:
        """An HTTP ``Date`` header (whole seconds, when the answer was made) of an answer to a request sent and
        answered at these monotonic times."""
        when = http_date(header)
        if when is not None:
            self.observe(when, when + 1.0, mono_sent, mono_received, "date")
        else:
            with self._lock:
                self.silent += 1

    # -- verdict ---------------------------------------------------------------------------
    def verdict(self, now: float, mono: float, last_stamped: float | None) -> Verdict:
        """Which time to stamp with at this moment (``now``: the box's clock), or why readings are held."""
        with self._lock:
            anchor = self.anchor
            for lower, why in ((self.not_before, "before_release"), (last_stamped, "behind_readings")):
                if lower and (self.floor is None or lower - mono > self.floor):
                    self.floor, self.floor_why = lower - mono, why
            floor, floor_why = self.floor, self.floor_why
        box = now - mono  # the box's clock minus the monotonic one: changes when the box's clock is stepped
        if anchor is not None and anchor.error_at(mono) <= self.bound / 2:
            off = box - anchor.offset
            if abs(off) <= self.bound:
                return Verdict("ok", now, offset=anchor.offset)
            return Verdict("corrected", mono + anchor.offset, (
                f"system time {iso(now)} is {_ago(off)} the cloud's ({anchor.source}, within {anchor.error_at(mono):.1f} s): "
                f"readings are stamped with the cloud's time"), offset=anchor.offset)
        if anchor is not None and abs(box - anchor.offset) - anchor.error_at(mono) > self.bound:
            return Verdict("offset_stale", None, (
                f"system time {iso(now)} is {_ago(box - anchor.offset)} the cloud's, last heard too long ago to stamp "
                f"with: readings are held until the cloud answers"), stamps=False)
        behind = (floor - box) if floor is not None else 0.0
        if floor is not None and behind > self.bound:
            what = ("this agent's release date" if floor_why == "before_release" else "the reading already stamped at")
            return Verdict(floor_why, None, (
                f"system time {iso(now)} is at least {behind:.0f} s behind {what} {iso(mono + floor)} (no RTC, a "
                f"restored time?): readings are held until the cloud gives the time"), stamps=False)
        if self.kernel_state() == "synchronised":
            return Verdict("ok", now, offset=box)
        if anchor is None and not self.silent:
            return Verdict("unconfirmed", now, (
                "the cloud has not given its time since the agent started and the kernel is not synchronised: "
                "readings are taken at the boundaries and held until the cloud confirms the time"), stamps=False)
        return Verdict("ok", now)

    def true_time(self, taken_wall: float, taken_mono: float, boot: str, held_as: str, v: Verdict, wall: float,
                  mono: float, this_boot: str) -> float | None:
        """When a held reading was taken, on the true time, as far as the evidence says now; None: not known
        yet; NaN: never (its boot is over and the box's clock was known wrong then). ``held_as``: the
        verdict's state when it was held."""
        if boot != this_boot:  # its monotonic time means nothing in this boot
            return taken_wall if held_as == "unconfirmed" else math.nan  # the box's clock was not known wrong then
        if v.offset is not None:
            return taken_mono + v.offset
        if v.state == "ok" and abs((taken_wall - taken_mono) - (wall - mono)) <= 1.0:
            return taken_wall  # the clock was not stepped since, and nothing says it is wrong
        return None


def _ago(off: float) -> str:
    return f"{abs(off):.0f} s {'behind' if off < 0 else 'ahead of'}"


def http_date(value: str | None) -> float | None:
    """An HTTP date (``Date``, ``Retry-After``) as epoch seconds; None when absent or unreadable."""
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return when.timestamp()

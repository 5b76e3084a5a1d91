"""Polling: read each meter at its wall-clock boundaries and put the readings in the outbox.

A meter with ``SaveEvery: 5`` is read at :00, :05, ... UTC (multiples of its period
since the epoch) and its reading is stamped with that boundary. All buses are read
in parallel (one thread each); on a bus the meters are read one after another,
the ones currently failing last, so a dead meter costs only its own timeout and
never delays a healthy meter's reading. A meter that keeps failing skips
exponentially more boundaries (capped at ``meter_backoff_max_minutes``), is
logged at ERROR, and shows in ``status``. Each meter's reading is taken and
stored on its own: a meter that fails (no answer, Modbus exception, a total that
is not finite) or whose reading the plausibility check holds back never costs
another meter its reading.

The scheduler stamps with the time ``clock.ClockCheck`` decides from the evidence (the
box's clock, or the cloud's time when the box's is off), holds readings unstamped while
the time is known wrong and not known right, never stamps a boundary twice (it resumes
after the last boundary stamped, kept in the outbox across restarts), and when the clock
jumps forward it polls the current boundary if it is still on time and logs how many
boundaries it skipped. A poll longer than the period is an overrun, logged as such.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Sequence
from dataclasses import dataclass

from . import log
from .clock import Clock, ClockCheck, from_iso, iso
from .config import Config, Meter
from .counters import energy_kwh
from .outbox import Held, Outbox, Reading, Take
from .plausibility import suspect_reason
from .reader import BusReader, MeterReadError

logger = log.get("poll")


@dataclass
class PollResult:
    meter: str
    bus: str
    ts: str
    value: float | None = None
    error: str | None = None
    outcome: str = ""  # stored | exists | dropped | suspect | failed
    model: str | None = None  # the model identified, for maps with an identification register
    reset: bool = False  # the reading starts a new register series (the meter's model changed)


class Poller:
    """Takes the readings due at a boundary, in parallel across buses."""

    def __init__(self, cfg: Config, outbox: Outbox, readers: dict[str, BusReader] | None = None, on_stored=None,
                 clock: Clock | None = None):
        self.cfg = cfg
        self.outbox = outbox
        self.clock = clock or Clock()  # its monotonic clock times each bus's share of a poll
        self.bus_time: dict[str, tuple[int, float]] = {}  # bus -> (meters read, seconds) in the last poll
        self.readers = readers or {name: BusReader(bus) for name, bus in cfg.buses.items()}
        self.failures: dict[str, int] = {}
        self.skip_until: dict[str, float] = {}
        self.on_stored = on_stored
        self.last_good: dict[str, tuple[str, float]] = {}  # MeterId -> (ts, value) last stored (plausibility)
        self.models: dict[str, str] = json.loads(outbox.meta("models") or "{}")  # MeterId -> model last read
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(self.readers)), thread_name_prefix="bus")

    def due(self, boundary: float) -> list[Meter]:
        """Meters whose period divides this boundary and that are not backing off."""
        b = int(round(boundary))
        return [
            m for m in self.cfg.meters
            if b % (m.SaveEvery * 60) == 0 and self.skip_until.get(m.MeterId, 0) <= b
        ]

    def poll(self, boundary: float, meters: list[Meter] | None = None) -> list[PollResult]:
        """Read the meters (buses in parallel), then store every outcome in one transaction."""
        meters = self.due(boundary) if meters is None else meters
        return self._store(self._read(meters, lambda m: self.take(m, boundary)), boundary)

    def _read(self, meters: list[Meter], take) -> list:
        """``take(meter)`` for each meter, buses in parallel, on a bus one after another (failing ones last)."""
        by_bus: dict[str, list[Meter]] = {}
        for m in meters:
            by_bus.setdefault(m.Port, []).append(m)
        futures = []
        for ms in by_bus.values():
            ms.sort(key=lambda m: self.failures.get(m.MeterId, 0) > 0)  # healthy first
            futures.append(self._pool.submit(self._read_bus, ms, take))
        out = []
        self.bus_time = {}
        for bus, f in zip(by_bus, futures):
            taken, seconds = f.result()
            self.bus_time[bus] = (len(taken), seconds)
            out += taken
        return out

    def _read_bus(self, meters: list[Meter], take) -> tuple[list, float]:
        start = self.clock.monotonic()
        taken = [take(m) for m in meters]
        return taken, self.clock.monotonic() - start

    def _store(self, pairs: list, boundary: float, unheld: Sequence[tuple[str, str, float]] = ()) -> list[PollResult]:
        """Store the readings taken for a boundary in one transaction; health, backoff and logs follow."""
        errors: list = []
        outcomes = self.outbox.record_poll([t for _, t in pairs], errors=errors, boundary=iso(boundary), unheld=unheld)
        results = []
        for ((m, res), _), outcome, err in zip(pairs, outcomes, errors):
            res.outcome = outcome
            if outcome == "failed":
                res.error = err or res.error
                self._failed(m, boundary, res.error)
            elif outcome != "suspect":
                if outcome == "stored":
                    self.last_good[m.MeterId] = (res.ts, res.value)
                self._ok(m, res)
            results.append(res)
        self._keep_models(results)
        dropped = [r for r in results if r.outcome == "dropped"]
        if dropped:
            st = self.outbox.status()
            log.event(logger, logging.ERROR, "outbox_full_reading_dropped", count=len(dropped),
                      dropped_total=st["dropped_at_bound"], pending=st["pending"], max_pending=self.outbox.max_pending,
                      meters=",".join(r.meter for r in dropped))
        if self.on_stored and any(r.outcome == "stored" for r in results):
            self.on_stored()
        return results

    def _keep_models(self, results: list[PollResult]) -> None:
        """Remember each meter's model across restarts (a swap while the agent was down is found too). A
        changed model is remembered once its reading starting the new series is in the outbox: one the
        bound dropped leaves the old model, so the next reading starts the series."""
        changed = False
        for r in results:
            if r.model is None or r.outcome not in ("stored", "exists", "suspect"):
                continue
            if r.meter not in self.models or (r.reset and r.outcome != "suspect"):
                changed |= self.models.get(r.meter) != r.model
                self.models[r.meter] = r.model
        if changed:
            self.outbox.set_meta("models", json.dumps(self.models, sort_keys=True))

    def hold(self, held_as: str, meters: list[Meter] | None = None) -> int:
        """Read the meters (all of them when not told) and keep the readings unstamped, with the monotonic and
        the box's time they were taken at: the time is wrong or not confirmed yet (``ClockCheck``, whose
        state ``held_as`` names). Returns how many were kept."""
        boot = self.clock.boot()

        def take(m: Meter):
            try:
                vals = self.readers[m.Port].read(m, energy_only=True)
            except Exception as exc:  # noqa: BLE001 - this meter alone, as in a poll
                return Take(m.MeterId, m.Port, None, error=str(exc))
            mono, wall = self.clock.monotonic(), self.clock.now()
            value, state, _ = energy_kwh(self._energy_register(m, vals), vals.energy_raw, self.outbox.counter(m.MeterId))
            return Held(m.MeterId, boot, mono, wall, held_as, value, m.Port, state)

        taken = self._read(self.cfg.meters if meters is None else meters, take)
        return self.outbox.hold([h for h in taken if isinstance(h, Held)], [t for t in taken if isinstance(t, Take)])

    def stamp_held(self, true_time, now: float, after: float) -> tuple[int, int]:
        """Stamp the held readings whose true time is known now (``true_time(held)``: the time, None while
        not known, NaN when it never will be): each one taken at most LATE_TOLERANCE after a boundary of
        its meter, later than ``after`` (the last boundary stamped: never twice) and not after ``now``, gets
        that boundary (the first one taken for it); the others are dropped and counted. Stamped readings
        are judged and stored as a poll's are. Returns (stamped, dropped)."""
        meters = {m.MeterId: m for m in self.cfg.meters}
        by_boundary: dict[float, list] = {}
        drop = []
        for h in self.outbox.held():
            m = meters.get(h.meter)
            t = true_time(h) if m is not None else math.nan
            if t is None:
                continue
            if m is None or math.isnan(t):
                drop.append(h)
                continue
            period = m.SaveEvery * 60
            b = float(int((t + STAMP_UNCERTAINTY) // period) * period)  # taken just after b, dated a little early
            slot = by_boundary.setdefault(b, [])
            if t - b > LATE_TOLERANCE or b <= after or t > now or any(x.meter == h.meter for _, x in slot):
                drop.append(h)
                continue
            slot.append((m, h))
        stamped = 0
        for b in sorted(by_boundary):
            if not by_boundary[b]:
                continue
            pairs = [self._judged(m, PollResult(m.MeterId, m.Port, iso(b)), iso(b), h.value, None, "")
                     for m, h in by_boundary[b]]
            results = self._store(pairs, b, unheld=[(h.meter, h.boot, h.mono) for _, h in by_boundary[b]])
            stamped += sum(r.outcome in ("stored", "exists", "suspect") for r in results)
        if drop:
            self.outbox.drop_held(drop, "")
        return stamped, len(drop)

    def take(self, m: Meter, boundary: float) -> tuple[tuple[Meter, PollResult], Take]:
        """Read one meter's energy register (only what is delivered) and unwrap its total; the
        reading is stamped with the boundary."""
        ts = iso(boundary)
        res = PollResult(m.MeterId, m.Port, ts)
        try:
            return self._unwrap(m, res, self.readers[m.Port].read(m, energy_only=True), ts)
        except MeterReadError as exc:
            res.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - a driver bug or a value the counter cannot take: this meter alone
            res.error = f"{type(exc).__name__}: {exc}"
        return (m, res), Take(m.MeterId, m.Port, None, error=res.error)

    def _unwrap(self, m: Meter, res: PollResult, vals, ts: str):
        """The reading of ``vals`` at ``ts``, judged: kept, held back as suspect, or (the meter's model changed:
        a swap) the first reading of a new register series."""
        reader = self.readers[m.Port]
        value, state, note = energy_kwh(self._energy_register(m, vals), vals.energy_raw, self.outbox.counter(m.MeterId))
        why = self._judge(m, ts, value)
        cached_model = vals.model
        if why and cached_model is not None:  # the map identifies the meter: read its code again, it may be another
            reader.forget_model(m.MeterId)
            vals = reader.read(m, energy_only=True)  # a failure (an unknown model code) fails this meter with its reason
            value, state, note = energy_kwh(self._energy_register(m, vals), vals.energy_raw,
                                            self.outbox.counter(m.MeterId))
        res.model = vals.model
        known = self.models.get(m.MeterId, cached_model)
        if vals.model is not None and known is not None and vals.model != known:
            value, state, _ = energy_kwh(self._energy_register(m, vals), vals.energy_raw, None)
            log.event(logger, logging.WARNING, "meter_model_changed", meter=m.MeterId, bus=m.Port, ts=ts, old=known,
                      new=vals.model, value=value, note="model changed: a new register series starts here (reset)")
            res.value, res.reset = value, True
            return (m, res), Take(m.MeterId, m.Port, Reading(m.MeterId, ts, value, reset=True), counter=state)
        return self._judged(m, res, ts, value, state, note, vals.energy_raw)

    def _judged(self, m: Meter, res: PollResult, ts: str, value: float, state, note: str, raw=None):
        """The take of a reading: kept, or held back as suspect (plausibility)."""
        why = self._judge(m, ts, value)
        if why:
            log.event(logger, logging.WARNING, "reading_suspect", meter=m.MeterId, bus=m.Port, ts=ts, value=value,
                      raw=raw, reason=why, note="held back, not sent; see status")
            res.value, res.error = value, why
            return (m, res), Take(m.MeterId, m.Port, Reading(m.MeterId, ts, value), counter=state, suspect=why)
        if note == "rollover":
            log.event(logger, logging.INFO, "register_rollover", meter=m.MeterId, bus=m.Port, ts=ts, raw=raw, value=value)
        elif note == "decrease":  # with nothing kept to compare it with (a first reading): passed on as read
            log.event(logger, logging.WARNING, "register_decreased", meter=m.MeterId, bus=m.Port, ts=ts, raw=raw,
                      value=value, note="no reading kept to judge it against: passed on as read")
        res.value = value
        return (m, res), Take(m.MeterId, m.Port, Reading(m.MeterId, ts, value), counter=state)

    @staticmethod
    def _energy_register(m: Meter, vals):
        return (vals.map or m.map).registers[m.map.energy]

    def _judge(self, m: Meter, ts: str, value: float) -> str | None:
        """Why this reading cannot follow the meter's last one kept (plausibility), or None."""
        prev = self.last_good.get(m.MeterId)
        cached = prev is not None and prev[0] < ts
        if not cached:
            prev = self.outbox.last_reading(m.MeterId, ts)
        why = suspect_reason(prev, ts, value, m.power_bound_kw())
        if why and cached and (kept := self.outbox.last_reading(m.MeterId, ts)) != prev:
            why = suspect_reason(kept, ts, value, m.power_bound_kw())   # readings released since (release-suspect)
        return why

    def _ok(self, m: Meter, res: PollResult) -> None:
        if self.failures.get(m.MeterId):
            log.event(logger, logging.INFO, "meter_recovered", meter=m.MeterId, bus=m.Port, after_failures=self.failures[m.MeterId])
        self.failures[m.MeterId] = 0
        self.skip_until.pop(m.MeterId, None)
        log.event(logger, logging.DEBUG, "reading", meter=m.MeterId, bus=m.Port, ts=res.ts, value=res.value, outcome=res.outcome)

    def _failed(self, m: Meter, boundary: float, error: str) -> None:
        n = self.failures.get(m.MeterId, 0) + 1
        self.failures[m.MeterId] = n
        period = m.SaveEvery * 60
        cap = max(0, self.cfg.meter_backoff_max_minutes * 60 // period)
        skip = min(2 ** (n - 1) - 1, cap)
        self.skip_until[m.MeterId] = boundary + (skip + 1) * period
        level = logging.ERROR if n >= 3 else logging.WARNING
        log.event(logger, level, "read_failed", meter=m.MeterId, bus=m.Port, ts=iso(boundary), failures=n,
                  error=error, next_try=iso(self.skip_until[m.MeterId]))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for r in self.readers.values():
            r.close()


def next_boundary(meters: list[Meter], now: float) -> float:
    """The first boundary strictly after ``now`` of any meter."""
    return min((int(now) // (m.SaveEvery * 60) + 1) * m.SaveEvery * 60 for m in meters)


LATE_TOLERANCE = 60.0  # a boundary read later than this after it is skipped (clock jumped forward, box stalled)
MAX_WAIT = 30.0  # longest single wait: a clock jump is noticed within this
HOLD_EVERY = LATE_TOLERANCE  # while the time is known wrong, every meter is read this often (monotonic clock)
HOLD_LOOK = 5.0  # while holding, the evidence is looked at this often (the cloud's answer ends the hold)
STEP_SLACK = 2.0  # a poll whose wall time and monotonic time differ by more saw the clock stepped
# How early a held reading's true time may be dated: the cloud's Date is whole seconds (truncated) and the
# request's round trip adds to it. A reading taken just after a boundary and dated up to this much before it
# belongs to that boundary, not to the one a whole period earlier.
STAMP_UNCERTAINTY = 2.0


def _multiples(lo: float, hi: float, p: int) -> int:
    """How many multiples of p lie in [lo, hi)."""
    if hi <= lo:
        return 0
    return max(0, (int(hi) - 1) // p - (int(lo) + p - 1) // p + 1)


class Scheduler:
    """Sleeps until the next boundary and polls; runs until ``stop`` is set.

    The time it stamps with comes from ``ClockCheck`` (the box's clock, or the cloud's time when the
    box's is off by more than the bound). While the time is known to be wrong and the true time is
    not known, it reads every meter each ``HOLD_EVERY`` seconds of the monotonic clock and holds the
    readings unstamped; once the true time is known they are stamped (or dropped and counted). The
    state is logged when it changes and kept in the outbox for ``status``. A poll that lasts past the
    next boundary is an overrun (``poll_overrun``), never a clock jump: the next poll waits for its
    own boundary, so every reading is taken at its boundary's poll."""

    def __init__(self, poller: Poller, clock: Clock, stop: threading.Event, check: ClockCheck | None = None):
        self.poller, self.clock, self.stop = poller, clock, stop
        self.check = check or ClockCheck()
        self.last = 0.0  # last boundary polled: never polled twice, even across restarts
        self.state: str | None = None
        self.kernel = "unknown"
        self._next_hold: float | None = None  # monotonic time of the next read while holding
        self._tried: tuple | None = None  # the evidence held readings were last tried with

    def run(self) -> None:  # noqa: C901 - the one loop of the clock's states; each branch is one state's step
        outbox = self.poller.outbox
        lb = outbox.last_boundary()
        self.last = max(self.last, from_iso(lb) if lb else 0.0)
        kernel = self.check.kernel_state()
        if kernel == "unsynchronised":
            log.event(logger, logging.WARNING, "clock_kernel_unsynchronised", kernel=kernel,
                      note="warning only: the time is judged against the cloud's, the release date and the "
                           "readings already stamped")
        self.kernel = kernel
        meters = self.poller.cfg.meters
        held = outbox.held_count() > 0
        cursor = None  # the next boundary is the first one after this time
        base: str | None = None  # the time boundaries are taken from: "box", "cloud", or None (unknown)
        while not self.stop.is_set():
            v = self.check.verdict(self.clock.now(), self.clock.monotonic(), self.last or None)
            self._set_state(v)
            b = None if v.now is None else "cloud" if v.state == "corrected" else "box"
            if b != base:
                cursor, base = None, b  # a new time base: boundaries missed meanwhile are not "skipped"
            if v.now is None:  # known wrong, the true time unknown: read each minute, hold the readings
                if self._hold(v.state):
                    held, self._tried = True, None
                left = (self._next_hold or 0.0) - self.clock.monotonic()
                if self.clock.wait(self.stop, min(HOLD_LOOK, max(0.0, left))):
                    return
                continue
            if held and v.stamps and (v.state, v.offset is None) != self._tried:
                held = self._stamp_held(v)  # tried again when the evidence changes (or a new reading is held)
            now = v.now
            if cursor is None:  # (re)start: boundaries missed while stopped or untrusted are not "skipped"
                cursor = max(self.last, now)
            nb = next_boundary(meters, cursor)
            if nb > now:  # look again soon while unconfirmed: the cloud's first answer stamps what is held
                if self.clock.wait(self.stop, min(nb - now, MAX_WAIT if v.stamps else HOLD_LOOK)):
                    return
                continue  # look again: the clock may have jumped while we waited
            target = self._on_time(nb, now)
            if target is None:
                cursor = now
                continue
            cursor = target
            began = self.clock.monotonic()
            try:
                if v.stamps:
                    self.last = target
                    self.poller.poll(target)
                elif self.poller.hold(v.state, self.poller.due(target)):  # unconfirmed: stamped once the cloud
                    held, self._tried = True, None                             # confirms the time
            except Exception:  # noqa: BLE001 - e.g. disk full: log, keep the agent alive
                log.event(logger, logging.ERROR, "poll_failed", ts=iso(target), exc_info=True)
            cursor = self._overrun(target, now, began) or cursor

    def _overrun(self, target: float, now: float, began: float) -> float | None:
        """After a poll that lasted past the next boundary: log ``poll_overrun`` (how long, and how many meters
        the slowest bus can read in a period) and return the time the next poll's boundary must follow, so
        the boundaries it overran are skipped, not read late. None when the poll ended in time, or when the
        clock was stepped meanwhile (that is a clock jump, judged as such)."""
        duration = self.clock.monotonic() - began
        after = self.check.verdict(self.clock.now(), self.clock.monotonic(), self.last or None)
        if after.now is None or after.state != self.state:
            return None
        meters = self.poller.cfg.meters
        nb = next_boundary(meters, target)
        elapsed = after.now - now
        if after.now < nb or abs(elapsed - duration) > STEP_SLACK + 0.01 * duration:
            return None
        period = nb - target
        bus, (count, seconds) = max(self.poller.bus_time.items(), key=lambda kv: kv[1][1], default=("", (0, 0.0)))
        per_meter = seconds / count if count else 0.0
        skipped = [_multiples(target + 1, after.now + 1, m.SaveEvery * 60) for m in meters]
        log.event(logger, logging.WARNING, "poll_overrun", ts=iso(target), duration=round(duration, 1), period=int(period),
                  bus=bus, meters=count, seconds_per_meter=round(per_meter, 3),
                  bus_can_carry=int(period // per_meter) if per_meter else None,
                  skipped_boundaries=max(skipped), skipped_readings=sum(skipped),
                  next=iso(next_boundary(meters, after.now)),
                  hint="the bus cannot read its meters within the period: fewer meters per bus, a higher baud "
                       "rate, or a longer SaveEvery")
        return after.now

    def _hold(self, state: str) -> bool:
        """Read every meter and hold the readings, each HOLD_EVERY seconds; True when some were kept."""
        mono = self.clock.monotonic()
        if self._next_hold is not None and mono < self._next_hold:
            return False
        self._next_hold = mono + HOLD_EVERY
        try:
            return self.poller.hold(state) > 0
        except Exception:  # noqa: BLE001 - e.g. disk full: log, keep the agent alive
            log.event(logger, logging.ERROR, "hold_failed", exc_info=True)
            return False

    def _stamp_held(self, v) -> bool:
        """Stamp the held readings the evidence now dates; True while some stay held."""
        wall, mono, boot = self.clock.now(), self.clock.monotonic(), self.clock.boot()
        outbox = self.poller.outbox
        try:
            stamped, dropped = self.poller.stamp_held(
                lambda h: self.check.true_time(h.wall, h.mono, h.boot, h.held_as, v, wall, mono, boot), v.now,
                self.last)
        except Exception:  # noqa: BLE001 - they stay held; tried again at the next look
            log.event(logger, logging.ERROR, "held_readings_not_stamped", exc_info=True)
            return True
        self._tried = (v.state, v.offset is None)
        lb = outbox.last_boundary()
        self.last = max(self.last, from_iso(lb) if lb else 0.0)
        if stamped or dropped:
            log.event(logger, logging.WARNING if dropped else logging.INFO, "held_readings_stamped", stamped=stamped,
                      dropped=dropped, dropped_total=int(outbox.meta("held_dropped") or 0),
                      note="readings taken while the time was wrong or unconfirmed, stamped with the true time; "
                           "dropped: not taken within a minute after a boundary of their meter")
        return outbox.held_count() > 0

    def _on_time(self, nb: float, now: float) -> float | None:
        """The boundary to poll now: ``nb`` if on time; after a forward jump the latest
        boundary if still on time (else None), the ones in between logged as skipped."""
        if now - nb <= LATE_TOLERANCE:
            return nb
        meters = self.poller.cfg.meters
        latest = max((int(now) // (m.SaveEvery * 60)) * m.SaveEvery * 60 for m in meters)
        target = latest if now - latest <= LATE_TOLERANCE else None
        end = latest if target is not None else now + 1
        per_meter = [_multiples(nb, end, m.SaveEvery * 60) for m in meters]
        skipped = max(per_meter)
        log.event(logger, logging.WARNING, "clock_jumped_forward", expected=iso(nb), now=iso(now),
                  skipped_boundaries=skipped, skipped_readings=sum(per_meter),
                  polling=iso(target) if target is not None else "next boundary")
        return target

    def _set_state(self, v) -> bool:
        """Log and keep a change of the clock's state; True when it changed."""
        if v.state == self.state:
            return False
        now = v.now if v.now is not None else self.clock.now()
        if v.state == "corrected":
            log.event(logger, logging.WARNING, "clock_corrected", detail=v.detail,
                      note="the box's clock is not used to stamp readings until it agrees with the cloud's")
        elif v.state == "unconfirmed":
            log.event(logger, logging.INFO, "clock_unconfirmed", detail=v.detail)
        elif self.state == "unconfirmed" and v.state == "ok":
            log.event(logger, logging.INFO, "clock_confirmed", now=iso(now))
        elif v.state != "ok":
            log.event(logger, logging.ERROR, "clock_not_trusted", state=v.state, detail=v.detail,
                      note="no reading is stamped until the true time is known; readings are held meanwhile")
        elif self.state is not None:
            log.event(logger, logging.INFO, "clock_trusted_again", now=iso(now))
        self.state = v.state
        try:
            self.poller.outbox.set_clock_state({"state": v.state, "detail": v.detail, "since": iso(now),
                                                "kernel": self.kernel})
        except Exception:  # noqa: BLE001 - a status note must not stop the scheduler
            log.event(logger, logging.ERROR, "clock_state_not_saved", exc_info=True)
        return True

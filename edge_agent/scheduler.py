"""Polling: read each meter at its wall-clock boundaries and put the readings in the outbox.

A meter with ``SaveEvery: 5`` is read at :00, :05, ... UTC (multiples of its period
since the epoch) and its reading is stamped with that boundary. All buses are read
in parallel (one thread each); on a bus the meters are read one after another,
the ones currently failing last, so a dead meter costs only its own timeout and
never delays a healthy meter's reading. A meter that keeps failing skips
exponentially more boundaries (capped at ``meter_backoff_max_minutes``), is
logged at ERROR, and shows in ``status``.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from . import log
from .clock import Clock, iso
from .config import Config, Meter
from .counters import energy_kwh
from .outbox import Outbox, Reading, Take
from .reader import BusReader, MeterReadError

L = log.get("poll")


@dataclass
class PollResult:
    meter: str
    bus: str
    ts: str
    value: float | None = None
    error: str | None = None
    outcome: str = ""  # stored | exists | dropped | failed


class Poller:
    """Takes the readings due at a boundary, in parallel across buses."""

    def __init__(self, cfg: Config, outbox: Outbox, readers: dict[str, BusReader] | None = None, on_stored=None):
        self.cfg = cfg
        self.outbox = outbox
        self.readers = readers or {name: BusReader(bus) for name, bus in cfg.buses.items()}
        self.failures: dict[str, int] = {}
        self.skip_until: dict[str, float] = {}
        self.on_stored = on_stored
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
        by_bus: dict[str, list[Meter]] = {}
        for m in meters:
            by_bus.setdefault(m.Port, []).append(m)
        futures = []
        for ms in by_bus.values():
            ms.sort(key=lambda m: self.failures.get(m.MeterId, 0) > 0)  # healthy first
            futures.append(self._pool.submit(self._poll_bus, ms, boundary))
        pairs = [p for f in futures for p in f.result()]
        outcomes = self.outbox.record_poll([t for _, t in pairs])
        results = []
        for ((m, res), _), outcome in zip(pairs, outcomes):
            res.outcome = outcome
            if outcome == "failed":
                self._failed(m, boundary, res.error)
            else:
                self._ok(m, res)
            results.append(res)
        dropped = [r for r in results if r.outcome == "dropped"]
        if dropped:
            st = self.outbox.status()
            log.event(L, logging.ERROR, "outbox_full_reading_dropped", count=len(dropped),
                      dropped_total=st["dropped_at_bound"], pending=st["pending"], max_pending=self.outbox.max_pending,
                      meters=",".join(r.meter for r in dropped))
        if self.on_stored and any(r.outcome == "stored" for r in results):
            self.on_stored()
        return results

    def _poll_bus(self, meters: list[Meter], boundary: float):
        return [self.take(m, boundary) for m in meters]

    def take(self, m: Meter, boundary: float) -> tuple[tuple[Meter, PollResult], Take]:
        """Read one meter and unwrap its total; the reading is stamped with the boundary."""
        ts = iso(boundary)
        res = PollResult(m.MeterId, m.Port, ts)
        try:
            vals = self.readers[m.Port].read(m)
        except MeterReadError as exc:
            res.error = str(exc)
            return (m, res), Take(m.MeterId, m.Port, None, error=res.error)
        except Exception as exc:  # noqa: BLE001 - a driver bug must not stop the other meters
            res.error = f"{type(exc).__name__}: {exc}"
            return (m, res), Take(m.MeterId, m.Port, None, error=res.error)
        reg = m.map.registers[m.map.energy]
        value, state, note = energy_kwh(reg, vals.energy_raw, self.outbox.counter(m.MeterId))
        if note == "rollover":
            log.event(L, logging.INFO, "register_rollover", meter=m.MeterId, bus=m.Port, ts=ts, raw=vals.energy_raw, value=value)
        elif note == "decrease":
            log.event(L, logging.WARNING, "register_decreased", meter=m.MeterId, bus=m.Port, ts=ts, raw=vals.energy_raw,
                      value=value, note="passed on as read; the cloud treats it as a reset")
        res.value = value
        return (m, res), Take(m.MeterId, m.Port, Reading(m.MeterId, ts, value), counter=state)

    def _ok(self, m: Meter, res: PollResult) -> None:
        if self.failures.get(m.MeterId):
            log.event(L, logging.INFO, "meter_recovered", meter=m.MeterId, bus=m.Port, after_failures=self.failures[m.MeterId])
        self.failures[m.MeterId] = 0
        self.skip_until.pop(m.MeterId, None)
        log.event(L, logging.DEBUG, "reading", meter=m.MeterId, bus=m.Port, ts=res.ts, value=res.value, outcome=res.outcome)

    def _failed(self, m: Meter, boundary: float, error: str) -> None:
        n = self.failures.get(m.MeterId, 0) + 1
        self.failures[m.MeterId] = n
        period = m.SaveEvery * 60
        cap = max(0, self.cfg.meter_backoff_max_minutes * 60 // period)
        skip = min(2 ** (n - 1) - 1, cap)
        self.skip_until[m.MeterId] = boundary + (skip + 1) * period
        level = logging.ERROR if n >= 3 else logging.WARNING
        log.event(L, level, "read_failed", meter=m.MeterId, bus=m.Port, ts=iso(boundary), failures=n,
                  error=error, next_try=iso(self.skip_until[m.MeterId]))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for r in self.readers.values():
            r.close()


def next_boundary(meters: list[Meter], now: float) -> float:
    """The first boundary strictly after ``now`` of any meter."""
    return min((int(now) // (m.SaveEvery * 60) + 1) * m.SaveEvery * 60 for m in meters)


class Scheduler:
    """Sleeps until the next boundary and polls; runs until ``stop`` is set."""

    def __init__(self, poller: Poller, clock: Clock, stop: threading.Event):
        self.poller, self.clock, self.stop = poller, clock, stop
        self.last = 0.0  # last boundary polled: a wait that ends early never polls it twice

    def run(self) -> None:
        while not self.stop.is_set():
            nb = next_boundary(self.poller.cfg.meters, max(self.clock.now(), self.last))
            if self.clock.wait(self.stop, nb - self.clock.now()):
                return
            self.last = nb
            try:
                self.poller.poll(nb)
            except Exception:  # noqa: BLE001 - e.g. disk full: log, keep the agent alive
                log.event(L, logging.ERROR, "poll_failed", ts=iso(nb), exc_info=True)

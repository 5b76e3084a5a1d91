"""A poll longer than the period: an overrun, said as such, and every reading taken at its boundary's poll.

The meters are Eastron SDM630s laid out from Eastron's document on pymodbus's own ``ModbusTcpServer``
(``maker_meters``). The line is a 2-wire RS-485 bus at 2400 baud (the SDM630's slowest setting):
each request the agent sends costs, on virtual time, what it costs on such a line: the request
frame (8 bytes) and the answer (5 + 2 x registers bytes) at 10 bits a byte, the 3.5-character
silence before each frame, and the meter's turnaround. The bus carries as many meters as take
15 % more than the 1-minute period (the issue's 80 SDM630 at 2400 baud: 68.7 s a poll), whatever
read plan the agent uses.
"""

import logging
import math
import threading

import pytest

from conftest import meter, write_config
from edge_agent.clock import ClockCheck, FakeClock, iso
from edge_agent.config import load_config
from edge_agent.outbox import Outbox
from edge_agent.reader import BusReader
from edge_agent.scheduler import Poller, Scheduler
from edge_agent.transport import open_line
from edge_support import free_port
from maker_meters import MeterSpec, start_meters

BAUD, BITS = 2400, 10  # 8N1: start, 8 data, stop
TURNAROUND = 0.3  # s from the end of a request to the start of the answer (a slow meter or repeater)
B = 1_800_000_000  # a boundary after the release date, a multiple of 60


def wire_time(count: int) -> float:
    """Seconds one read of ``count`` registers holds a 2400-baud RTU line."""
    frames = 8 + 5 + 2 * count
    return (frames + 2 * 3.5) * BITS / BAUD + TURNAROUND


class PacedLine:
    """A line whose reads cost their line time on the virtual clock (and are recorded)."""

    def __init__(self, line, clock, reads):
        self._line, self._clock, self.reads = line, clock, reads

    def __getattr__(self, name):
        return getattr(self._line, name)

    def read(self, unit: int, function: int, address: int, count: int) -> list[int]:
        self._clock.advance(wire_time(count))
        words = self._line.read(unit, function, address, count)
        self.reads.append((unit, self._clock.now()))
        return words


class CountingPoller(Poller):
    def __init__(self, *a, polls, stop, **kw):
        super().__init__(*a, **kw)
        self.boundaries, self.polls, self.stop = [], polls, stop

    def poll(self, boundary, meters=None):
        self.boundaries.append(boundary)
        out = super().poll(boundary, meters)
        if len(self.boundaries) >= self.polls:
            self.stop.set()
        return out


@pytest.mark.parametrize("save_every", [1])
def test_a_poll_longer_than_the_period_is_an_overrun_and_readings_keep_their_boundary(tmp_path, caplog, save_every):
    caplog.set_level(logging.INFO)
    port = free_port()
    clock = FakeClock(B - 5)
    reads: list = []

    def paced(bus):
        return PacedLine(open_line(bus), clock, reads)

    probe_bus = start_meters(port, [MeterSpec("Eastron.SDM630", 1, 1000.0)])
    path = write_config(tmp_path, [meter("m1", 1, "RS485", "Eastron.SDM630", mtype="SDM630", start=None,
                                         save_every=save_every)],
                        {"RS485": {"type": "tcp", "host": "127.0.0.1", "port": port}})
    probe = BusReader(load_config(path).buses["RS485"], line_factory=paced)
    probe.read(load_config(path).meters[0], energy_only=True)  # the reader settles on the plan the meter answers (it may step down)
    before = clock.now()
    probe.read(load_config(path).meters[0], energy_only=True)  # what run reads
    per_meter = clock.now() - before  # what one meter costs with the plan the agent reads by
    probe.close()
    probe_bus.stop()
    period = 60 * save_every
    n = min(247, math.ceil(1.15 * period / per_meter))  # a poll takes 15 % more than the period
    reads.clear()
    clock = FakeClock(B - 5)

    bus = start_meters(port, [MeterSpec("Eastron.SDM630", u, 1000.0 + u) for u in range(1, n + 1)])
    path = write_config(tmp_path, [meter(f"m{u}", u, "RS485", "Eastron.SDM630", mtype="SDM630", start=None,
                                         save_every=save_every) for u in range(1, n + 1)],
                        {"RS485": {"type": "tcp", "host": "127.0.0.1", "port": port}})
    cfg = load_config(path)
    stop = threading.Event()
    reader = BusReader(cfg.buses["RS485"], line_factory=lambda b: PacedLine(open_line(b), clock, reads))
    poller = CountingPoller(cfg, Outbox(cfg.buffer), readers={"RS485": reader}, clock=clock, polls=6, stop=stop)
    try:
        t = threading.Thread(target=Scheduler(poller, clock, stop, ClockCheck(kernel_state=lambda: "synchronised")).run)
        t.start()
        t.join(120)
        assert not t.is_alive()
    finally:
        poller.close()
        bus.stop()

    duration = n * per_meter  # once the reader has settled on its plan (the first poll may step down)
    overruns = [r.kv for r in caplog.records if r.getMessage() == "poll_overrun"]
    assert len(overruns) == 6 and not [r for r in caplog.records if r.getMessage() == "clock_jumped_forward"]
    for k, (o, b) in enumerate(zip(overruns, poller.boundaries)):
        assert o["ts"] == iso(b) and (o["bus"], int(o["meters"]), int(o["period"])) == ("RS485", n, period)
        if k:
            assert float(o["duration"]) == pytest.approx(duration, abs=0.05)
            assert int(o["bus_can_carry"]) == int(period // per_meter) < n
    # each poll starts at its own boundary (never late: the boundary it overran is skipped, not read late)
    first = poller.boundaries[0]
    assert poller.boundaries == [first + 2 * period * k for k in range(6)] and first % period == 0
    by_poll: dict = {b: [] for b in poller.boundaries}
    for m, ts, _, _ in poller.outbox.all_readings():
        by_poll[next(b for b in poller.boundaries if iso(b) == ts)].append(m)
    assert all(len(ms) == n for ms in by_poll.values())
    # every reading was taken during its own boundary's poll: after its stamp, by at most that poll's duration
    ends = [b + float(o["duration"]) for b, o in zip(poller.boundaries, overruns)]
    for unit, when in reads:
        b = max(x for x in poller.boundaries if x < when)
        assert when <= ends[poller.boundaries.index(b)] + 0.05, (unit, when - b)

"""The time readings are stamped with, from all the evidence: the verdicts of ``ClockCheck``, and held
readings stamped by the real poller against meters on pymodbus's own server, on virtual time."""

import logging
import math
import threading

import pytest

from conftest import meter, write_config
from edge_agent.clock import DRIFT, ClockCheck, FakeClock, from_iso, iso
from edge_agent.config import load_config
from edge_agent.outbox import Outbox
from edge_agent.scheduler import HOLD_EVERY, STAMP_UNCERTAINTY, Poller, Scheduler
from edge_support import free_port
from maker_meters import MeterSpec, start_meters

B = 1_800_000_000  # a 5-minute boundary after the release date
MONO = 5_000.0  # the monotonic clock at B


def _check(kernel="unsynchronised", bound=600.0):
    return ClockCheck(kernel_state=lambda: kernel, bound=bound)


def test_the_cloud_decides_when_it_has_spoken():
    c = _check()
    assert c.verdict(B, MONO, None).state == "unconfirmed"  # nothing says wrong, nothing confirmed
    c.observe(B + 0.2, B + 0.3, MONO, MONO + 0.1, "status")
    v = c.verdict(B + 60, MONO + 60, None)
    assert (v.state, v.now, v.stamps) == ("ok", B + 60, True)
    v = c.verdict(B - 3 * 86400 + 60, MONO + 60, None)  # the same moment, the box 3 days behind
    assert v.state == "corrected" and v.now == pytest.approx(B + 60.25, abs=0.1) and v.stamps
    assert "259200 s behind the cloud's" in v.detail


def test_a_fresh_verdict_by_the_cloud_goes_stale_with_drift_and_then_holds():
    c = _check(bound=600.0)
    c.observe(B, B + 1, MONO, MONO + 0.1, "date")
    box = B - 3 * 86400
    stale_after = (600.0 / 2 - 0.55) / DRIFT  # the anchor's error reaches half the bound
    assert c.verdict(box + 1000, MONO + 1000, None).state == "corrected"
    v = c.verdict(box + stale_after + 10, MONO + stale_after + 10, None)
    assert (v.state, v.now, v.stamps) == ("offset_stale", None, False)


def test_a_clock_behind_the_last_stamp_stays_wrong_until_it_is_stepped():
    """The lower bound is kept against the monotonic clock: passing the last stamp later proves nothing."""
    c = _check(kernel="synchronised")
    assert c.verdict(B - 1800, MONO, B).state == "behind_readings"
    assert c.verdict(B + 600, MONO + 2400, B).state == "behind_readings"  # 40 minutes on, still 30 behind
    v = c.verdict(B + 2400 + 1795, MONO + 2400, B)  # stepped forward (NTP): no longer known wrong
    assert v.state == "ok" and v.offset is not None  # and the synchronised kernel dates held readings


def test_a_cloud_that_never_gives_its_time_confirms_nothing_and_blocks_nothing():
    c = _check()
    c.observe_date(None, MONO, MONO + 0.1)  # an answer without a Date
    assert c.verdict(B, MONO, None).state == "ok"


def test_held_readings_of_another_boot():
    """The monotonic clock restarts with the box: a reading held as unconfirmed keeps the box's time it was
    taken at (nothing said it was wrong); one held while the clock was known wrong can never be dated."""
    c = _check()
    c.observe(B, B + 1, MONO, MONO + 0.1, "date")
    v = c.verdict(B + 10, MONO + 10, None)
    assert c.true_time(B - 290, 17.0, "old", "unconfirmed", v, B + 10, MONO + 10, "now") == B - 290
    assert math.isnan(c.true_time(B - 290, 17.0, "old", "behind_readings", v, B + 10, MONO + 10, "now"))
    assert c.true_time(B - 290, MONO - 300, "now", "behind_readings", v, B + 10, MONO + 10, "now") == \
        pytest.approx(B - 300 + 0.5, abs=0.1)


def _two_meters(tmp_path):
    """Pymodbus's server with an SDM630 ("five", every 5 minutes) and an EM24 ("one", every minute) on one
    TCP gateway, and the agent's configuration of them: (the server, the config)."""
    port = free_port()
    bus = start_meters(port, [MeterSpec("Eastron.SDM630", 1, 500.0), MeterSpec("CarloGavazzi.EM24", 2, 800.0)])
    path = write_config(tmp_path, [meter("five", 1, "GW", "Eastron.SDM630", mtype="SDM630", start=None),
                                   meter("one", 2, "GW", "CarloGavazzi.EM24", mtype="EM24", start=None, save_every=1)],
                        {"GW": {"type": "tcp", "host": "127.0.0.1", "port": port}})
    return bus, load_config(path)


def test_held_readings_are_stamped_at_their_meters_boundaries_by_the_real_poller(tmp_path, caplog):
    """A box restarted 40 minutes behind its last stamp, two meters (5 and 1 minute) on pymodbus's server:
    each is read every minute and held; the cloud's time then stamps each reading taken within a minute
    after a boundary of its meter with that boundary (never the one already stamped), and drops the
    others, counted."""
    caplog.set_level(logging.INFO)
    bus, cfg = _two_meters(tmp_path)
    last = B + 2400  # stamped before the power cut
    Outbox(cfg.buffer).record_poll([], boundary=iso(last))
    clock = FakeClock(B + 30)  # restored 40 minutes behind: the true time is B + 2430
    check = ClockCheck(kernel_state=lambda: "unsynchronised", bound=120.0)
    stop = threading.Event()

    class Holding(Poller):
        def hold(self, held_as, meters=None):
            n = super().hold(held_as, meters)
            holds.append(clock.monotonic())
            if len(holds) == 12:  # twelve minutes held, then the network comes up
                true = clock.now() + 2400
                check.observe(true, true + 1, clock.monotonic(), clock.monotonic() + 0.05, "date")
            return n

        def poll(self, b, meters=None):
            out = super().poll(b, meters)
            stop.set()
            return out

    holds: list = []
    poller = Holding(cfg, Outbox(cfg.buffer), clock=clock)
    try:
        t = threading.Thread(target=Scheduler(poller, clock, stop, check).run)
        t.start()
        t.join(60)
        assert not t.is_alive()
    finally:
        poller.close()
        bus.stop()
    offset = check.anchor.offset
    true = [m + offset for m in holds]
    assert all(b - a == HOLD_EVERY for a, b in zip(holds, holds[1:]))
    def boundary(t, period):   # the boundary a reading dated t was taken for (dated up to STAMP_UNCERTAINTY early)
        return int((t + STAMP_UNCERTAINTY) // period) * period

    expect = {"one": sorted({boundary(t, 60) for t in true} - {last}),  # never a boundary stamped before
              "five": sorted({boundary(t, 300) for t in true if t - boundary(t, 300) <= 60} - {last})}
    got: dict = {"one": [], "five": []}
    values: dict[str, set] = {"one": set(), "five": set()}
    for m, ts, value, _ in poller.outbox.all_readings():
        if from_iso(ts) <= max(true):
            got[m].append(from_iso(ts))
            values[m].add(value)
    assert values == {"one": {800.0}, "five": {500.0}}  # what the meters said
    assert got == expect and all(t > last for t in got["one"] + got["five"])
    st = poller.outbox.status()
    assert st["held_readings"] == 0 and st["held_dropped"] == 2 * len(holds) - len(expect["one"]) - len(expect["five"])
    (stamped,) = [r.kv for r in caplog.records if r.getMessage() == "held_readings_stamped"]
    assert int(stamped["stamped"]) == len(expect["one"]) + len(expect["five"])


def test_a_held_reading_dated_a_little_before_its_boundary_gets_that_boundary(tmp_path):
    """The issue's box is exactly 3 days behind, so its boundaries are true ones: a reading held just after
    one (0.3 s) is dated by the cloud's whole-second Date up to a second early (0.8 s here). It belongs to
    that boundary: flooring the date gave the 1-minute meter the minute before (a value one minute off)
    and dropped the 5-minute meter's reading as 299 s late."""
    bus, cfg = _two_meters(tmp_path)
    box_behind = 3 * 86400
    clock = FakeClock(B - box_behind + 0.3)   # the box's boundary B - 3 days, read 0.3 s after it
    poller = Poller(cfg, Outbox(cfg.buffer), clock=clock)
    try:
        assert poller.hold("unconfirmed") == 2
        dated_early = 0.8    # the cloud's Date, truncated to the second, makes the offset that much short
        stamped, dropped = poller.stamp_held(lambda h: h.wall + box_behind - dated_early, now=B + 5, after=B - 3600)
    finally:
        poller.close()
        bus.stop()
    assert (stamped, dropped) == (2, 0)
    assert sorted((m, from_iso(ts)) for m, ts, _v, _ in poller.outbox.all_readings()) == [("five", B), ("one", B)]
    assert STAMP_UNCERTAINTY >= 1.0   # at least the Date's own resolution

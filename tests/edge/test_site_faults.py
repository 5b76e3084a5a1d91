"""Faults on site the agent must judge for itself: implausible totals, and a wrong or jumping clock.

Plausibility runs against the project's simulator (frozen load, totals set by the test); the clock
runs on a scripted fake clock that the test moves forward and backward."""

import json
import logging
import threading

import pytest

from conftest import meter, write_config
from edge_agent import cli
from edge_agent.clock import RELEASE_EPOCH, ClockCheck, FakeClock, from_iso, iso
from edge_agent.config import ConfigError, load_config
from edge_agent.outbox import Outbox
from edge_agent.scheduler import LATE_TOLERANCE, Poller, Scheduler
from edge_agent.simulator import SiteSimulator
from edge_support import free_port

B = 1_800_000_000  # a 5-minute boundary after the release date

pytestmark = pytest.mark.usefixtures("no_stale_log_handler")  # cli.main runs in these tests


@pytest.fixture
def sim_site(tmp_path):
    port = free_port()
    ms = [meter("em24", 1, "GW", "CarloGavazzi.EM24", start=None),
          meter("sdm120", 2, "GW", "Eastron.SDM120", "1", start=None),
          dict(meter("sdm120big", 3, "GW", "Eastron.SDM120", "1", start=None), max_power_kw=200)]
    path = write_config(tmp_path, ms, {"GW": {"type": "tcp", "host": "127.0.0.1", "port": port}})
    cfg = load_config(path)
    sim = SiteSimulator(cfg).start()
    for s in sim.meters.values():
        s.load_kw = 0.0
    poller = Poller(cfg, Outbox(cfg.buffer))
    yield path, cfg, sim, poller
    poller.close()
    sim.stop()


def _poll(poller, sim, t, **energies):
    for name, kwh in energies.items():
        sim.meters[name].set_energy(kwh)
    return {r.meter: r for r in poller.poll(t)}


def test_a_replaced_meter_is_held_back_until_its_readings_are_released(sim_site, capsys):
    """A meter swapped for one whose total is 400x larger: every reading is suspect against the old
    meter's last one, until the operator releases them (another process, as the command line is);
    then they are sent and the running poller judges the next reading against them."""
    path, cfg, sim, poller = sim_site
    ob = poller.outbox
    assert _poll(poller, sim, B, em24=120.0)["em24"].outcome == "stored"
    for k in (1, 2):
        assert _poll(poller, sim, B + 300 * k, em24=48_000.0 + k)["em24"].outcome == "suspect"
    assert cli.main(["release-suspect", "-c", str(path), "--meter", "sdm120"]) == 1   # nothing held for it
    assert "no suspect readings of sdm120" in capsys.readouterr().err

    assert cli.main(["release-suspect", "-c", str(path), "--meter", "em24"]) == 0
    assert "2 suspect readings of em24 released" in capsys.readouterr().out
    assert _poll(poller, sim, B + 900, em24=48_003.0)["em24"].outcome == "stored"
    assert [(r.ts, r.value) for r in ob.pending(100) if r.meter == "em24"] == [
        (iso(B), 120.0), (iso(B + 300), 48_001.0), (iso(B + 600), 48_002.0), (iso(B + 900), 48_003.0)]
    assert ob.status()["suspect_readings"] == 0


def test_a_jump_by_orders_of_magnitude_is_held_back(sim_site, capsys, caplog):
    """The issue's EM24: 28,540.2 kWh, then 6,494,716.7 kWh (power factors read as a total)."""
    caplog.set_level(logging.WARNING)
    path, cfg, sim, poller = sim_site
    ob = poller.outbox
    assert _poll(poller, sim, B, em24=28_540.2)["em24"].outcome == "stored"
    res = _poll(poller, sim, B + 300, em24=6_494_716.7)["em24"]
    assert res.outcome == "suspect" and "orders of magnitude" in res.error
    assert [r for r in ob.pending(100) if r.meter == "em24"] == [ob.pending(100)[0]]  # only the good one is sent
    assert [k.kv["meter"] for k in caplog.records if k.getMessage() == "reading_suspect"] == ["em24"]
    assert cli.main(["status", "-c", str(path), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["suspect_readings"] == 1
    s = st["suspect_list"][0]
    assert (s["MeterId"], s["TimeStamping"], s["value"]) == ("em24", iso(B + 300), pytest.approx(6_494_716.7))
    assert [f["MeterId"] for f in st["failing_meters"]] == ["em24"]
    assert "suspect" in st["failing_meters"][0]["last_error"]
    assert cli.main(["status", "-c", str(path)]) == 0
    assert "suspect readings 1" in capsys.readouterr().out
    # the meter reads right again: judged against the last good reading, accepted and sent
    assert _poll(poller, sim, B + 600, em24=28_541.0)["em24"].outcome == "stored"
    assert [(r.ts, r.value) for r in ob.pending(100) if r.meter == "em24"] == [(iso(B), 28_540.2), (iso(B + 600), 28_541.0)]


def test_a_step_above_the_meters_power_is_held_back_with_per_meter_override(sim_site):
    """An SDM120 carries at most 45 A (map bound 15 kW): +10 kWh in 5 minutes is 120 kW. A meter
    configured with max_power_kw: 200 accepts the same step."""
    path, cfg, sim, poller = sim_site
    _poll(poller, sim, B, sdm120=100.0, sdm120big=100.0)
    res = _poll(poller, sim, B + 300, sdm120=110.0, sdm120big=110.0)
    assert res["sdm120"].outcome == "suspect" and "120 kW" in res["sdm120"].error and "15 kW" in res["sdm120"].error
    assert res["sdm120big"].outcome == "stored"
    # a plausible step after the suspect one is judged against the last GOOD reading (100 kWh at B)
    res = _poll(poller, sim, B + 600, sdm120=100.9)
    assert res["sdm120"].outcome == "stored"
    # and a step allowed by the bound over a longer gap is fine
    res = _poll(poller, sim, B + 3900, sdm120=110.0)  # 9.1 kWh in 55 minutes: 9.9 kW
    assert res["sdm120"].outcome == "stored"


def test_max_power_kw_in_config_is_validated(tmp_path):
    bad = dict(meter("m", 1, "GW", "Eastron.SDM120", "1", start=None), max_power_kw=-5)
    with pytest.raises(ConfigError, match="max_power_kw"):
        load_config(write_config(tmp_path, [bad], {"GW": {"type": "tcp", "host": "127.0.0.1", "port": 1}}))


# ---- the clock -------------------------------------------------------------------------------


class ScriptClock(FakeClock):
    """Virtual time the test may also step backward or forward (an NTP step, a box without RTC): a step
    moves the box's clock, never the monotonic one."""

    def jump(self, seconds: float) -> None:
        with self._lock:
            self.t += seconds


class Recorder:
    """A poller stand-in: records the boundaries polled and the reads held (at which monotonic time), runs a
    script at the n-th poll (``script``) or at the n-th held read (``on_hold``)."""

    def __init__(self, cfg, clock, stop, script=None, stop_after=6, on_hold=None):
        self.cfg, self.clock, self.stop, self.script, self.stop_after = cfg, clock, stop, script or {}, stop_after
        self.on_hold = on_hold or {}
        self.outbox = Outbox(cfg.buffer)
        self.polled = []
        self.holds = []  # monotonic time of each hold
        self.held_as = []  # (state, the box's time) of each hold
        self.stamped = []  # (true_time, now, after) of each stamp_held call
        self.bus_time = {}

    def poll(self, b):
        self.polled.append(b)
        self.outbox.record_poll([], boundary=iso(b))
        if len(self.polled) in self.script:
            self.script[len(self.polled)](self.clock)
        if len(self.polled) >= self.stop_after:
            self.stop.set()

    def due(self, b):
        return self.cfg.meters

    def hold(self, held_as, meters=None):
        self.holds.append(self.clock.monotonic())
        self.held_as.append((held_as, self.clock.now()))
        if len(self.holds) in self.on_hold:
            self.on_hold[len(self.holds)](self.clock)
        return 1

    def stamp_held(self, true_time, now, after):
        self.stamped.append((true_time, now, after))
        return 1, 0


def _run(tmp_path, start, script=None, stop_after=6, check=None, on_hold=None, clock=None):
    cfg = load_config(write_config(tmp_path, [meter("five", 1, "B", start=None, mapname="Eastron.SDM120", phases="1")],
                                   {"B": {"type": "tcp", "host": "127.0.0.1", "port": 1}}))
    clock = clock or ScriptClock(start)
    stop = threading.Event()
    rec = Recorder(cfg, clock, stop, script, stop_after, on_hold)
    check = check or ClockCheck(kernel_state=lambda: "synchronised")  # the box's clock alone, NTP-synced
    t = threading.Thread(target=Scheduler(rec, clock, stop, check=check).run)
    t.start()
    t.join(60)
    assert not t.is_alive()
    return rec


def _events(caplog, name):
    return [r.kv for r in caplog.records if r.getMessage() == name]


def _cloud_says(check, true_minus_box):
    """A cloud answer whose Date says the true time is the box's plus ``true_minus_box`` (at this moment)."""
    def script(clock):
        true = clock.now() + true_minus_box
        check.observe(true, true + 1, clock.monotonic(), clock.monotonic() + 0.05, "date")
    return script


def test_no_reading_is_stamped_before_the_release_date(tmp_path, caplog):
    """Two hours before the release date nothing is stamped, and still nothing once the box's clock passes
    it (it is still two hours behind: the clock was never stepped); the meters are read each minute and
    held meanwhile. The cloud's time (a Date header) ends it: the held readings are stamped with it, and
    polling goes on at the true boundaries."""
    caplog.set_level(logging.INFO)
    check = ClockCheck(kernel_state=lambda: "synchronised")
    start = RELEASE_EPOCH - 2 * 3600 + 7
    rec = _run(tmp_path, start, stop_after=2, check=check, on_hold={130: _cloud_says(check, 2 * 3600 + 300)})
    assert len(rec.holds) == 130 and all(b - a == 60 for a, b in zip(rec.holds, rec.holds[1:]))  # each minute
    assert len(rec.stamped) == 1 and {s for s, _ in rec.held_as} == {"before_release"}
    true_at_hold = [m + check.anchor.offset for m in rec.holds]
    assert min(true_at_hold) >= RELEASE_EPOCH and rec.polled[0] > max(true_at_hold)
    assert rec.polled == [rec.polled[0], rec.polled[0] + 300] and rec.polled[0] % 300 == 0
    bad = _events(caplog, "clock_not_trusted")
    assert len(bad) == 1 and bad[0]["state"] == "before_release"  # logged once, not every 30 s
    assert len(_events(caplog, "clock_corrected")) == 1
    assert rec.outbox.status()["clock"]["state"] == "corrected"


def test_status_says_the_clock_is_not_trusted(tmp_path, capsys):
    cfg_path = write_config(tmp_path, [meter("five", 1, "B", start=None, mapname="Eastron.SDM120", phases="1")],
                            {"B": {"type": "tcp", "host": "127.0.0.1", "port": 1}})
    cfg = load_config(cfg_path)
    clock = ScriptClock(RELEASE_EPOCH - 86400)
    stop = threading.Event()
    rec = Recorder(cfg, clock, stop)
    orig = clock.wait

    def wait(event, seconds):  # stop once the scheduler has waited a few times on a wrong clock
        if clock.t > RELEASE_EPOCH - 86400 + 100:
            stop.set()
        return orig(event, seconds)

    clock.wait = wait
    Scheduler(rec, clock, stop).run()
    assert rec.polled == []
    assert cli.main(["status", "-c", str(cfg_path), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["clock"]["state"] == "before_release" and "release date" in st["clock"]["detail"]
    assert cli.main(["status", "-c", str(cfg_path)]) == 0
    assert "clock           before_release" in capsys.readouterr().out


def test_backward_jump_never_stamps_a_boundary_twice(tmp_path, caplog):
    """After two readings the clock steps back 12 minutes (past both, more than the bound of 2 x SaveEvery):
    nothing is stamped with it, not even once it passes the last reading (it is still 12 minutes wrong);
    the meters are read and held. The cloud's time then stamps them, and the next boundary comes, once."""
    caplog.set_level(logging.INFO)
    check = ClockCheck(kernel_state=lambda: "synchronised")
    rec = _run(tmp_path, B - 10, script={2: lambda c: c.jump(-720)}, stop_after=4, check=check,
               on_hold={20: _cloud_says(check, 720)})
    assert rec.polled == [B, B + 300, B + 1500, B + 1800]  # the true boundaries after 20 minutes held
    assert len(rec.holds) == 20 and rec.stamped and rec.stamped[0][2] == B + 300  # never at or before B+300
    behind = _events(caplog, "clock_not_trusted")
    assert len(behind) == 1 and behind[0]["state"] == "behind_readings"


def test_backward_jump_within_a_period_waits_without_doubling(tmp_path):
    rec = _run(tmp_path, B - 10, script={1: lambda c: c.jump(-100)}, stop_after=3)
    assert rec.polled == [B, B + 300, B + 600]


def test_forward_jump_polls_the_current_boundary_and_logs_the_skipped(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    rec = _run(tmp_path, B - 10, script={2: lambda c: c.jump(3600 + 10)}, stop_after=4)
    # B+300 polled; the clock jumps to B+3910: B+600 .. B+3600 (11 boundaries) were not read on time,
    # B+3900 still is (10 s late, within the tolerance)
    assert rec.polled == [B, B + 300, B + 3900, B + 4200]
    jumped = _events(caplog, "clock_jumped_forward")
    assert len(jumped) == 1 and int(jumped[0]["skipped_boundaries"]) == 11 and jumped[0]["polling"] == iso(B + 3900)


def test_forward_jump_landing_late_skips_to_the_next_boundary(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    late = LATE_TOLERANCE + 40
    rec = _run(tmp_path, B - 10, script={1: lambda c: c.jump(3600 + late)}, stop_after=3)
    assert rec.polled == [B, B + 3900, B + 4200]
    jumped = _events(caplog, "clock_jumped_forward")
    assert int(jumped[0]["skipped_boundaries"]) == 12 and jumped[0]["polling"] == "next boundary"


def test_the_kernel_unsync_flag_is_only_a_warning(tmp_path, caplog):
    """STA_UNSYNC alone never makes the clock wrong: readings are taken at the box's boundaries as ever.
    With nothing to confirm the clock either (the cloud has not answered yet), they are held, and the
    cloud's first answer stamps them with the boundaries they were taken for; polling goes on without
    a jump, a skip or a boundary twice."""
    caplog.set_level(logging.INFO)
    check = ClockCheck(kernel_state=lambda: "unsynchronised")
    rec = _run(tmp_path, B - 10, stop_after=2, check=check, on_hold={2: _cloud_says(check, 0.3)})
    assert rec.held_as == [("unconfirmed", B), ("unconfirmed", B + 300)] and rec.polled == [B + 600, B + 900]
    ((true_time, now, after),) = rec.stamped
    assert [r.getMessage() for r in caplog.records if "kernel" in r.getMessage()] == ["clock_kernel_unsynchronised"]
    assert [r.levelname for r in caplog.records if r.getMessage() == "clock_kernel_unsynchronised"] == ["WARNING"]
    assert _events(caplog, "clock_jumped_forward") == [] and _events(caplog, "clock_not_trusted") == []
    st = rec.outbox.status()["clock"]
    assert st["state"] == "ok" and st["kernel"] == "unsynchronised"


def test_a_restart_on_a_clock_behind_the_outbox_stamps_nothing(tmp_path, caplog):
    """A box without RTC reboots at its last shutdown time, behind readings already taken (a power cut
    restores a time up to an hour behind the last stamp): the outbox remembers the last boundary stamped,
    so the new process stamps nothing with that clock; it holds its readings until the cloud's time is
    known (here: the box is 3 days behind), then stamps with it."""
    caplog.set_level(logging.INFO)
    cfg = load_config(write_config(tmp_path, [meter("five", 1, "B", start=None, mapname="Eastron.SDM120", phases="1")],
                                   {"B": {"type": "tcp", "host": "127.0.0.1", "port": 1}}))
    Outbox(cfg.buffer).record_poll([], boundary=iso(B + 3000))
    check = ClockCheck(kernel_state=lambda: "synchronised")
    rec = _run(tmp_path, B, stop_after=1, check=check, on_hold={60: _cloud_says(check, 3 * 86400)})
    assert len(rec.holds) == 60  # an hour held: the box's clock passed the last stamp, and stayed 3 days wrong
    assert rec.polled == [B + 3 * 86400 + 3600] and rec.stamped
    assert _events(caplog, "clock_not_trusted")[0]["state"] == "behind_readings"
    assert from_iso(rec.outbox.last_boundary()) == B + 3 * 86400 + 3600


def test_a_clock_three_days_behind_stamps_with_the_clouds_time_from_the_first_answer(tmp_path, caplog):
    """A fresh box 3 days behind (no reading stamped yet, after the release date): nothing on the box says
    it is wrong, the cloud's first answer does; from then on boundaries and stamps are the cloud's, and
    when NTP finally steps the box's clock it is trusted again without a jump or a boundary twice."""
    caplog.set_level(logging.INFO)
    check = ClockCheck(kernel_state=lambda: "synchronised")
    clock = ScriptClock(B - 3 * 86400 - 10)
    _cloud_says(check, 3 * 86400)(clock)
    rec = _run(tmp_path, None, clock=clock, check=check, stop_after=4, script={2: lambda c: c.jump(3 * 86400)})
    assert rec.polled == [B, B + 300, B + 600, B + 900] and rec.holds == []
    assert [e["detail"][:40] for e in _events(caplog, "clock_corrected")] and _events(caplog, "clock_trusted_again")
    assert _events(caplog, "clock_jumped_forward") == []

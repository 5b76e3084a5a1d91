"""The local stack's demo: the simulated meters draw the load its loaded history is made of, so the
charts run on across "now" (before, 135 kW of history went on as 5 kW live), and the main incomer
draws more than the two meters it feeds."""
import random
import subprocess
import sys
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import yaml

from edge_agent.clock import FakeClock
from edge_agent.config import load_config
from edge_agent.simulator import LoadProfile, SiteSimulator
from tools import stack

TORONTO = ZoneInfo(stack.DEMO["timezone"])


def loads_as_simulate_gets_them():
    """The --load and --timezone arguments the stack starts `edge_agent simulate` with, read back."""
    args = stack.demo_load_args()
    zone = args[args.index("--timezone") + 1]
    specs = [args[i + 1] for i, arg in enumerate(args) if arg == "--load"]
    return {name: LoadProfile.parse(spec, zone) for name, _, spec in (s.partition("=") for s in specs)}


@pytest.fixture
def live(tmp_path):
    """The demo's simulated meters (the stack's agent config) on a fake clock, drawing those loads."""
    config = {"cloud": {"url": "http://127.0.0.1:9"}, "buffer": str(tmp_path / "outbox.sqlite"),
              "buses": {f"LAN{i + 1}": {"type": "tcp", "host": "127.0.0.1", "port": 5020 + i}
                        for i in range(len(stack.DEMO_METERS))},
              "meters": [{**m, "Port": f"LAN{i + 1}", "SaveEvery": stack.SAVE_EVERY}
                         for i, m in enumerate(stack.DEMO_METERS)]}
    (tmp_path / "agent.yaml").write_text(yaml.safe_dump(config))
    clock = FakeClock(datetime(2026, 12, 1, tzinfo=TORONTO).timestamp())   # before every test's instants
    return clock, SiteSimulator(load_config(tmp_path / "agent.yaml"), clock=clock, loads=loads_as_simulate_gets_them())


def history_kw(name, first, last, seed=2026):
    """Mean kW of the stack's history of a meter between two instants (its one-minute steps)."""
    rng, load = random.Random(seed), stack.demo_loads()[name]
    times = range(int(first), int(last), stack.HISTORY_STEP)
    return sum(load.kw(t, rng) for t in times) / len(times)


def live_kw(clock, meters, first, last):
    """{name: mean kW} of simulated meters between two instants: their registers' rise, read each minute."""
    clock.set(first)
    start = {}
    for name, meter in meters.items():
        meter.advance()
        start[name] = meter.energy_kwh
    for t in range(int(first) + 60, int(last) + 1, 60):
        clock.set(t)
        for meter in meters.values():
            meter.advance()
    return {name: (meter.energy_kwh - start[name]) / ((last - first) / 3600) for name, meter in meters.items()}


@pytest.mark.parametrize("when", [datetime(2026, 12, 8, 13, 30), datetime(2026, 12, 8, 2, 0),
                                  datetime(2026, 12, 12, 13, 30)], ids=["weekday-afternoon", "night", "saturday"])
def test_the_live_meters_go_on_at_the_historys_load(live, when):
    clock, sim = live
    now = when.replace(tzinfo=TORONTO).timestamp()
    after = live_kw(clock, sim.meters, now, now + 3600)
    for name in stack.DEMO_LOADS:
        before = history_kw(name, now - 3600, now)       # the last hour the stack loads
        assert after[name] == pytest.approx(before, rel=0.15), name


def test_the_main_incomer_draws_more_than_the_meters_it_feeds(live):
    """Its unmetered share in the charts stays positive, minute after minute through a week."""
    loads = stack.demo_loads()
    rng = random.Random(1)
    start = datetime(2026, 12, 7, tzinfo=TORONTO).timestamp()
    for t in range(int(start), int(start) + 7 * 86400, 600):
        fed = sum(loads[name].kw(t, rng) for name, parent in stack.DEMO_PARENTS.items())
        assert loads["main-incomer"].kw(t, rng) > fed


def test_a_load_that_is_not_base_colon_peak_stops_simulate(tmp_path):
    answer = subprocess.run([sys.executable, "-m", "edge_agent", "simulate", "-c", str(tmp_path / "none.yaml"),
                             "--load", "hvac=lots"], capture_output=True, text=True, timeout=60)
    assert answer.returncode != 0
    with pytest.raises(ValueError, match="BASE:PEAK"):
        LoadProfile.parse("lots")

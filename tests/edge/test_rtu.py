"""Serial RTU end to end over linked pseudo-terminals: two meters on one bus, one silent."""

import time

import pytest

from conftest import meter, write_config
from edge_agent.config import load_config
from edge_agent.outbox import Outbox
from edge_agent.scheduler import Poller
from edge_agent.simulator import serve_serial, sim_meter_for
from edge_support import PtyPair


@pytest.fixture
def pty():
    p = PtyPair()
    yield p
    p.close()


def test_rtu_two_meters_one_silent(tmp_path, pty):
    bus = {"type": "serial", "device": pty.b, "baudrate": 19200, "parity": "N", "stopbits": 1,
           "timeout": 0.2, "retries": 0}
    ms = [
        meter("silent", 7, "USB0"),  # first in the config: no device 7 answers on the line
        meter("meter1", 1, "USB0"),
    ]
    cfg = load_config(write_config(tmp_path, ms, {"USB0": bus}))
    sim = sim_meter_for(cfg.meter("meter1"), energy_kwh=28540.24)
    sim.load_kw = 0.0
    server = serve_serial([sim], pty.a, baudrate=19200)
    ob = Outbox(cfg.buffer)
    poller = Poller(cfg, ob)
    try:
        time.sleep(0.2)  # the server opens its end of the line
        t0 = time.monotonic()
        res = {r.meter: r for r in poller.poll(1_700_000_100, meters=cfg.meters)}
        first = time.monotonic() - t0
        assert res["meter1"].value == pytest.approx(28540.24)
        assert res["meter1"].ts == "2023-11-14T22:15:00Z"
        assert res["silent"].outcome == "failed"
        assert first < 2.0  # the silent meter cost about one timeout, not the cycle

        sim.set_energy(28541.5)
        t0 = time.monotonic()
        res = {r.meter: r for r in poller.poll(1_700_000_400, meters=cfg.meters)}
        assert res["meter1"].value == pytest.approx(28541.5)
        assert res["silent"].outcome == "failed"
        assert time.monotonic() - t0 < 2.0
        st = ob.status()
        assert [f["MeterId"] for f in st["failing_meters"]] == ["silent"]
        assert st["failing_meters"][0]["failures"] == 2
        assert [(m, t, v) for m, t, v, _ in ob.all_readings()] == [
            ("meter1", "2023-11-14T22:15:00Z", 28540.24), ("meter1", "2023-11-14T22:20:00Z", 28541.5)]
        # the failing meter is read after the healthy one, and backs off
        assert [m.MeterId for m in poller.due(1_700_000_700)] == ["meter1"]
    finally:
        poller.close()
        server.stop()

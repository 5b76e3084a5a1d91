"""A box clock restored behind never stamps a reading: against the real API over HTTP.

The agent runs as its own process (``python -m edge_agent run``) with its wall clock moved by
time-machine (``agent_at.py``: the box alone; the monotonic clock is untouched, as on a box whose
RTC-less clock was restored at boot); the cloud is the real API served over HTTP by this process
(``live_api``), whose clock is the true one, answering with its own ``Date`` and ``clock_offset``;
the meter is an SDM630 laid out from Eastron's document on pymodbus's own ``ModbusTcpServer``.
Real minutes pass (a 1-minute meter): each test takes under a minute. (A box 3 days behind whose
network is up from the start is stamped with the cloud's time from its first answer: the same
``ClockCheck`` path, in test_site_faults.py on virtual time.)
"""

import os
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest

from conftest import ROOT, meter, write_config
from edge_agent.clock import iso
from edge_agent.outbox import Outbox
from edge_support import FaultProxy, free_port
from maker_meters import MeterSpec, start_meters

HERE = os.path.dirname(__file__)
DAYS_3 = 3 * 86400

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the agent as a process, CLOCK_BOOTTIME")


def _wait(cond, timeout, process=None):
    end = time.monotonic() + timeout
    while time.monotonic() < end and (process is None or process.poll() is None):
        if cond():
            return True
        time.sleep(0.2)
    return False


def _agent(tmp_path, cfg, offset):
    """The agent's `run`, its wall clock ``offset`` seconds from the true time (and the file that steps it)."""
    log = open(tmp_path / "agent.log", "ab")
    clock_file = tmp_path / "clock"
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "agent_at.py"), str(offset), str(clock_file),
                          "run", "-c", str(cfg)], cwd=str(ROOT), env={**os.environ, "PYTHONPATH": str(ROOT)},
                         stdout=subprocess.DEVNULL, stderr=log)
    log.close()
    return p


def _stop(p):
    p.terminate()
    assert p.wait(30) == 0


def _site(tmp_path, url, key):
    port = free_port()
    bus = start_meters(port, [MeterSpec("Eastron.SDM630", 1, 4_321.0)])
    cfg = write_config(tmp_path, [meter("sdm630", 1, "GW", "Eastron.SDM630", mtype="SDM630", start=None, save_every=1)],
                       {"GW": {"type": "tcp", "host": "127.0.0.1", "port": port}}, url=url, key=key,
                       cloud_extra={"backoff_initial": 0.2, "backoff_max": 1})
    return bus, cfg


def _stamps(live_api):
    from chalicelib.platform.errors import NotFound

    try:
        return [t.timestamp() for t, _ in live_api.stored_readings("sdm630")]
    except NotFound:  # not registered yet
        return []


def _not_close_to_a_minute(margin=12.0):
    """Start away from a minute boundary: the run covers the next one."""
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.5)


def test_a_box_restored_behind_its_last_stamp_holds_its_readings_until_the_cloud_answers(tmp_path, live_api):
    """A power cut: the box restarts 40 minutes behind the last reading it stamped, and the network is not
    up yet (the cloud unreachable). Nothing is stamped with that clock; the meter is read and the reading
    held with the monotonic clock. Once the cloud answers, the held reading is stamped with the true
    minute it was taken in and delivered, and polling goes on at the true boundaries."""
    proxy = FaultProxy(live_api.url)
    proxy.policy = lambda method, path: "down"
    bus, cfg = _site(tmp_path, proxy.url, live_api.key)
    _not_close_to_a_minute(20)
    last = int(time.time()) // 60 * 60 - 60
    Outbox(str(tmp_path / "outbox.sqlite")).record_poll([], boundary=iso(last))  # stamped before the power cut
    began = time.time()
    p = _agent(tmp_path, cfg, -2400)
    ob = Outbox(str(tmp_path / "outbox.sqlite"))
    try:
        assert _wait(lambda: ob.status()["held_readings"] >= 1, 30, p), (tmp_path / "agent.log").read_text()
        held_at = time.time()
        assert ob.all_readings() == []  # nothing stamped
        proxy.policy = lambda method, path: None  # the network comes up
        assert _wait(lambda: _stamps(live_api) and ob.status()["held_readings"] == 0, 60, p), \
            (tmp_path / "agent.log").read_text()
    finally:
        _stop(p)
        bus.stop()
        proxy.close()
    stamps = _stamps(live_api)
    first = int(began) // 60 * 60
    assert stamps[0] == first and stamps[0] > last  # the minute the held reading was taken in: true time
    assert all(t % 60 == 0 and last < t <= time.time() for t in stamps)
    assert held_at - began < 60  # (it was taken within a minute after that boundary)
    text = (tmp_path / "agent.log").read_text()
    assert "event=clock_not_trusted state=behind_readings" in text
    assert "event=held_readings_stamped stamped=1 dropped=0" in text
    assert datetime.fromtimestamp(stamps[0], timezone.utc).year == datetime.now(timezone.utc).year


def test_a_box_three_days_behind_with_no_network_yet_stamps_nothing_until_the_cloud_answers(tmp_path, live_api):
    """The issue's box exactly: restored 3 days behind, just after the last reading it stamped before the
    power went (fake-hwclock saves the time at shutdown), and no network yet. Nothing on the box says the
    time is wrong, and nothing has confirmed it: the reading due at the box's boundary is taken and held.
    When the network comes up, the cloud's time shows the box 3 days behind: the held reading is stamped
    with the true minute it was taken at, and nothing 3 days in the past is ever sent."""
    proxy = FaultProxy(live_api.url)
    proxy.policy = lambda method, path: "down"
    bus, cfg = _site(tmp_path, proxy.url, live_api.key)
    _not_close_to_a_minute(8)  # the box's next boundary comes 8-60 s after the start
    box_last = int(time.time()) // 60 * 60 - DAYS_3 - 60  # the box stamped its last reading, then lost power
    Outbox(str(tmp_path / "outbox.sqlite")).record_poll([], boundary=iso(box_last))
    began = time.time()
    p = _agent(tmp_path, cfg, -DAYS_3)
    ob = Outbox(str(tmp_path / "outbox.sqlite"))
    try:
        assert _wait(lambda: ob.status()["held_readings"] >= 1, 70, p), (tmp_path / "agent.log").read_text()
        assert ob.all_readings() == []  # taken at the box's boundary, not stamped with it
        proxy.policy = lambda method, path: None  # the network comes up
        assert _wait(lambda: _stamps(live_api) and ob.status()["held_readings"] == 0, 60, p), \
            (tmp_path / "agent.log").read_text()
        assert _wait(lambda: (ob.status().get("cloud_report") or {}).get("clock_offset") is not None, 30, p)
    finally:
        _stop(p)
        bus.stop()
        proxy.close()
    stamps = _stamps(live_api)
    assert stamps[0] == (int(began) // 60 + 1) * 60  # the true minute the held reading was taken for
    assert all(t % 60 == 0 and began < t <= time.time() for t in stamps)  # nothing 3 days in the past
    assert [ts for _, ts, _, _ in ob.all_readings()] == [iso(t) for t in stamps]
    st = ob.status()
    assert st["clock"]["state"] == "corrected" and "259200 s behind the cloud's" in st["clock"]["detail"]
    assert st["cloud_report"]["clock_offset"] == pytest.approx(DAYS_3, abs=5)  # PUT /status said so too
    text = (tmp_path / "agent.log").read_text()
    assert "event=clock_unconfirmed" in text and "event=clock_corrected" in text
    assert "event=held_readings_stamped stamped=1 dropped=0" in text

"""A meter swapped or reset on site starts a new register series in the cloud, never an interval.

The meters are pymodbus's own ``ModbusTcpServer`` laid out from the makers' documents
(``maker_meters``: a current EM24 DIN answers identification code 1648 and keeps kWh(+) TOT at
0x0034; an older EM24 "IS" answers code 71 and keeps power factors there, its total at 0x003E).
The cloud is the real API over HTTP (``live_api``) behind a proxy that records every request body
and loses answers on the way back. The contract (issue 19, item 2): the first reading of a new
series is sent in ``POST /data`` with ``"reset": true`` beside ``MeterId``, ``TimeStamping`` and
``value``; no other reading carries the field.
"""

import json
import logging
import sqlite3
import time

import pytest

from conftest import meter, write_config
from edge_agent import cli
from edge_agent.clock import FakeClock, iso
from edge_agent.cloud import Cloud
from edge_agent.config import load_config
from edge_agent.outbox import Outbox
from edge_agent.scheduler import Poller
from edge_agent.sender import Sender
from edge_support import FaultProxy, free_port
from maker_meters import MeterSpec, start_meters

pytestmark = pytest.mark.usefixtures("no_stale_log_handler")  # cli.main runs in these tests

T0 = (int(time.time()) - 6 * 3600) // 300 * 300  # a few hours back: the cloud takes them (not in its future)


@pytest.fixture
def site(tmp_path):
    """An EM24 (current generation) and an SDM630 behind one Modbus TCP gateway, and a poller."""
    port = free_port()
    bus = start_meters(port, [MeterSpec("CarloGavazzi.EM24", 1, 28_540.2), MeterSpec("Eastron.SDM630", 2, 1.13)])
    ms = [meter("em24", 1, "GW", "CarloGavazzi.EM24", mtype="EM24DIN", start=None),
          meter("sdm630", 2, "GW", "Eastron.SDM630", mtype="SDM630", start=None)]
    path = write_config(tmp_path, ms, {"GW": {"type": "tcp", "host": "127.0.0.1", "port": port}})
    pollers = []

    def poller():
        p = Poller(load_config(path), Outbox(str(tmp_path / "outbox.sqlite")))
        pollers.append(p)
        return p

    yield path, bus, poller
    for p in pollers:
        p.close()
    bus.stop()


def _events(caplog, name):
    return [r.kv for r in caplog.records if r.getMessage() == name]


def _em24(poller, t):
    return {r.meter: r for r in poller.poll(t)}["em24"]


def test_an_em24_swapped_for_an_older_model_starts_a_new_series(site, caplog):
    """The swap happens between two polls, without a failed read: the reader's cached model would read
    the older unit's power factors at 0x0034 as millions of kWh and hold every reading back. The jump
    makes the agent read the identification code again: model changed, the older unit's total is read
    at 0x003E and sent as the first reading of a new series; the next reading continues it."""
    caplog.set_level(logging.INFO)
    path, bus, make = site
    poller = make()
    assert _em24(poller, T0).outcome == "stored"
    bus.meters[1].kind, bus.meters[1].energy_kwh = "CarloGavazzi.EM24.IS", 1_234.5  # a used, older unit
    r = _em24(poller, T0 + 300)
    assert (r.outcome, r.value, r.reset) == ("stored", pytest.approx(1_234.5), True)
    assert "code 71" in r.model
    (changed,) = _events(caplog, "meter_model_changed")
    assert "code 1648" in changed["old"] and "code 71" in changed["new"] and "model changed" in changed["note"]
    bus.meters[1].energy_kwh = 1_234.6
    r = _em24(poller, T0 + 600)
    assert (r.outcome, r.reset) == ("stored", False)
    ob = poller.outbox
    assert [(x.ts, x.value, x.reset) for x in ob.pending(100) if x.meter == "em24"] == [
        (iso(T0), 28_540.2, False), (iso(T0 + 300), 1_234.5, True), (iso(T0 + 600), 1_234.6, False)]
    assert ob.status()["suspect_readings"] == 0


def test_a_swap_while_the_agent_was_down_is_found_from_the_model_it_remembers(site, caplog):
    """A restarted agent identifies the meter afresh: the model it read before the restart is kept in
    the outbox, so a swap made while it was down is a new series too, even when the new total happens
    to be a plausible step from the old one."""
    caplog.set_level(logging.INFO)
    path, bus, make = site
    first = make()
    assert _em24(first, T0).outcome == "stored"
    first.close()
    bus.meters[1].kind, bus.meters[1].energy_kwh = "CarloGavazzi.EM24.IS", 28_541.0
    again = make()
    r = _em24(again, T0 + 300)
    assert (r.outcome, r.reset, r.value) == ("stored", True, pytest.approx(28_541.0))
    assert len(_events(caplog, "meter_model_changed")) == 1
    assert _em24(again, T0 + 600).reset is False


def test_a_wrong_low_value_is_held_back_and_the_meter_is_accepted_when_it_reads_right(site, caplog):
    """The issue's 2000.0 kWh for a meter at 98,765.4: a total that went down is suspect (the model code,
    read again, is the same meter's), so the true readings after it are not held back as a jump."""
    caplog.set_level(logging.INFO)
    path, bus, make = site
    poller = make()
    bus.meters[1].energy_kwh = 98_765.4
    assert _em24(poller, T0).outcome == "stored"
    bus.meters[1].energy_kwh = 2_000.0
    r = _em24(poller, T0 + 300)
    assert r.outcome == "suspect" and "went down" in r.error
    assert _events(caplog, "meter_model_changed") == []
    bus.meters[1].energy_kwh = 98_765.6
    assert _em24(poller, T0 + 600).outcome == "stored"
    assert [x.value for x in poller.outbox.pending(100) if x.meter == "em24"] == [98_765.4, 98_765.6]


def _deliver(ob, cfg, url, steps=40):
    clock = FakeClock()
    sender = Sender(ob, Cloud(url, cfg.key, 5), cfg.meters, clock=clock, batch_size=2)
    for _ in range(steps):
        if not ob.status()["pending"] and not sender.to_register:
            return
        clock.advance(sender.step())


def test_release_suspect_sends_reset_exactly_once_for_the_first_released_reading(site, live_api, capsys):
    """The issue's SDM630: 1.13 kWh, replaced by a used one at 250,000 kWh. Released as the docs advise,
    the first released reading carries "reset": true, through a lost answer, a restart and the resend;
    no other reading ever carries the field."""
    path, bus, make = site
    doc = path.read_text().replace("http://127.0.0.1:9", live_api.url).replace(
        "f27a4f7186-d4a6635fe7-992d888955-284e0b037c", live_api.key)
    path.write_text(doc)
    poller = make()
    bus.meters[2].energy_kwh = 1.13
    assert {r.meter: r for r in poller.poll(T0)}["sdm630"].outcome == "stored"
    bus.meters[2].energy_kwh = 250_000.0
    assert {r.meter: r for r in poller.poll(T0 + 300)}["sdm630"].outcome == "suspect"
    bus.meters[2].energy_kwh = 250_000.1
    assert {r.meter: r for r in poller.poll(T0 + 600)}["sdm630"].outcome == "suspect"
    assert cli.main(["release-suspect", "-c", str(path), "--meter", "sdm630"]) == 0
    assert "new register series" in capsys.readouterr().out
    bus.meters[2].energy_kwh = 250_000.2
    assert {r.meter: r for r in poller.poll(T0 + 900)}["sdm630"].outcome == "stored"

    cfg = load_config(path)
    proxy = FaultProxy(cfg.url)
    lost: list = []

    def lose_the_answers_to_the_reset_reading(method, path_):
        """The batch holding the reset reading is stored, and its answer lost on the way back: twice."""
        body = proxy.bodies[-1][2]
        if path_ == "/data" and b'"reset"' in body and len(lost) < 2:
            lost.append(body)
            return "drop_after"
        return None

    proxy.policy = lose_the_answers_to_the_reset_reading
    try:
        ob = Outbox(cfg.buffer)
        clock = FakeClock()
        sender = Sender(ob, Cloud(proxy.url, cfg.key, 5), cfg.meters, clock=clock, batch_size=2)
        for _ in range(20):  # the answer lost, the batch sent again, lost again: then the agent restarts
            if len(lost) == 2:
                break
            clock.advance(sender.step())
        assert len(lost) == 2, "no batch carried the marker"
        ob.close()
        _deliver(Outbox(cfg.buffer), cfg, proxy.url)  # a new process on the same outbox
    finally:
        proxy.close()
    sent = [r for m, p, body in proxy.bodies if (m, p) == ("POST", "/data")
            for r in json.loads(body)["readings"] if r["MeterId"] == "sdm630"]
    flagged = [(r["TimeStamping"], r["value"]) for r in sent if "reset" in r]
    assert flagged and set(flagged) == {(iso(T0 + 300), 250_000.0)}  # the first released reading, only
    taken = [(ts, v) for m, ts, v, _ in Outbox(cfg.buffer).all_readings() if m == "sdm630"]  # float32 values
    assert all(r["reset"] is True for r in sent if "reset" in r)
    assert all("reset" in r for r in sent if r["TimeStamping"] == iso(T0 + 300))  # every time it was sent
    assert len(flagged) == 3  # sent, resent after the lost answer, resent by the restarted agent: flagged each time
    stored = [(t.isoformat()[:19] + "Z", v) for t, v in live_api.stored_readings("sdm630")]
    assert stored == taken and [ts for ts, _ in taken] == [iso(T0 + 300 * k) for k in range(4)]  # each once


def test_release_with_same_series_counts_the_step(site):
    """A bound set too low is not a swap: ``--same-series`` releases without the marker."""
    path, bus, make = site
    poller = make()
    bus.meters[2].energy_kwh = 10.0
    poller.poll(T0)
    bus.meters[2].energy_kwh = 30.0  # 20 kWh in 5 minutes: 240 kW, above the SDM630's 100 kW
    assert {r.meter: r for r in poller.poll(T0 + 300)}["sdm630"].outcome == "suspect"
    assert cli.main(["release-suspect", "-c", str(path), "--meter", "sdm630", "--same-series"]) == 0
    assert [(x.value, x.reset) for x in poller.outbox.pending(100) if x.meter == "sdm630"] == [
        (10.0, False), (30.0, False)]


OLD_SCHEMA = """
CREATE TABLE readings (meter TEXT NOT NULL, ts TEXT NOT NULL, value REAL NOT NULL, status INTEGER NOT NULL DEFAULT 0,
    taken_at REAL NOT NULL, delivered_at REAL, PRIMARY KEY (meter, ts)) WITHOUT ROWID;
CREATE TABLE dead_letters (meter TEXT NOT NULL, ts TEXT NOT NULL, value REAL NOT NULL, reason TEXT NOT NULL,
    at REAL NOT NULL, PRIMARY KEY (meter, ts));
CREATE TABLE counters (meter TEXT PRIMARY KEY, last_raw INTEGER NOT NULL, wraps INTEGER NOT NULL);
CREATE TABLE suspect (meter TEXT NOT NULL, ts TEXT NOT NULL, value REAL, reason TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (meter, ts));
"""


def test_an_outbox_of_an_older_agent_is_migrated_and_keeps_its_readings(tmp_path):
    """An outbox written before the marker existed (no reset column, suspect rows without a counter
    state): opened by this agent, its pending readings are sent as they were (no marker), and a reading
    held back then is released as the first of a new series."""
    path = tmp_path / "outbox.sqlite"
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    db.execute("INSERT INTO readings VALUES ('m', ?, 5.0, 0, 0, NULL)", (iso(T0),))
    db.execute("INSERT INTO suspect VALUES ('m', ?, 9000.0, 'total jumped', 0)", (iso(T0 + 300),))
    db.commit()
    db.close()
    ob = Outbox(str(path))
    assert [(r.ts, r.value, r.reset) for r in ob.pending(10)] == [(iso(T0), 5.0, False)]
    assert ob.release_suspect("m") == 1
    assert [(r.ts, r.value, r.reset) for r in ob.pending(10)] == [(iso(T0), 5.0, False), (iso(T0 + 300), 9000.0, True)]
    ob.close()
    cols = {row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(readings)")}
    assert "reset" in cols
    assert Outbox(str(path)).pending(10)[1].reset is True  # opened again: nothing migrated twice, the flag kept

"""The agent's delivery against the real API (the Chalice app over moto): the receipt
codes the API sends are the ones the agent acts on."""

import time

import pytest

from conftest import meter, write_config
from edge_agent.clock import FakeClock, iso
from edge_agent.cloud import Cloud
from edge_agent.config import load_config
from edge_agent.outbox import Outbox, Reading, Take
from edge_agent.sender import Sender

T0 = (int(time.time()) - 2 * 86400) // 300 * 300


def test_the_real_apis_codes_drive_the_agent(tmp_path, live_api):
    cfg = load_config(write_config(tmp_path, [meter("a", 1, "LAN1"), meter("b", 2, "LAN1")],
                                   {"LAN1": {"type": "tcp", "host": "127.0.0.1", "port": 1}}, url=live_api.url,
                                   key=live_api.key))
    ob = Outbox(cfg.buffer)
    clock = FakeClock()
    s = Sender(ob, Cloud(cfg.url, live_api.key, 30), cfg.meters, clock=clock)
    s.to_register = ["b"]  # the cloud has never heard of meter a
    ob.record_poll([Take(m, "", Reading(m, iso(T0 + 300 * k), 10.0 + k)) for k in range(3) for m in "ab"])
    for _ in range(20):
        if not ob.status()["pending"] and not s.to_register:
            break
        clock.advance(s.step())
    assert ob.status()["dead_letters"] == 0  # unknown_meter: a was registered, then its readings went in
    assert len(live_api.stored_readings("a")) == 3 and len(live_api.stored_readings("b")) == 3
    # a different value for a time already stored, and a time in the future
    ob.record_poll([Take("a", "", Reading("a", iso(T0 + 300 * 4), 1.0))])
    ob._db().execute("UPDATE readings SET status=0, value=99 WHERE meter='b' AND ts=?", (iso(T0),))
    ob.record_poll([Take("a", "", Reading("a", iso(time.time() // 300 * 300 + 7200), 50.0))])
    for _ in range(20):
        if not ob.status()["pending"]:
            break
        clock.advance(s.step())
    st = ob.status()
    assert {(d["MeterId"], d["code"]) for d in st["dead_letter_list"]} == {("b", "conflict"), ("a", "future")}
    assert live_api.stored_readings("b")[0][1] == pytest.approx(10.0)  # the stored value stays

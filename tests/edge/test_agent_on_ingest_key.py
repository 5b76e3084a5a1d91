"""The agent on an ingest key against the real API (the Chalice app over moto): it registers,
delivers and reports its status with a key that can do nothing else, and the account sees it
in GET /status by the key's label."""

import time

import requests

from conftest import meter, write_config
from edge_agent.clock import FakeClock, iso
from edge_agent.cloud import Cloud
from edge_agent.config import load_config
from edge_agent.outbox import Outbox, Reading, Take
from edge_agent.report import StatusReporter
from edge_agent.sender import Sender

T0 = (int(time.time()) - 2 * 86400) // 300 * 300


def test_the_agent_runs_on_an_ingest_key_and_reports_its_status(tmp_path, live_api):
    made = requests.put(live_api.url + "/keys", headers={"X-API-Key": live_api.key},
                        json={"label": "site A agent", "scope": "ingest"}, timeout=30)
    assert made.status_code == 200, made.text
    ingest = made.json()["key"]
    cfg = load_config(write_config(tmp_path, [meter("a", 1, "LAN1"), meter("b", 2, "LAN1")],
                                   {"LAN1": {"type": "tcp", "host": "127.0.0.1", "port": 1}}, url=live_api.url,
                                   key=ingest))
    ob = Outbox(cfg.buffer)
    ob.record_poll([Take(m, "", Reading(m, iso(T0 + 300 * k), 10.0 + k)) for k in range(3) for m in "ab"]
                   + [Take("c", "LAN1", None, error="no answer")])
    clock = FakeClock()
    s = Sender(ob, Cloud(cfg.url, ingest, 30), cfg.meters, clock=clock)
    for _ in range(20):
        if not ob.status()["pending"] and not s.to_register:
            break
        clock.advance(s.step())
    assert ob.status()["pending"] == 0 and ob.status()["dead_letters"] == 0
    assert len(live_api.stored_readings("a")) == 3
    kept = StatusReporter(ob, Cloud(cfg.url, ingest, 30)).report_once()
    assert kept["state"] == "ok" and abs(kept["clock_offset"]) < 5 and kept["clock_warning"] is False
    seen = requests.get(live_api.url + "/status", headers={"X-API-Key": live_api.key}, timeout=30).json()
    [agent] = seen["agents"]
    assert agent["agent"] == "site A agent" and agent["backlog"] == 0 and agent["failing_meters"] == ["c"]
    # the ingest key can do nothing else: a stolen box is not an account takeover
    assert requests.get(live_api.url + "/key", headers={"X-API-Key": ingest}, timeout=30).status_code == 403

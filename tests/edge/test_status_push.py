"""PUT /status from the agent: what it reports, the clock offset it keeps and warns
about, a cloud without the route, and a report after each delivery."""

import io
import json
import threading
import time

import pytest

from conftest import KEY, meter, write_config
from edge_agent import __version__, cli, log
from edge_agent.agent import Agent
from edge_agent.clock import iso
from edge_agent.cloud import Cloud
from edge_agent.config import load_config
from edge_agent.outbox import Outbox, Reading, Take
from edge_agent.report import CLOCK_WARN_S, StatusReporter
from edge_support import FakeCloud, free_port

T0 = (int(time.time()) - 86400) // 300 * 300


@pytest.fixture
def logs():
    buf = io.StringIO()
    log.setup("DEBUG", stream=buf)
    yield buf
    log.setup("WARNING")


@pytest.fixture
def site(tmp_path):
    cfg = load_config(write_config(tmp_path, [meter("a", 1, "LAN1"), meter("b", 2, "LAN1")],
                                   {"LAN1": {"type": "tcp", "host": "127.0.0.1", "port": 1}}))
    ob = Outbox(cfg.buffer)
    ob.record_poll([Take("a", "", Reading("a", iso(T0 + 300 * k), 10.0 + k)) for k in range(3)]
                   + [Take("b", "LAN1", None, error="no answer")])
    ob.add(Reading("a", iso(T0 + 3000), 99.0))
    ob.dead_letter(Reading("a", iso(T0 + 3000), 99.0), "refused", "conflict")
    return cfg, ob


def test_the_report_and_a_drifting_site_clock(site, logs, capsys):
    cfg, ob = site
    skew = {"s": 42.0}  # the cloud's clock is 42 s ahead of this box
    cloud = FakeCloud(KEY, now=lambda: time.time() + skew["s"])
    try:
        rep = StatusReporter(ob, Cloud(cloud.url, KEY, 5))
        kept = rep.report_once()
        body = cloud.status_reports[0]
        assert set(body) == {"version", "backlog", "dead_letters", "failing_meters", "time"}
        assert (body["version"], body["backlog"], body["dead_letters"], body["failing_meters"]) == (__version__, 3, 1, ["b"])
        assert abs(time.mktime(time.strptime(body["time"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone - time.time()) < 5
        assert kept["state"] == "ok" and kept["clock_warning"] is True
        assert kept["clock_offset"] == pytest.approx(42.0, abs=0.5)
        rep.report_once()
        assert logs.getvalue().count("event=clock_offset_large") == 1  # a lasting drift is not logged each minute
        assert cli.main(["status", "-c", cfg.path, "--json"]) == 0
        st = json.loads(capsys.readouterr().out)
        assert st["clock_offset"] == pytest.approx(42.0, abs=0.5)
        assert st["cloud_report"]["threshold"] == CLOCK_WARN_S and st["cloud_report"]["clock_warning"] is True
        assert cli.main(["status", "-c", cfg.path]) == 0
        assert "clock offset    +42" in capsys.readouterr().out
        log.setup("DEBUG", stream=logs)  # the commands set up their own logging
        skew["s"] = -1.5  # time sync fixed the box (or the cloud is a little behind): no warning
        kept = rep.report_once()
        assert kept["clock_warning"] is False and kept["clock_offset"] == pytest.approx(-1.5, abs=0.5)
        assert "event=clock_offset_ok" in logs.getvalue()
        skew["s"] = -CLOCK_WARN_S - 5  # behind: warned too
        assert rep.report_once()["clock_warning"] is True
        assert logs.getvalue().count("event=clock_offset_large") == 2
        assert KEY not in logs.getvalue()
    finally:
        cloud.close()


def test_a_cloud_without_put_status_is_tolerated_quietly(site, logs):
    cfg, ob = site
    cloud = FakeCloud(KEY)
    cloud.status_route = False
    try:
        rep = StatusReporter(ob, Cloud(cloud.url, KEY, 5))
        for _ in range(5):
            kept = rep.report_once()
        assert kept["state"] == "unsupported" and kept.get("clock_offset") is None
        text = logs.getvalue()
        assert text.count("event=status_report") == 1 and "outcome=unsupported" in text and "level=INFO" in text
        assert "level=WARNING" not in text and "level=ERROR" not in text
        assert ob.status()["cloud_report"]["state"] == "unsupported"
    finally:
        cloud.close()


def test_the_last_offset_is_kept_while_the_cloud_is_unreachable(site):
    cfg, ob = site
    cloud = FakeCloud(KEY, now=lambda: time.time() + 3.0)
    rep = StatusReporter(ob, Cloud(cloud.url, KEY, 5))
    assert rep.report_once()["state"] == "ok"
    cloud.close()
    rep.cloud = Cloud(f"http://127.0.0.1:{free_port()}", KEY, 1)  # nothing listens there
    kept = rep.report_once()
    assert kept["state"] == "unreachable" and kept["clock_offset"] == pytest.approx(3.0, abs=0.5)
    assert ob.status()["clock_offset"] == pytest.approx(3.0, abs=0.5)


def test_the_running_agent_reports_after_delivering(tmp_path):
    cloud = FakeCloud(KEY)
    try:
        path = write_config(tmp_path, [meter("a", 1, "LAN1")],
                            {"LAN1": {"type": "tcp", "host": "127.0.0.1", "port": free_port(), "timeout": 0.1}},
                            url=cloud.url)
        cfg = load_config(path)
        ob = Outbox(cfg.buffer)
        ob.record_poll([Take("a", "", Reading("a", iso(T0 + 300 * k), 10.0 + k)) for k in range(20)])
        agent = Agent(cfg)
        t = threading.Thread(target=agent.run)
        t.start()
        try:
            end = time.monotonic() + 20
            while time.monotonic() < end and not any(r["backlog"] == 0 for r in cloud.status_reports):
                time.sleep(0.05)
        finally:
            agent.stop_event.set()
            t.join(30)
        assert len(cloud.store) == 20
        # the interval is a minute: a report with the backlog gone came because of the delivery
        assert [r["backlog"] for r in cloud.status_reports][-1] == 0
        assert ob.status()["cloud_report"]["state"] == "ok"
    finally:
        cloud.close()


def test_a_delivery_brings_the_next_report_forward(site):
    cfg, ob = site
    cloud = FakeCloud(KEY)
    stop = threading.Event()
    try:
        rep = StatusReporter(ob, Cloud(cloud.url, KEY, 5), interval=60.0, min_gap=0.1)
        t = threading.Thread(target=rep.run, args=(stop,))
        t.start()

        def reports(n, timeout=5.0):
            end = time.monotonic() + timeout
            while time.monotonic() < end and len(cloud.status_reports) < n:
                time.sleep(0.02)
            return len(cloud.status_reports)

        assert reports(1) == 1  # one at start
        time.sleep(0.3)
        assert len(cloud.status_reports) == 1  # then nothing until the minute is up...
        ob.mark_delivered(ob.pending(10))
        rep.poke()  # ...or a delivery happens
        assert reports(2) == 2 and cloud.status_reports[1]["backlog"] == 0
        for _ in range(3):  # deliveries in quick succession
            rep.poke()
        assert reports(3) == 3
        time.sleep(0.3)
        assert len(cloud.status_reports) == 3  # coalesced into one report
    finally:
        stop.set()
        t.join(5)
        cloud.close()

"""The agent acts on the receipt's rejection ``code``, never on its English text;
503/5xx/timeouts are retried (Retry-After honoured), never dead-lettered.

The cloud here is a scripted HTTP API (the agent's real HTTP client talks to it)
whose texts are deliberately misleading: a test passes only if the code decides.
"""

import datetime as dt
import email.utils
import json
import logging
import random
import time

import pytest

from conftest import KEY, meter, write_config
from edge_agent import cli
from edge_agent.clock import FakeClock, iso
from edge_agent.cloud import Cloud
from edge_agent.config import load_config
from edge_agent.outbox import Outbox, Reading, Take
from edge_agent.sender import Sender
from http_support import ScriptedAPI

T0 = (int(time.time()) - 5 * 86400) // 300 * 300
TS = [iso(T0 + 300 * k) for k in range(6)]


class CodeCloud:
    """PUT /point and POST /data; ``rule(meter, ts, posts_so_far)`` -> None (take it),
    (code, text) (reject it), or ``verdict(status, headers, body)`` for the whole request."""

    def __init__(self, rule=lambda m, t, n: None):
        self.rule = rule
        self.store: dict[tuple[str, str], float] = {}
        self.points: dict[str, int] = {}
        self.posts = 0
        self.api = ScriptedAPI(self.handle)
        self.url = self.api.url

    def handle(self, method, path, headers, body):
        if headers.get("X-API-Key") != KEY:
            return 401, {}, {"error": "bad key"}
        if method == "PUT" and path == "/point":
            self.points[body["MeterId"]] = self.points.get(body["MeterId"], 0) + 1
            return 200, {}, body
        if method == "PUT" and path == "/status":
            return 404, {}, {"error": "no such route"}
        self.posts += 1
        whole = self.rule(None, None, self.posts)
        if isinstance(whole, tuple) and len(whole) == 3:
            return whole
        acc = dup = 0
        rej = []
        for i, r in enumerate(body["readings"]):
            v = self.rule(r["MeterId"], r["TimeStamping"], self.posts)
            if v is not None:
                item = {"index": i, "error": v[1]}
                if v[0] is not None:
                    item["code"] = v[0]
                rej.append(item)
                continue
            k = (r["MeterId"], r["TimeStamping"])
            if k in self.store:
                dup += 1
            else:
                self.store[k] = r["value"]
                acc += 1
        return 200, {}, {"accepted": acc, "duplicates": dup, "rejected": rej}

    def close(self):
        self.api.close()


@pytest.fixture
def site(tmp_path):
    cfg = load_config(write_config(tmp_path, [meter("a", 1, "LAN1"), meter("b", 2, "LAN1")],
                                   {"LAN1": {"type": "tcp", "host": "127.0.0.1", "port": 1}}))
    ob = Outbox(cfg.buffer)
    takes = [Take(m, "", Reading(m, ts, 100.0 + k)) for k, ts in enumerate(TS) for m in ("a", "b")]
    ob.record_poll(takes)
    return cfg, ob, {(t.reading.meter, t.reading.ts): t.reading.value for t in takes}


def sender_for(cfg, ob, cloud, **kw):
    clock = FakeClock()
    kw.setdefault("backoff_max", 300)
    return Sender(ob, Cloud(cloud.url, KEY, kw.pop("timeout", 5)), cfg.meters, clock=clock,
                  rng=random.Random(5), **kw), clock


def drain(sender, clock, limit=200):
    waits: list = []
    for _ in range(limit):
        if not sender.outbox.status()["pending"] and not sender.to_register:
            return waits
        w = sender.step()
        waits.append(w)
        clock.advance(w)
    raise AssertionError(f"did not drain: {sender.outbox.status()}")


def test_the_code_decides_not_the_words(site):
    cfg, ob, taken = site
    cloud = CodeCloud()

    def rule(m, t, n):
        if m == "a" and t == TS[1] and cloud.points.get("a", 0) < 2:
            return "unknown_meter", "conflicting value: 5.0 already stored"  # words say conflict, code says unknown
        if m == "b" and t == TS[2]:
            return "conflict", "unknown meter 'b'"  # words say unknown meter, code says conflict
        return None

    cloud.rule = rule
    try:
        s, clock = sender_for(cfg, ob, cloud)
        drain(s, clock)
        assert cloud.points == {"a": 2, "b": 1}  # only a was registered again
        assert ("a", TS[1]) in cloud.store  # and its reading arrived
        st = ob.status()
        assert [(d["MeterId"], d["TimeStamping"], d["code"]) for d in st["dead_letter_list"]] == [("b", TS[2], "conflict")]
        assert st["dead_letter_list"][0]["reason"] == "unknown meter 'b'"  # the cloud's words are kept as they came
        assert cloud.store == {k: v for k, v in taken.items() if k != ("b", TS[2])}
    finally:
        cloud.close()


DEAD_CODES = ["conflict", "future", "malformed", "not_finite", "out_of_range", "day_full", "a_code_added_later"]


def test_every_other_code_is_dead_lettered_with_its_code_and_shown_by_status(site, capsys):
    cfg, ob, taken = site
    bad = {("a", TS[i]): code for i, code in enumerate(DEAD_CODES[:6])}
    bad[("b", TS[0])] = DEAD_CODES[6]
    bad[("b", TS[1])] = None  # an entry without a code (an older cloud): dead-lettered, whatever its words

    def rule(m, t, n):
        if (m, t) in bad:
            code = bad[(m, t)]
            return code, "unknown meter" if code is None else f"refused ({code})"
        return None

    cloud = CodeCloud(rule)
    try:
        s, clock = sender_for(cfg, ob, cloud)
        drain(s, clock)
        assert cloud.points == {"a": 1, "b": 1}  # nothing re-registered
        assert set(cloud.store) == set(taken) - set(bad)
    finally:
        cloud.close()
    assert cli.main(["status", "-c", cfg.path, "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert {(d["MeterId"], d["TimeStamping"]): d["code"] for d in st["dead_letter_list"]} == bad
    assert st["dead_letters"] == len(bad) and st["pending"] == 0
    assert st["dead_letters_by_code"] == {**{c: 1 for c in DEAD_CODES}, "none": 1}
    assert cli.main(["status", "-c", cfg.path]) == 0
    text = capsys.readouterr().out
    for code in DEAD_CODES:
        assert f"[{code}]" in text


def test_busy_is_sent_again_later_never_dead_lettered(site):
    cfg, ob, taken = site
    cloud = CodeCloud(lambda m, t, n: ("busy", "try again") if (m, t) == ("b", TS[3]) and n <= 3 else None)
    try:
        s, clock = sender_for(cfg, ob, cloud)
        waits = drain(s, clock)
        assert cloud.posts == 4
        assert all(w > 0 for w in waits[:3]) and waits[1] > waits[0] / 2  # backs off while busy
        assert cloud.store == taken and ob.status()["dead_letters"] == 0
        assert s.stats["busy"] == 3
    finally:
        cloud.close()


def test_503_retry_after_is_honoured_5xx_never_dead_lettered(site):
    cfg, ob, taken = site
    soon = email.utils.format_datetime(dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=200), usegmt=True)
    script = [
        (503, {"Retry-After": "120"}, {"error": "service busy", "code": "busy"}),
        (503, {"Retry-After": soon}, {"error": "throttled"}),
        (500, {}, {"error": "internal", "code": "malformed"}),  # a 5xx is never about the readings
        (502, {}, b"<html>bad gateway</html>"),
        (504, {}, b""),
    ]
    cloud = CodeCloud(lambda m, t, n: script[n - 1] if m is None and n <= len(script) else None)
    try:
        s, clock = sender_for(cfg, ob, cloud, backoff_initial=1)
        waits = drain(s, clock)
        assert waits[0] >= 120 and waits[1] >= 190  # Retry-After, in seconds and as an HTTP date
        assert all(w > 0 for w in waits[2:5])
        assert waits[5:] == [0.0]
        assert cloud.store == taken and ob.status()["dead_letters"] == 0
    finally:
        cloud.close()


def test_timeouts_and_dropped_connections_are_retried(site):
    cfg, ob, taken = site

    def rule(m, t, n):
        if m is None and n == 1:
            return 0, {}, "drop"
        if m is None and n == 2:
            time.sleep(0.6)  # longer than the client's timeout
        return None

    cloud = CodeCloud(rule)
    try:
        s, clock = sender_for(cfg, ob, cloud, timeout=0.3)
        waits = drain(s, clock)
        assert waits[0] > 0 and waits[1] > 0
        assert cloud.store == taken and ob.status()["dead_letters"] == 0
    finally:
        cloud.close()


def test_unknown_meter_that_stays_unknown_is_dead_lettered_once_per_episode(site, capsys):
    cfg, ob, taken = site
    broken = {"on": True}
    cloud = CodeCloud(lambda m, t, n: ("unknown_meter", "?") if m == "a" and broken["on"] else None)
    try:
        s, clock = sender_for(cfg, ob, cloud, batch_size=4)
        drain(s, clock)
        assert cloud.points["a"] == 2  # registered at start, once more for the rejection, then no loop
        st = ob.status()
        assert st["dead_letters_by_code"] == {"unknown_meter": len(TS)}
        assert {k for k in cloud.store} == {k for k in taken if k[0] == "b"}
        broken["on"] = False  # fixed in the cloud: the user sends them again
        assert ob.requeue_dead() == len(TS)
        drain(s, clock)
        assert cloud.store == taken
        # a later episode (the meter deleted in the cloud again) registers it again
        broken["on"] = True
        ob.record_poll([Take("a", "", Reading("a", iso(T0 + 3000), 200.0))])
        s.step()
        assert "a" in s.to_register and ob.status()["pending"] == 1
    finally:
        cloud.close()


def test_a_proxy_error_page_for_the_whole_batch_drops_nothing(site, caplog):
    cfg, ob, taken = site
    cloud = CodeCloud(lambda m, t, n: (400, {"Content-Type": "text/html"}, b"<html>Bad Request</html>")
                      if m is None and n <= 3 else None)
    try:
        s, clock = sender_for(cfg, ob, cloud)
        with caplog.at_level(logging.ERROR):
            waits = drain(s, clock)
        assert all(w > 0 for w in waits[:3])
        assert cloud.store == taken and ob.status()["dead_letters"] == 0
        assert any(r.getMessage() == "send_refused" for r in caplog.records)
    finally:
        cloud.close()


def test_a_retry_after_longer_than_the_backoff_cap_is_still_honoured(site):
    cfg, ob, taken = site
    cloud = CodeCloud(lambda m, t, n: (503, {"Retry-After": "900"}, {"error": "maintenance"}) if m is None and n == 1
                      else None)
    try:
        s, clock = sender_for(cfg, ob, cloud, backoff_max=60)
        waits = drain(s, clock)
        assert waits[0] >= 900 and cloud.store == taken
    finally:
        cloud.close()


def test_a_proxy_page_on_registration_is_retried_not_taken_as_a_refusal(site):
    cfg, ob, taken = site
    pages = {"left": 2}
    cloud = CodeCloud()
    api_handle = cloud.handle

    def handle(method, path, headers, body):
        if method == "PUT" and path == "/point" and pages["left"]:
            pages["left"] -= 1
            return 400, {"Content-Type": "text/html"}, b"<html>captive portal</html>"
        return api_handle(method, path, headers, body)

    cloud.api.handler = handle
    try:
        s, clock = sender_for(cfg, ob, cloud)
        waits = drain(s, clock)
        assert waits[0] > 0 and waits[1] > 0
        assert cloud.points == {"a": 1, "b": 1} and cloud.store == taken and ob.status()["dead_letters"] == 0
    finally:
        cloud.close()

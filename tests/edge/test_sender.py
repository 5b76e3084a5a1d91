"""Delivery policy: receipts, dead letters, 413/401/400/429, backoff, registration."""

import logging
import random
import time

import pytest

from conftest import KEY, meter, write_config
from edge_agent.clock import FakeClock, iso
from edge_agent.cloud import Answer, Cloud, CloudUnreachable
from edge_agent.config import load_config
from edge_agent.outbox import Outbox, Reading, Take
from edge_agent.sender import Sender

T0 = (int(time.time()) - 10 * 86400) // 300 * 300


@pytest.fixture
def setup(tmp_path):
    cfg = load_config(write_config(tmp_path, [meter("a", 1, "LAN1"), meter("b", 2, "LAN1")],
                                   {"LAN1": {"type": "tcp", "host": "127.0.0.1", "port": 1}}))
    ob = Outbox(cfg.buffer)
    return cfg, ob


def fill(ob, n, meters=("a", "b"), t0=T0):
    takes = [Take(m, "", Reading(m, iso(t0 + 300 * k), 100.0 + k)) for k in range(n) for m in meters]
    ob.record_poll(takes)
    return {(t.reading.meter, t.reading.ts): t.reading.value for t in takes}


def drain(sender, clock, limit=10_000):
    for _ in range(limit):
        if not sender.outbox.status()["pending"] and not sender.to_register:
            return
        clock.advance(sender.step())
    raise AssertionError("did not drain")


def stored(cloud):
    return {(m, t.strftime("%Y-%m-%dT%H:%M:%SZ")): v for (m, t), v in cloud.store.items()}


def test_413_halves_the_batch_until_it_fits(setup, fake_cloud):
    cfg, ob = setup
    fake_cloud.max_batch = 300
    taken = fill(ob, 500)
    clock = FakeClock()
    s = Sender(ob, Cloud(fake_cloud.url, KEY, 5), cfg.meters, batch_size=1000, clock=clock)
    drain(s, clock)
    assert stored(fake_cloud) == taken
    assert s.stats["batches_ok"] >= 4 and s.batch_size <= 1000


def test_bad_key_is_loud_and_retried_until_fixed(setup, fake_cloud, caplog):
    cfg, ob = setup
    taken = fill(ob, 3)
    clock = FakeClock()
    s = Sender(ob, Cloud(fake_cloud.url, "0000000000-wrong-key-0000000000", 5), cfg.meters, clock=clock,
               rng=random.Random(1))
    with caplog.at_level(logging.WARNING):
        waits = [s.step() for _ in range(4)]
    assert all(w > 0 for w in waits) and waits[-1] > waits[0]  # backing off
    assert any(r.levelno == logging.ERROR and r.getMessage() == "register_failed" for r in caplog.records)
    assert ob.status()["pending"] == 6
    s.cloud._key = KEY  # the key is fixed (e.g. config reloaded)
    drain(s, clock)
    assert stored(fake_cloud) == taken
    assert "0000000000-wrong-key-0000000000" not in caplog.text


def test_rejected_reading_goes_to_dead_letters_with_the_reason(setup, fake_cloud):
    cfg, ob = setup
    taken = fill(ob, 5)
    future = Reading("a", iso(time.time() + 7200 // 300 * 300 + 3600), 1.0)
    ob.add(future)
    clock = FakeClock()
    s = Sender(ob, Cloud(fake_cloud.url, KEY, 5), cfg.meters, clock=clock)
    drain(s, clock)
    assert stored(fake_cloud) == taken
    st = ob.status()
    assert st["dead_letters"] == 1 and st["pending"] == 0
    assert st["dead_letter_list"][0]["TimeStamping"] == future.ts
    assert st["dead_letter_list"][0]["code"] == "future" and "10 minutes" in st["dead_letter_list"][0]["reason"]
    assert ob.requeue_dead() == 1 and ob.status()["pending"] == 1


def test_unknown_meter_is_registered_again_not_dead_lettered(setup, fake_cloud):
    cfg, ob = setup
    clock = FakeClock()
    s = Sender(ob, Cloud(fake_cloud.url, KEY, 5), cfg.meters, clock=clock)
    drain(s, clock)
    assert set(fake_cloud.points) == {"a", "b"}
    assert fake_cloud.points["a"]["ModbusMap"] == "Priority.ici" and fake_cloud.points["a"]["startAddress"] == 1100
    del fake_cloud.points["a"]  # e.g. deleted in the cloud
    taken = fill(ob, 2)
    drain(s, clock)
    assert stored(fake_cloud) == taken and ob.status()["dead_letters"] == 0


class StubCloud:
    """Answers from a script: an Answer, an exception, or a callable(batch) -> Answer."""

    def __init__(self, script):
        self.script = list(script)
        self.batches = []

    def put_point(self, point):
        return Answer(200, dict(point), "")

    def post_data(self, batch):
        self.batches.append(list(batch))
        nxt = self.script.pop(0) if self.script else "ok"
        if nxt == "ok":
            return Answer(200, {"accepted": len(batch), "duplicates": 0, "rejected": []}, "")
        if isinstance(nxt, Exception):
            raise nxt
        return nxt(batch) if callable(nxt) else nxt


def test_garbled_receipt_is_not_taken_as_delivery(setup):
    cfg, ob = setup
    fill(ob, 2)
    stub = StubCloud([Answer(200, None, "<html>proxy</html>"), Answer(200, {"accepted": 1, "duplicates": 0, "rejected": []}, "")])
    s = Sender(ob, stub, cfg.meters, clock=FakeClock())
    assert s.step() > 0 and s.step() > 0
    assert ob.status()["pending"] == 4
    assert s.step() == 0 and ob.status()["pending"] == 0


def test_backoff_is_exponential_with_jitter_and_capped(setup):
    cfg, ob = setup
    fill(ob, 1)
    stub = StubCloud([CloudUnreachable("refused")] * 12)
    s = Sender(ob, stub, cfg.meters, backoff_initial=1, backoff_max=60, clock=FakeClock(), rng=random.Random(3))
    waits = [s.step() for _ in range(12)]
    for i, w in enumerate(waits):
        cap = min(60, 2 ** i)
        assert cap / 2 <= w <= cap
    assert waits[-1] <= 60


def test_429_honours_retry_after_and_5xx_backs_off(setup):
    cfg, ob = setup
    fill(ob, 1)
    stub = StubCloud([Answer(429, {"error": "slow down"}, "", retry_after=30), Answer(503, None, "")])
    s = Sender(ob, stub, cfg.meters, backoff_initial=1, clock=FakeClock())
    assert s.step() >= 30
    assert 0 < s.step() <= 2
    assert s.step() == 0 and ob.status()["pending"] == 0


def test_whole_batch_400_is_narrowed_to_the_bad_reading(setup):
    cfg, ob = setup
    fill(ob, 8)  # 16 readings
    bad = ("b", iso(T0 + 300 * 5))

    def answer(batch):
        if any((r.meter, r.ts) == bad for r in batch):
            return Answer(400, {"error": "readings: malformed"}, "")
        return Answer(200, {"accepted": len(batch), "duplicates": 0, "rejected": []}, "")

    stub = StubCloud([answer] * 100)
    s = Sender(ob, stub, cfg.meters, clock=FakeClock())
    for _ in range(100):
        if not ob.status()["pending"]:
            break
        s.step()
    st = ob.status()
    assert st["pending"] == 0 and st["dead_letters"] == 1
    d = st["dead_letter_list"][0]
    assert (d["MeterId"], d["TimeStamping"]) == bad and "malformed" in d["reason"]


def test_a_backlog_drains_oldest_day_first_meter_by_meter_and_order_is_kept_across_failures(setup):
    """Day by day (UTC, the cloud's item per meter and day), within a day meter by meter in time order:
    each of the cloud's day items is rewritten about once, not by every batch. A failed batch is resent as it was."""
    cfg, ob = setup
    start = T0 // 86400 * 86400 + 86400 - 12 * 300        # 23:00 UTC: the backlog spans two UTC days
    fill(ob, 30, t0=start)
    stub = StubCloud(["ok", CloudUnreachable("x"), Answer(500, None, ""), "ok", "ok", "ok"])
    s = Sender(ob, stub, cfg.meters, batch_size=10, clock=FakeClock())
    for _ in range(12):
        s.step()
    assert stub.batches[1] == stub.batches[2] == stub.batches[3]  # the failed batch is resent as it was
    sent = [(r.ts, r.meter) for i, b in enumerate(stub.batches) if i not in (1, 2) for r in b]
    every = [(iso(start + 300 * k), m) for k in range(30) for m in "ab"]
    assert sent == sorted(every, key=lambda tm: (tm[0][:10], tm[1], tm[0]))   # each once, in drain order
    assert [{r.meter for r in b} for b in stub.batches[:1]] == [{"a"}]        # not a and b interleaved
    assert ob.status()["pending"] == 0

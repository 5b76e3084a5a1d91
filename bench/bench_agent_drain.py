"""Benchmark of the edge agent's backlog drain: a week of 5-minute readings for 20
meters (40,320 readings) waiting in the outbox when the cloud comes back.

Measures the requests and the wall time the agent's Sender needs to deliver them,
against the local stack (the Chalice app on Chalice's local server over in-process
moto, as tests/conftest.py's live_api runs it) and against the in-memory fake cloud
of tests/edge (the agent's own cost, without the API's).

Against the local stack it drains the same backlog twice: in the agent's order (oldest UTC day first,
meter by meter within it: Outbox.pending) and, as the baseline, in plain time order (every meter's next
readings: the agent before), counting the DynamoDB writes the API makes (bench_ingest_scale.Units).

Run: .venv/bin/python bench/bench_agent_drain.py [--days 7] [--meters 20] [--batch 1000] [--only fake|local]
"""
import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "edge"), str(ROOT / "bench")]

from edge_agent.clock import Clock, iso  # noqa: E402
from edge_agent.cloud import Cloud  # noqa: E402
from edge_agent.config import Meter  # noqa: E402
from edge_agent.outbox import Outbox, Reading, Take  # noqa: E402
from edge_agent.regmap import load_map  # noqa: E402
from edge_agent.sender import Sender  # noqa: E402


class TimeOrderOutbox(Outbox):
    """The baseline: pending readings in plain time order (every meter's next readings in each batch)."""

    def pending(self, limit):
        rows = self._db().execute(
            "SELECT meter, ts, value FROM readings WHERE status=0 ORDER BY ts, meter LIMIT ?", (limit,)).fetchall()
        return [Reading(*r) for r in rows]


def make_backlog(path, meters, days, outbox=Outbox):
    ob = outbox(path)
    t0 = (int(time.time()) - (days + 1) * 86400) // 300 * 300
    takes = [Take(m.MeterId, "", Reading(m.MeterId, iso(t0 + 300 * k), round(1000 + 0.1 * k, 3)))
             for k in range(days * 288) for m in meters]
    ob.record_poll(takes)
    return ob, len(takes)


def drain(url, key, meters, days, batch, outbox=Outbox):
    with tempfile.TemporaryDirectory() as d:
        ob, n = make_backlog(os.path.join(d, "o.sqlite"), meters, days, outbox)
        s = Sender(ob, Cloud(url, key, timeout=120), meters, batch_size=batch, clock=Clock())
        t = time.perf_counter()
        while ob.status()["pending"] or s.to_register:
            w = s.step()
            if w > 0 and ob.status()["pending"]:
                raise SystemExit(f"delivery failed, stats {s.stats}")
        return n, s.stats["requests"], s.stats["batches_ok"], time.perf_counter() - t


def local_stack():
    """Start the app over moto like tests/conftest.py's live_api; return (url, key, stop)."""
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    from moto import mock_aws

    from chalicelib.platform import aws as aws_clients
    from tools import provision
    from tools.local_api import make_server

    mock = mock_aws()
    mock.start()
    aws_clients.reset_clients()
    provision.provision(prefix="intellimeter-local")
    import io
    sys.stderr, real_err = io.StringIO(), sys.stderr  # the dev server logs every request line
    server = make_server("127.0.0.1", 0)                  # the port it binds, not one probed before
    port = server.port
    threading.Thread(target=server.server.serve_forever, daemon=True).start()
    key = new_project_key("bench")

    def stop():
        server.shutdown()
        mock.stop()
        sys.stderr = real_err

    return f"http://127.0.0.1:{port}", key, stop


def new_project_key(name):
    """The account key of a new project's first user (each drain writes into a project of its own)."""
    from chalicelib.identity import accounts

    project = accounts.create_project(name, "UTC")
    _, key = accounts.create_user(project["project_id"], name, "correct horse battery staple", f"{name}@example.com")
    return key


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--meters", type=int, default=20)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--only", choices=["fake", "local"])
    a = ap.parse_args()
    pmap = load_map("Priority.ici")
    meters = [Meter(f"bench{i:02d}", i + 1, "USB0", "3", "I-45/MFX/636", "Priority.ici", 5, 1100, pmap)
              for i in range(a.meters)]
    rows = []
    if a.only != "local":
        from edge_support import FakeCloud
        fc = FakeCloud("k" * 20)
        rows.append(("fake cloud (tests/edge)",) + drain(fc.url, fc.key, meters, a.days, a.batch))
        fc.close()
    if a.only != "fake":
        from bench_ingest_scale import Units

        from chalicelib.platform import aws

        url, key, stop = local_stack()
        try:
            # the baseline first: moto's queries scan the whole table, so the second drain runs on a fuller one
            for name, outbox in (("local stack, baseline: time order", TimeOrderOutbox),
                                 ("local stack, agent's order (day, meter, time)", Outbox)):
                units = Units().attach()
                rows.append((name,) + drain(url, key, meters, a.days, a.batch, outbox)
                            + (units.wcu, units.items_written))
                aws.dynamodb().meta.events.unregister("before-parameter-build.dynamodb.*", units.before)
                aws.dynamodb().meta.events.unregister("after-call.dynamodb.*", units.after)
                key = new_project_key(f"bench-{outbox.__name__}")   # the second drain into a project of its own
        finally:
            stop()
    print(f"\n{a.days} days x {a.meters} meters, batch {a.batch}\n")
    print("| cloud | readings | requests (incl. PUT /point) | POST /data batches | time | readings/s | WRU | items written |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, n, reqs, batches, secs, *units in rows:
        wcu, items = units or ("", "")
        print(f"| {name} | {n} | {reqs} | {batches} | {secs:.1f} s | {n / secs:,.0f} | {wcu} | {items} |")


if __name__ == "__main__":
    main()

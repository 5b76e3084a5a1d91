"""Benchmark of the edge agent's Modbus side.

1. Requests per poll for each shipped register map: `run` reads the energy register alone;
   `read`'s merged plan against the number of contiguous register runs (what reading each
   run separately costs) and against one request per value.
2. Time to poll 32 simulated TCP meters (pymodbus servers on loopback), all on one
   bus and spread over 4 buses (buses are read in parallel, meters on a bus in turn).

Run: .venv/bin/python bench/bench_agent_modbus.py [--polls 20]
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from edge_agent.config import load_config  # noqa: E402
from edge_agent.outbox import Outbox  # noqa: E402
from edge_agent.regmap import available_maps, load_map  # noqa: E402
from edge_agent.scheduler import Poller  # noqa: E402
from edge_agent.simulator import SiteSimulator  # noqa: E402
from tools.ports import free_port  # noqa: E402

MAPS = ["Priority.ici", "Eastron.SDM630", "Eastron.SDM120", "CarloGavazzi.EM24", "Schneider.iEM3000"]


def contiguous_runs(m):
    """Runs of registers with no hole between them: what reading each run separately costs."""
    runs, nxt = 0, None
    for r in sorted(m.registers.values(), key=lambda r: r.address):
        if r.address != nxt:
            runs += 1
        nxt = r.address + r.size
    return runs


def map_table():
    print("| map | values read | one request per value | contiguous runs | `read`'s requests (merged plan) | "
          "`run`'s requests per poll | max registers per request |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in sorted(available_maps()):
        m = load_map(name)
        plan = m.plan(m.default_start)
        print(f"| {name} | {len(m.registers)} | {len(m.registers)} | {contiguous_runs(m)} | "
              f"{len(plan)} | 1{' (+1 once: model code)' if m.identify else ''} | {m.max_registers} |")


def poll_time(n_meters, n_buses, polls, tmp):
    buses = {f"LAN{b}": {"type": "tcp", "host": "127.0.0.1", "port": free_port(), "timeout": 1} for b in range(n_buses)}
    meters = []
    for i in range(n_meters):
        mp = MAPS[i % len(MAPS)]
        bus = f"LAN{i % n_buses}"
        meters.append({"MeterId": f"m{i:02d}", "ModbusId": i // n_buses + 1, "Port": bus, "NoPhases": "3",
                       "MeterType": mp, "ModbusMap": mp, "SaveEvery": 5,
                       **({"startAddress": 1100} if mp == "Priority.ici" else {})})
    d = Path(tempfile.mkdtemp(dir=tmp))
    cfgp = d / "agent.yaml"
    cfgp.write_text(yaml.safe_dump({"cloud": {"url": "http://127.0.0.1:9", "key": "x" * 10}, "buffer": str(d / "o.sqlite"),
                                    "buses": buses, "meters": meters}))
    cfg = load_config(cfgp)
    sim = SiteSimulator(cfg).start()
    poller = Poller(cfg, Outbox(cfg.buffer))
    times, reqs = [], 0
    try:
        before = sum(r.requests for r in poller.readers.values())
        for k in range(polls):
            t = time.perf_counter()
            res = poller.poll(1_700_000_100 + 300 * k)
            times.append(time.perf_counter() - t)
            assert all(r.outcome == "stored" for r in res), [r for r in res if r.outcome != "stored"][:1]
        reqs = (sum(r.requests for r in poller.readers.values()) - before) / polls
    finally:
        poller.close()
        sim.stop()
    return statistics.median(times), min(times), reqs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--polls", type=int, default=20)
    a = ap.parse_args()
    print("## Requests per poll\n")
    map_table()
    print("\n## Polling 32 simulated TCP meters (median of %d polls; includes the outbox commit)\n" % a.polls)
    print("| buses | meters | requests per poll | median poll time | fastest |")
    print("|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for n_buses in (1, 4):
            med, best, reqs = poll_time(32, n_buses, a.polls, tmp)
            print(f"| {n_buses} | 32 | {reqs:.0f} | {med * 1000:.1f} ms | {best * 1000:.1f} ms |")


if __name__ == "__main__":
    main()

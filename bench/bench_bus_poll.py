"""Benchmark: poll time per RS-485 bus, before and after issue 19 (meters, baud).

Each case is one serial bus: N Eastron SDM630 meters (the maker's register layout, served by
pymodbus's own ``ModbusSerialServer``; ``lenient``: the 76-register merged read is answered, as
the issue measured) behind ``tests/edge/rs485_line.Line``, a model of a 2-wire line that paces
every byte at the baud (10 bits a character, 8N1) and answers after the meters' turnaround.
Both ways read the same meters on the same line, in the same run, one after the other:

* before - the agent as it was: pymodbus's ``ModbusSerialClient`` with the old defaults
  (timeout 0.5 s, retries 1) reading every register of the map in its merged plan
  (``RegisterMap.plan``: fc4@0+76 and fc4@342+2), as the old ``BusReader`` did at every poll.
* after  - the agent now: ``BusReader.read(meter, energy_only=True)``, what ``run`` does: one
  request for the energy register, with timeouts that fit the line.

A poll is every meter of the bus once; the figures are medians over ``--polls`` polls, with the
meters read (answered) per poll and the collisions on the line per poll (a retry sent while the
answer is still on the wire). Nothing is written to an outbox (both ways alike).

Run: .venv/bin/python bench/bench_bus_poll.py [--polls 3] [--turnaround 0.02] [--cases 2400:16,9600:28,19200:28]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (str(ROOT), str(ROOT / "tests" / "edge")):
    sys.path.insert(0, p)

import yaml  # noqa: E402
from maker_meters import MeterSpec, start_serial_meters  # noqa: E402
from pymodbus.client import ModbusSerialClient  # noqa: E402
from pymodbus.exceptions import ModbusException  # noqa: E402
from rs485_line import Line  # noqa: E402

from edge_agent.config import load_config  # noqa: E402
from edge_agent.reader import BusReader, MeterReadError  # noqa: E402
from edge_agent.transport import bus_budget  # noqa: E402

OLD_TIMEOUT, OLD_RETRIES = 0.5, 1  # the serial defaults before issue 19


def _config(tmp: Path, device: str, baud: int, n: int, turnaround: float):
    meters = [{"MeterId": f"m{i:02d}", "ModbusId": i + 1, "Port": "RS", "NoPhases": "3", "MeterType": "SDM630",
               "ModbusMap": "Eastron.SDM630", "SaveEvery": 5} for i in range(n)]
    doc = {"cloud": {"url": "http://127.0.0.1:9", "key": "x" * 10}, "buffer": str(tmp / "o.sqlite"),
           "buses": {"RS": {"type": "serial", "device": device, "baudrate": baud, "turnaround_ms": turnaround * 1000}},
           "meters": meters}
    (tmp / "agent.yaml").write_text(yaml.safe_dump(doc))
    return load_config(tmp / "agent.yaml")


def poll_before(cfg, device: str, baud: int) -> int:
    """One poll the old way; the number of meters whose every request was answered."""
    client = ModbusSerialClient(device, baudrate=baud, timeout=OLD_TIMEOUT, retries=OLD_RETRIES, reconnect_delay=0)
    client.connect()
    ok = 0
    try:
        for m in cfg.meters:
            try:
                for r in m.map.plan(m.startAddress):
                    rr = client.read_input_registers(r.address, count=r.count, device_id=m.ModbusId)
                    if rr.isError() or len(rr.registers) < r.count:
                        raise ModbusException("bad answer")
                ok += 1
            except ModbusException:
                pass
    finally:
        client.close()
    return ok


def poll_after(cfg) -> int:
    """One poll as `run` reads now; the number of meters read."""
    reader = BusReader(cfg.buses["RS"])
    ok = 0
    try:
        for m in cfg.meters:
            try:
                reader.read(m, energy_only=True)
                ok += 1
            except MeterReadError:
                pass
    finally:
        reader.close()
    return ok


def run_case(baud: int, n: int, polls: int, turnaround: float) -> dict:
    line = Line(baud)
    agent = line.attach("agent")
    meters = line.attach("meters", delay=turnaround)
    specs = [MeterSpec("Eastron.SDM630", unit=i + 1, energy_kwh=1000.0 + i, faults={"lenient"}) for i in range(n)]
    bus = start_serial_meters(meters.path, specs, baudrate=baud)
    out: dict = {"baud": baud, "meters": n}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = _config(Path(tmp), agent.path, baud, n, turnaround)
            out["budget"] = bus_budget(cfg.buses["RS"], [2] * n)[0]
            for way, poll in (("before", lambda: poll_before(cfg, agent.path, baud)), ("after", lambda: poll_after(cfg))):
                times, read = [], []
                collisions = line.collisions
                for _ in range(polls):
                    line.wait_idle(quiet=0.3)
                    t = time.perf_counter()
                    read.append(poll())
                    times.append(time.perf_counter() - t)
                out[way] = (statistics.median(times), min(read), max(read), (line.collisions - collisions) / polls)
    finally:
        bus.stop()
        line.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--polls", type=int, default=3)
    ap.add_argument("--turnaround", type=float, default=0.02, help="the meters' answer delay on the line (s)")
    ap.add_argument("--cases", default="2400:16,9600:28,19200:28", help="baud:meters,...")
    a = ap.parse_args()
    logging.disable(logging.CRITICAL)  # pymodbus logs every timeout of the old way
    cases = [tuple(int(x) for x in c.split(":")) for c in a.cases.split(",")]
    print(f"## Poll time per RS-485 bus: SDM630 meters, turnaround {a.turnaround * 1000:.0f} ms, "
          f"median of {a.polls} polls\n")
    print("| baud | meters | before: poll | before: meters read | before: collisions | after: poll | "
          "after: meters read | after: collisions | before / after | after per meter | after, estimated by `check` |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for baud, n in cases:
        r = run_case(baud, n, a.polls, a.turnaround)
        (tb, lo_b, hi_b, cb), (ta, lo_a, hi_a, ca) = r["before"], r["after"]
        rb = f"{lo_b}" if lo_b == hi_b else f"{lo_b}-{hi_b}"
        ra = f"{lo_a}" if lo_a == hi_a else f"{lo_a}-{hi_a}"
        print(f"| {baud} | {n} | {tb:.2f} s | {rb} of {n} | {cb:.0f} | {ta:.2f} s | {ra} of {n} | {ca:.0f} | {tb / ta:.1f}x | "
              f"{ta / n * 1000:.0f} ms | {r['budget']:.1f} s |", flush=True)


if __name__ == "__main__":
    main()

"""Command line: run, read, status, simulate, requeue-dead, release-suspect, check.

Every command takes ``-c agent.yaml``; a bad config exits with status 2 and one
line per problem naming the file, the meter and the field.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from . import log
from .config import ConfigError, load_config

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m edge_agent", description="Intellimeter edge agent")
    sub = p.add_subparsers(dest="cmd", required=True)

    def cmd(name, help_):
        s = sub.add_parser(name, help=help_)
        s.add_argument("-c", "--config", required=True, help="agent YAML config")
        s.add_argument("--log-level", default="INFO")
        return s

    cmd("run", "poll the meters and deliver readings until stopped")
    r = cmd("read", "read each meter once (commissioning); stores nothing")
    r.add_argument("--meter", help="only this MeterId")
    r.add_argument("--json", action="store_true", help="one JSON object per line")
    s = cmd("status", "outbox backlog, last delivery, dead letters, failing meters")
    s.add_argument("--json", action="store_true")
    m = cmd("simulate", "serve simulated meters on each TCP bus of the config")
    m.add_argument("--host", help="bind address instead of each bus's host (e.g. 127.0.0.1)")
    m.add_argument("--silent", action="append", default=[], metavar="METER",
                   help="leave this meter out (nothing answers for it): a dead meter, for demos")
    m.add_argument("--load", action="append", default=[], metavar="METER=BASE:PEAK",
                   help="this meter draws a building's load: BASE kW, plus up to PEAK kW on weekday daytimes")
    m.add_argument("--timezone", default="UTC", help="the local time of --load's days (an IANA name)")
    cmd("requeue-dead", "send the dead letters again (after fixing their cause in the cloud)")
    h = cmd("release-suspect", "send a meter's readings held back as suspect after all (you judged them right): "
                               "the first starts a new register series in the cloud (a meter replaced or reset)")
    h.add_argument("--meter", required=True, help="the MeterId whose suspect readings to send")
    h.add_argument("--same-series", action="store_true",
                   help="the meter was NOT replaced or reset (a max_power_kw set too low): count the step as consumption")
    cmd("check", "validate the config, the maps and that the API key can be read; print the read plan")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    log.setup(args.log_level.upper())
    try:
        cfg = load_config(args.config)
        if args.cmd in ("run", "check"):  # what `run` needs to start: `check` says the same, `run` exits 2 on it
            cfg.require_key()
            problem = _outbox_not_writable(cfg.buffer)
            if problem:
                raise ConfigError(f"{cfg.path}: top level: field 'buffer': {problem}")
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    log.register_secret(cfg.key)
    return {
        "run": _run, "read": _read, "status": _status, "simulate": _simulate,
        "requeue-dead": _requeue, "release-suspect": _release_suspect, "check": _check,
    }[args.cmd](cfg, args)


def _run(cfg, args) -> int:
    from .agent import Agent

    agent = Agent(cfg)
    agent.install_signals()
    return agent.run()


def _read(cfg, args) -> int:  # noqa: C901  # the read command: read the buses in parallel, print a table or JSON (edge branch: split after it lands)
    from .reader import BusReader, MeterReadError

    meters = [cfg.meter(args.meter)] if args.meter else cfg.meters
    readers = {name: BusReader(bus) for name, bus in cfg.buses.items()}

    def read_bus(ms):
        out: list[tuple] = []
        for m in ms:
            t0 = time.monotonic()
            try:
                v = readers[m.Port].read(m)
                out.append((m, v, None, time.monotonic() - t0))
            except MeterReadError as exc:
                out.append((m, None, str(exc), time.monotonic() - t0))
            except Exception as exc:  # noqa: BLE001 - a driver bug shows as this meter's error, not a traceback
                out.append((m, None, f"{type(exc).__name__}: {exc}", time.monotonic() - t0))
        return out

    by_bus: dict[str, list] = {}
    for m in meters:
        by_bus.setdefault(m.Port, []).append(m)
    results = {}
    with ThreadPoolExecutor(max_workers=max(1, len(by_bus))) as pool:  # buses in parallel
        for fut in [pool.submit(read_bus, ms) for ms in by_bus.values()]:
            for r in fut.result():
                results[r[0].MeterId] = r
    for r in readers.values():
        r.close()
    failed = 0
    if not args.json:
        print(f"{'MeterId':<16} {'bus':<8} {'id':>3} {'map':<20} {'kWh':>16} {'reqs':>4} {'ms':>6}  error or notes")
    for m in meters:
        _, v, err, dt = results[m.MeterId]
        failed += err is not None
        if args.json:
            obj = {"MeterId": m.MeterId, "bus": m.Port, "ModbusId": m.ModbusId}
            if err:
                obj["error"] = err
            else:
                obj["value"] = round(v.scaled[m.map.energy], 6)
                obj["unit"] = "kWh"
                obj["registers"] = {k: round(x, 6) for k, x in v.scaled.items()}
                obj["plan"] = v.plan
                if v.model:
                    obj["model"] = v.model
                if v.not_finite:
                    obj["not_finite"] = v.not_finite
            print(json.dumps(obj), flush=True)
        else:
            val = "" if err else f"{v.scaled[m.map.energy]:.3f}"
            reqs = "" if err else str(v.requests)
            notes = [] if err else ([f"model {v.model}"] if v.model else []) + (
                [f"plan {v.plan}"] if v.plan != "merged" else []) + (
                [f"not finite: {', '.join(v.not_finite)}"] if v.not_finite else [])
            print(f"{m.MeterId:<16} {m.Port:<8} {m.ModbusId:>3} {m.ModbusMap:<20} {val:>16} {reqs:>4} {dt * 1000:6.0f}  "
                  f"{err or '; '.join(notes)}")
    return 1 if failed else 0


def _status(cfg, args) -> int:
    from .outbox import Outbox

    ob = Outbox(cfg.buffer, cfg.max_pending)
    st = ob.status()
    if args.json:
        print(json.dumps(st))
        return 0
    print(f"outbox          {cfg.buffer}")
    print(f"pending         {st['pending']}  (bound {st['max_pending']})")
    print(f"oldest pending  {st['oldest_pending'] or '-'}")
    print(f"last delivery   {st['last_delivery'] or 'never'}")
    print(f"dropped at bound {st['dropped_at_bound']}")
    by_code = ", ".join(f"{c} {n}" for c, n in sorted(st.get("dead_letters_by_code", {}).items()))
    print(f"dead letters    {st['dead_letters']}" + (f"  ({by_code})" if by_code else ""))
    for d in st["dead_letter_list"]:
        print(f"  {d['MeterId']} {d['TimeStamping']} {d['value']} [{d.get('code') or 'no code'}]: {d['reason']}")
    rep = st.get("cloud_report") or {}
    if rep.get("clock_offset") is not None:
        warn = "  WARNING: beyond the threshold, check time sync" if rep.get("clock_warning") else ""
        print(f"clock offset    {rep['clock_offset']:+.1f} s (cloud minus this box, at {rep.get('clock_offset_at')}){warn}")
    if rep:
        print(f"status report   {rep.get('state')} at {rep.get('last_report')}")
    print(f"failing meters  {len(st['failing_meters'])}")
    for f in st["failing_meters"]:
        print(f"  {f['MeterId']} on {f['bus']}: {f['failures']} failures since {f['since']}: {f['last_error']}")
    print(f"suspect readings {st['suspect_readings']}  (held back, not sent)")
    for d in st["suspect_list"][:10]:
        print(f"  {d['MeterId']} {d['TimeStamping']} {d['value']}: {d['reason']}")
    c = st.get("clock") or {}
    print(f"clock           {c.get('state', 'unknown')} since {c.get('since', '-')}"
          f" (kernel: {c.get('kernel', 'unknown')}){': ' + c['detail'] if c.get('detail') else ''}")
    print(f"last boundary   {st['last_boundary'] or '-'}")
    print(f"held readings   {st['held_readings']}  (taken while the time was wrong or unconfirmed, not stamped yet;"
          f" {st['held_dropped']} dropped)")
    return 0


def _simulate(cfg, args) -> int:
    from .simulator import LoadProfile, SiteSimulator

    try:
        loads = {name: LoadProfile.parse(spec, args.timezone)
                 for name, _, spec in (item.partition("=") for item in args.load)}
    except (ValueError, KeyError) as problem:   # KeyError: zoneinfo's unknown zone
        print(f"--load/--timezone: {problem}", file=sys.stderr)
        return 2
    sim = SiteSimulator(cfg, bind_host=args.host, silent=set(args.silent), loads=loads).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    for name in sim.servers:
        bus = cfg.buses[name]
        ids = ",".join(f"{m.MeterId}@{m.ModbusId}" for m in cfg.meters if m.Port == name and m.MeterId in sim.meters)
        log.event(log.get("sim"), 20, "serving", bus=name, host=args.host or bus.host, port=bus.port, meters=ids)
    for name in sim.skipped:
        log.event(log.get("sim"), 30, "bus_not_simulated", bus=name, reason="serial bus: only TCP buses are served")
    if not sim.servers:
        print("no TCP bus in the config: nothing to simulate", file=sys.stderr)
        return 1
    try:
        while not stop.wait(1.0):
            pass
    finally:
        sim.stop()
    return 0


def _requeue(cfg, args) -> int:
    from .outbox import Outbox

    n = Outbox(cfg.buffer, cfg.max_pending).requeue_dead()
    print(f"{n} dead letters queued again")
    return 0


def _release_suspect(cfg, args) -> int:
    from .outbox import Outbox

    n = Outbox(cfg.buffer, cfg.max_pending).release_suspect(args.meter, new_series=not args.same_series)
    if not n:
        print(f"no suspect readings of {args.meter} held back", file=sys.stderr)
        return 1
    how = ("the step to the first counts as consumption" if args.same_series else
           "the first starts a new register series in the cloud: nothing is counted across the step")
    print(f"{n} suspect readings of {args.meter} released: sent with the next delivery; {how}")
    return 0


def _check(cfg, args) -> int:
    from .transport import bus_budget

    for m in cfg.meters:
        plan = m.map.plan(m.startAddress)
        e = m.map.located(m.startAddress)[m.map.energy]
        print(f"{m.MeterId}: bus {m.Port} id {m.ModbusId} map {m.ModbusMap}: energy at wire address {e.address} "
              f"({e.type}, {e.word_order} word order, x{e.scale}); run reads fc{m.map.function}@{e.address}+{e.size}"
              + (" (after the model code, once)" if m.map.identify else "") + "; "
              f"read: {len(plan)} request(s): " + ", ".join(f"fc{r.function}@{r.address}+{r.count}" for r in plan))
    for name, bus in cfg.buses.items():
        sizes = [m.map.registers[m.map.energy].size for m in cfg.meters if m.Port == name]
        busy, silent = bus_budget(bus, sizes)
        if busy:
            print(f"bus {name}: {len(sizes)} meter{'' if len(sizes) == 1 else 's'} at {bus.baudrate} baud: a poll takes about {busy:.1f} s on the line "
                  f"(with turnaround_ms {bus.turnaround_ms:g}); each meter that does not answer adds {silent:.1f} s")
    print(f"{cfg.path}: OK, {len(cfg.meters)} meters on {len(cfg.buses)} buses")
    return 0


def _outbox_not_writable(buffer: str) -> str | None:
    """Why this user could not write the outbox (e.g. files left by a command run as root), or None."""
    import os

    for path in (buffer, buffer + "-wal", buffer + "-shm"):
        if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
            return (f"{path} cannot be read and written by this user (uid {os.getuid()}): "
                    f"a file left by a command run as root? chown it to the service user")
    folder = os.path.dirname(buffer) or "."
    if os.path.isdir(folder) and not os.access(folder, os.W_OK | os.X_OK):
        return f"the folder {folder} is not writable by this user (uid {os.getuid()})"
    return None

"""Soak: many simulated meters, some dead, a bus that goes down for a while; a cloud whose AWS calls fail at
random (a faulty proxy in front of the moto server: throttling, 500s, dropped connections, hangs past
the timeout, answers lost after the call was carried out, outages) and whose answers to the agent get
lost on the way (the edge tests' FaultProxy between agent and API); the edge agent SIGKILLed at random
and restarted.

At the end, every reading a healthy meter gave (the agent's outbox is the record of what was taken)
is in the cloud exactly once with its value; every bad one is reported where the user looks (the
agent's `status --json`: dead letters with their reason, failing meters with theirs); no answer of
the API was a 500.

Bounded to about two minutes; SOAK_SECONDS=600 runs the fault phase longer, SOAK_SEED picks another
random run.
"""
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

import pytest
import yaml

from tests.edge.edge_support import FaultProxy
from tests.faulty_proxy import FaultyAwsProxy
from tools.ports import free_port
from tools.stack import PROJECT_DIR, port_in_use, wait_for

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "45"))
SEED = int(os.environ.get("SOAK_SEED", "2026"))
FAULT_RATE = 0.12
MAPS = [("Priority.ici", "I-45/MFX/636", "3", 1100), ("Eastron.SDM630", "SDM630", "3", None),
        ("CarloGavazzi.EM24", "EM24", "3", None)]
METERS_PER_BUS = 10
DEAD = {"LAN1-m6", "LAN3-m2"}          # configured, nothing answers: reported as failing meters
BACKLOG = 120                          # readings per healthy meter taken during an earlier outage
STEP = 300


def _iso(epoch):
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _aws_env(endpoint, state_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "PYTHONUNBUFFERED": "1",
                "MPLCONFIGDIR": os.path.join(state_dir, "matplotlib")})
    return env


@contextlib.contextmanager
def _pointed_at(endpoint, state_dir):
    """This process's AWS clients at an endpoint (the moto server itself, past the proxy) for a while."""
    from chalicelib.platform import aws
    from tools import provision

    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(_aws_env(endpoint, state_dir))
        aws.reset_clients()
        os.environ.update(provision.local_stage_environment())
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        aws.reset_clients()


class Site:
    """The processes of the soak and what it needs to check them."""

    def __init__(self, state_dir):
        self.dir = str(state_dir)
        self.processes = {}
        os.makedirs(os.path.join(self.dir, "logs"), exist_ok=True)

    def spawn(self, name, argv, env):
        log = open(os.path.join(self.dir, "logs", f"{name}.log"), "ab")
        self.processes[name] = subprocess.Popen(argv, cwd=PROJECT_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        return self.processes[name]

    def log(self, name):
        with open(os.path.join(self.dir, "logs", f"{name}.log"), errors="replace") as handle:
            return handle.read()

    def stop(self, name, sig=signal.SIGTERM):
        process = self.processes.get(name)
        if process and process.poll() is None:
            os.killpg(process.pid, sig)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)

    def stop_all(self):
        for name in reversed(list(self.processes)):
            self.stop(name)


def _write_config(path, api_url, buffer, ports):
    meters = []
    for bus, (_port, (mapname, mtype, phases, start)) in enumerate(zip(ports, MAPS), start=1):
        for unit in range(1, METERS_PER_BUS + 1):
            meter = {"MeterId": f"LAN{bus}-m{unit}", "ModbusId": unit, "Port": f"LAN{bus}", "NoPhases": phases,
                     "MeterType": mtype, "ModbusMap": mapname, "SaveEvery": 1}
            if start is not None:
                meter["startAddress"] = start
            meters.append(meter)
    config = {"cloud": {"url": api_url, "batch_size": 250, "backoff_initial": 0.2, "backoff_max": 3, "timeout": 20},
              "buffer": buffer,
              "buses": {f"LAN{i}": {"type": "tcp", "host": "127.0.0.1", "port": port, "timeout": 1}
                        for i, port in enumerate(ports, start=1)},
              "meters": meters}
    with open(path, "w") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)
    return [m["MeterId"] for m in meters]


def _seed_backlog(buffer, healthy, now, registers):
    """Readings taken during an earlier outage (just below each meter's live register, with plausible
    steps: the agent's plausibility check compares the next live reading with them), and bad ones."""
    from edge_agent.outbox import Outbox, Reading, Take

    outbox = Outbox(buffer)
    start = (int(now) - 2 * 86400) // STEP * STEP
    takes = [Take(name, "", Reading(name, _iso(start + STEP * k),
                                    round(registers[name] - 1.0 - (BACKLOG - k) * 0.05, 3)))
             for name in sorted(healthy) for k in range(BACKLOG)]
    bad = [  # what the cloud must refuse, each with its code: a meter taken out of the config, a clock ahead
        Reading("retired-meter", _iso(start), 5.0), Reading("retired-meter", _iso(start + STEP), 5.5),
        Reading(sorted(healthy)[0], _iso(int(now) + 86400 // STEP * STEP), 99.0),
    ]
    takes += [Take(r.meter, "", r) for r in bad]
    assert set(outbox.record_poll(takes)) == {"stored"}
    outbox.close()
    return {(r.meter, r.ts): ("unknown_meter" if r.meter == "retired-meter" else "future") for r in bad}


@pytest.mark.skipif(sys.platform != "linux", reason="process groups and SIGKILL")
def test_soak_every_healthy_reading_arrives_exactly_once_through_aws_faults_and_kills(tmp_path):
    rng = random.Random(SEED)
    site = Site(tmp_path)
    moto_port, api_port, *bus_ports = [free_port() for _ in range(5)]
    moto_url, api_url = f"http://127.0.0.1:{moto_port}", f"http://127.0.0.1:{api_port}"
    buffer = os.path.join(site.dir, "agent", "outbox.sqlite")
    os.makedirs(os.path.dirname(buffer))
    config_path = os.path.join(site.dir, "agent.yaml")
    proxy = simulator = lossy = None
    try:
        # The embedded AWS, the project and its key (set up straight against moto), then the faulty proxy.
        site.spawn("aws", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
                   _aws_env(moto_url, site.dir))
        wait_for(lambda: port_in_use(moto_port), "the moto server")
        with _pointed_at(moto_url, site.dir):
            from chalicelib.identity import accounts
            from tools import provision

            provision.provision_local()
            project = accounts.create_project("soak", "UTC")
            _view, key = accounts.create_user(project["project_id"], "soak", "soak-password-2026", "s@example.com")
        proxy = FaultyAwsProxy(moto_url, rate=0.0, seed=SEED)
        site.spawn("api", [sys.executable, "-m", "tools.local_api", "--host", "127.0.0.1", "--port", str(api_port)],
                   _aws_env(proxy.url, site.dir))
        wait_for(lambda: port_in_use(api_port), "the API")

        # Between agent and API: a share of the answers lost after the API stored the batch, or the
        # connection dropped before it got there.
        lossy = FaultProxy(api_url)
        lossy_rng = random.Random(SEED + 1)
        lossy.policy = lambda method, path: (None if lossy_rng.random() > 0.08  # type: ignore[assignment]
                                             else lossy_rng.choice(["drop_after", "drop_before"]))
        names = _write_config(config_path, lossy.url, buffer, bus_ports)
        healthy = healthy_names = [n for n in names if n not in DEAD]
        from edge_agent.config import load_config
        from edge_agent.simulator import SiteSimulator

        simulator = SiteSimulator(load_config(config_path), silent=DEAD).start()
        registers = {name: simulator.meters[name].energy_kwh for name in healthy}
        bad = _seed_backlog(buffer, healthy, time.time(), registers)
        agent_env = {**_aws_env(proxy.url, site.dir), "INTELLIMETER_API_KEY": key}
        agent = [sys.executable, "-m", "edge_agent", "run", "-c", config_path]

        # The fault phase: AWS failing at random with outages, the agent killed at random.
        proxy.rate = FAULT_RATE
        kills = outages = 0
        bus_down = BusOutage(simulator, "LAN2", config_path, agent_env)
        site.spawn("agent", agent, agent_env)
        deadline = time.monotonic() + SOAK_SECONDS
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(2, 9))
            if _near_a_boundary(time.time()):   # let it take the minute's readings (a kill at any other time)
                time.sleep(8)
            if rng.random() < 0.4:     # longer than botocore's retries last: the API answers 503
                proxy.outage(rng.uniform(3, 8))
                outages += 1
            site.stop("agent", signal.SIGKILL)
            kills += 1
            time.sleep(rng.uniform(0, 1.5))
            site.spawn("agent", agent, agent_env)
        bus_down.join()
        # The cloud heals; the agent delivers what is left, then stops.
        proxy.rate = 0.0
        share = proxy.failed_share
        aws_calls, aws_faults = proxy.calls, dict(proxy.faults)
        lossy.policy = lambda method, path: None
        lossy_counts = dict(lossy.counts)
        for _attempt in range(3):   # a reading taken after the outbox emptied: start it again to send that
            wait_for(lambda: _emptied(_status(config_path, agent_env)), "the agent's outbox to empty",
                     timeout=150, interval=2)
            site.stop("agent")
            status = _status(config_path, agent_env)
            if _emptied(status):
                break
            site.spawn("agent", agent, agent_env)

        from edge_agent.outbox import Outbox

        outbox = Outbox(buffer)
        taken = {(m, ts): value for m, ts, value, _s in outbox.all_readings() if (m, ts) not in bad}
        outbox.close()
        with _pointed_at(moto_url, site.dir):
            stored, slots_doubled = _cloud_readings(project["project_id"], names)
        api_log = site.log("api")
    finally:
        site.stop_all()
        if simulator:
            simulator.stop()
        if proxy:
            proxy.close()
        if lossy:
            lossy.close()

    delivered_once = sum(1 for k, v in taken.items() if stored.get(k) == v)
    lost = sorted(k for k, v in taken.items() if k not in stored)
    wrong = sorted(k for k, v in taken.items() if k in stored and stored[k] != v)  # in the cloud, another value
    doubled = sorted(k for k in stored if k not in taken) + slots_doubled
    dead = {(d["MeterId"], d["TimeStamping"]): d["reason"] for d in status["dead_letter_list"]}
    failing = {f["MeterId"]: f["last_error"] for f in status["failing_meters"]}
    statuses = [json.loads(line).get("status") for line in api_log.splitlines() if line.startswith('{"route"')]
    live = sum(1 for (_m, ts) in taken if ts > _iso(time.time() - SOAK_SECONDS - 600))
    print(f"\nsoak (seed {SEED}, {SOAK_SECONDS:.0f} s of faults, {len(names)} meters of which {len(DEAD)} dead, "
          f"{kills} agent SIGKILLs, {outages} AWS outages):\n"
          f"  readings taken      {len(taken) + len(bad)} ({len(taken)} by healthy meters, {live} of them live)\n"
          f"  delivered once      {delivered_once}\n"
          f"  held                {status['held_readings']} unstamped at the end ({status['held_dropped']} dropped "
          f"unstamped: taken between boundaries while the time was unconfirmed), {status['suspect_readings']} "
          f"suspect\n"
          f"  reported bad        {len(dead)} dead letters, {len(failing)} failing meters at the end, "
          f"{len(bus_down.failing_during)} while bus LAN2 was down\n"
          f"  lost                {len(lost)}\n"
          f"  wrong               {len(wrong)}\n"
          f"  doubled             {len(doubled)}\n"
          f"  AWS calls failed    {share:.1%} of {aws_calls} ({aws_faults})\n"
          f"  agent <-> API       {lossy_counts}\n"
          f"  API answers         {len(statuses)}: {statuses.count(503)} x 503, {statuses.count(500)} x 500")
    assert lost == [] and wrong == [] and doubled == []
    assert delivered_once == len(taken) and live > 0
    assert statuses.count(500) == 0, [line for line in api_log.splitlines() if "500" in line][:5]
    assert set(dead) == set(bad), "dead letters are exactly the bad readings: no good one dead-lettered"
    for key_, code in bad.items():
        reason = dead[key_].lower()
        assert code in reason or code.replace("_", " ") in reason, (key_, reason)
    assert set(failing) >= DEAD and all(failing[name] for name in DEAD)
    down = {n for n in healthy_names if n.startswith("LAN2-")}
    assert set(bus_down.failing_during) >= down, "a bus that went down is shown in status meanwhile"
    assert share > 0.05 and statuses.count(503) > 0      # the faults did reach the API


def _emptied(status):
    """Nothing left to send: no pending reading, none held unstamped (an agent just restarted holds the
    readings it takes until the cloud's first answer confirms its clock)."""
    return status["pending"] == 0 and status.get("held_readings", 0) == 0


def _near_a_boundary(now):
    """True from 10 s before a minute boundary (SaveEvery 1, the agent must be up) to 8 s after it."""
    into = now % 60
    return into > 50 or into < 8


class BusOutage(threading.Thread):
    """One bus's meters stop answering until the agent's status has shown each of them failing (at most
    2.5 minutes), then come back; what the status said meanwhile is kept."""

    def __init__(self, simulator, bus, config_path, env):
        super().__init__(daemon=True)
        self.simulator, self.bus, self.config_path, self.env = simulator, bus, config_path, env
        self.expected = {m.MeterId for m in simulator.cfg.meters if m.Port == bus}
        self.failing_during = {}
        self.start()

    def run(self):
        from edge_agent.simulator import SimServer

        server = self.simulator.servers[self.bus]
        meters = list(server.meters.values())
        address = (self.simulator.cfg.buses[self.bus].host, self.simulator.cfg.buses[self.bus].port)
        server.stop()
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and not set(self.failing_during) >= self.expected:
            time.sleep(2)
            try:
                failing = _status(self.config_path, self.env)["failing_meters"]
            except (ValueError, subprocess.SubprocessError):
                continue
            self.failing_during.update({f["MeterId"]: f["last_error"] for f in failing})
        self.simulator.servers[self.bus] = SimServer(meters, tcp=address)


def _status(config_path, env):
    answer = subprocess.run([sys.executable, "-m", "edge_agent", "status", "-c", config_path, "--json"],
                            cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=60)
    return json.loads(answer.stdout)


def _cloud_readings(project_id, names):
    """{(site name, UTC ISO time): value} of everything stored, read straight from DynamoDB; and any
    (meter, slot) a day item holds twice."""
    from chalicelib.metering import meters, readings

    stored, doubled = {}, []
    for name in names:
        meter = meters.find_by_site_name(project_id, name)
        if not meter:
            continue
        seen = set()
        for epoch, value in readings.series(project_id, meter["meter_id"], 0, 2 ** 33):
            if epoch in seen:
                doubled.append((name, _iso(epoch)))
            seen.add(epoch)
            stored[(name, _iso(epoch))] = value
    return stored, doubled

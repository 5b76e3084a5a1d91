"""The whole system on one machine: embedded AWS (moto server), the API, simulated meters and the edge agent.

`python -m tools.stack run` (what `make run` does) starts everything, loads the demo project and
30 days of history, prints how to use it, and stops everything on Ctrl-C, SIGTERM or SIGHUP (a
closed terminal), saying how long the stop took. The state (the embedded AWS's tables, keys and
files, the agent's outbox) is kept in .local/stack-PORT/ across runs: a restart keeps the demo's
key, the projects made with `make admin`, the readings and the files, and fills the history up to
now; `FRESH=1` starts over. The children end with the stack however it ends (tools/child.py,
tools/processes.py); `python -m tools.stack stop` (`make stop`) ends a stack of this checkout's
that lost its terminal, or its orphaned children. `python -m tools.stack key` prints the demo's
key. The end-to-end test starts the same Stack on ports of its own (port 0: the servers choose).
"""
import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import requests

from tools import processes
from tools.ports import bindable
from tools.local_worker import WORKERS

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_AGENT_LABEL = "demo site agent"
DEMO = {"project": "demo", "timezone": "America/Toronto", "username": "demo",
        "password": "demo-password-2026", "email": "demo@example.com"}
# The demo site: three meters of different shipped map types, each on its own simulated TCP bus.
DEMO_METERS: list[dict] = [
    {"MeterId": "main-incomer", "ModbusId": 1, "NoPhases": "3", "MeterType": "I-45/MFX/636",
     "ModbusMap": "Priority.ici", "startAddress": 1100},
    {"MeterId": "hvac", "ModbusId": 1, "NoPhases": "3", "MeterType": "SDM630", "ModbusMap": "Eastron.SDM630",
     "startAddress": 0},
    {"MeterId": "lighting", "ModbusId": 1, "NoPhases": "1", "MeterType": "EM24", "ModbusMap": "CarloGavazzi.EM24",
     "startAddress": 0},
]
# The main incomer feeds the other two meters (Parent on /point): charts show its share as theirs + unmetered.
DEMO_PARENTS = {"hvac": "main-incomer", "lighting": "main-incomer"}
# Each meter's load (kW): the simulated meters draw it live (simulate --load) and the history loaded
# before them is made of it, so the charts run on across "now" (the main incomer above its sub-meters).
DEMO_LOADS = {"main-incomer": (40, 120), "hvac": (10, 60), "lighting": (2, 15)}
HISTORY_DAYS = 30
SAVE_EVERY = 1          # minutes: the demo meters' SaveEvery, and the history's step (GET /interval needs
HISTORY_STEP = 60 * SAVE_EVERY  # two readings one SaveEvery apart)


def port_in_use(port, host="127.0.0.1"):
    """True when something accepts connections on the port."""
    with socket.socket() as probe:
        probe.settimeout(0.3)
        return probe.connect_ex((host, port)) == 0


def wait_for(check, what, timeout=60.0, interval=0.2):
    """Poll check() until it returns truthy; RuntimeError naming what never came."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


class Stack:
    """The processes of the local system, started and stopped together."""

    def __init__(self, api_port=8000, aws_port=5000, modbus_ports=(5020, 5021, 5022), state_dir=None,
                 history_days=HISTORY_DAYS, quiet=False):
        """Ports 0 (API, embedded AWS): the servers bind ports the kernel chooses and report them (state_dir
        must then be given); the meters' ports are written in the agent's configuration first, so they are fixed."""
        if state_dir is None and not api_port:
            raise ValueError("a Stack on API port 0 needs a state_dir")
        self.api_port, self.aws_port, self.modbus_ports = api_port, aws_port, list(modbus_ports)
        self.state_dir = os.path.abspath(state_dir or os.path.join(PROJECT_DIR, ".local", f"stack-{api_port}"))
        self.history_days = history_days
        self.quiet = quiet
        self.children = processes.Children(self.state_dir)
        self.processes = self.children.processes
        self.key = None            # the demo account's key: everything the account can do
        self.ingest_key = None     # the demo site agent's scoped key: PUT /point, POST /data, PUT /status only
        self.agent_config = os.path.join(self.state_dir, "agent.yaml")
        self.aws_state = os.path.join(self.state_dir, "aws-state")
        self.resumed = False
        self.last_readings = {}
        self.read_at = time.time()   # when the live registers were read (_read_meters)
        self.stop_seconds = None

    @property
    def api_url(self):
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def aws_url(self):
        return f"http://127.0.0.1:{self.aws_port}"

    # ---- environment ---------------------------------------------------------------------------

    def aws_env(self):
        """The standard AWS environment pointing every client at the embedded AWS."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update({"AWS_ENDPOINT_URL": self.aws_url, "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
                    "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "PYTHONUNBUFFERED": "1",
                    "MPLCONFIGDIR": os.path.join(self.state_dir, "matplotlib")})
        return env

    def busy_ports(self):
        """The ports this stack needs that something else already holds."""
        return [p for p in [self.api_port, self.aws_port, *self.modbus_ports] if p and port_in_use(p)]

    def _say(self, text):
        if not self.quiet:
            say(text)

    def _spawn(self, name, module, args, env, ports=(), grace=10.0):
        return self.children.spawn(name, module, args, env, PROJECT_DIR, ports=ports, grace=grace)

    def _check_alive(self):
        self.children.check_alive()

    def _serve(self, name, module, args, env, port, what, grace=10.0):
        """Start a server child on a port (0: its choice) and wait until it says it serves; the port it has."""
        ready = os.path.join(self.state_dir, "run", f"{name}.ready")
        os.makedirs(os.path.dirname(ready), exist_ok=True)
        if os.path.exists(ready):
            os.remove(ready)
        self._spawn(name, module, [*args, "--port", str(port), "--ready-file", ready], env, ports=[port] if port else [],
                    grace=grace)
        port = wait_for(lambda: self._check_alive() or processes.read_ready(ready), what, timeout=300)
        self.children.set_ports(name, [port])
        return port

    # ---- start ---------------------------------------------------------------------------------

    def forget(self):
        """Delete the state of earlier runs (make run FRESH=1)."""
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def start(self):
        """Start every part, in order, and load the demo project; returns self."""
        os.makedirs(os.path.join(self.state_dir, "logs"), exist_ok=True)
        self.children.save_record()
        try:
            self._start_aws()
            self._start_alert_receiver()
            self._create_demo()
            self._start_api()
            self._start_workers()
            self._write_agent_config()
            self._start_meters()
            live_values = self._read_meters()
            self._start_agent()
            self._wait_registered()
            self._set_parents()
            self._load_history(live_values)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_aws(self):
        from tools.aws_state import Store

        self.resumed = Store(self.aws_state).exists()
        self._say("starting the embedded AWS (moto server) on "
                  + (self.aws_url if self.aws_port else "a port of its choosing")
                  + (f", with the state of the last run ({os.path.relpath(self.state_dir, PROJECT_DIR)}/)"
                     if self.resumed else ", new state"))
        # Its stop saves what changed since its last save (every few seconds): a long grace for a slow disk.
        self.aws_port = self._serve("aws", "tools.aws_server", ["-H", "127.0.0.1", "--state", self.aws_state],
                                    self.aws_env(), self.aws_port, "the moto server", grace=60.0)

    def _create_demo(self):
        """Resources from infra/resources.yaml, then the demo project and its user (in this process).

        The process environment points at the embedded AWS only while this runs, so a caller in the
        same process (the end-to-end tests) keeps its own AWS afterwards.
        """
        if PROJECT_DIR not in sys.path:
            sys.path.insert(0, PROJECT_DIR)
        from chalicelib.identity import accounts, scoped_keys
        from chalicelib.platform import aws, clock
        from tools import provision

        saved = dict(os.environ)
        try:
            os.environ.clear()
            os.environ.update(self.aws_env())
            aws.reset_clients()
            os.environ.update(provision.provision_local())      # idempotent: a kept state has them already
            project = accounts.find_project(DEMO["project"])
            login = accounts.find_login(DEMO["username"])
            if project and login and login[0] == project["project_id"]:
                self.key = accounts.current_key(*login)["key"]
            else:
                project = accounts.create_project(DEMO["project"], DEMO["timezone"])
                view, self.key = accounts.create_user(project["project_id"], DEMO["username"], DEMO["password"],
                                                      DEMO["email"])
            self.project_id = project["project_id"]
            from chalicelib.metering import meters

            self.last_readings = {}       # a kept state's last reading of each demo meter: history resumes there
            for meter in DEMO_METERS:
                item = meters.find_by_site_name(self.project_id, meter["MeterId"])
                if item:
                    item = meters.current(self.project_id, [item])[0]   # the meter item's latest is hourly
                if item and item.get("latest_time") is not None:
                    self.last_readings[meter["MeterId"]] = (int(item["latest_time"]), float(item["latest_value"]))
            # The agent's ingest key: shown once and stored as a digest, so each run replaces the last one.
            zone = clock.zone(DEMO["timezone"])
            for old in scoped_keys.listing(self.project_id, zone):
                if old["label"] == DEMO_AGENT_LABEL:
                    scoped_keys.delete(self.project_id, old["id"])
            self.ingest_key = scoped_keys.create(self.project_id, DEMO_AGENT_LABEL, "ingest", zone)["key"]
            # Its default tariff (GET /bill answers from the first minute): Ontario's RPP Time-of-Use prices.
            from tools import demo_tariff

            demo_tariff.ensure(self.project_id, clock.utcnow().astimezone(zone).date())
            # Its alert: a meter_silent rule POSTing to the receiver started before (a new rule each run).
            from tools import demo_alert

            demo_alert.ensure(self.project_id, f"http://127.0.0.1:{self.receiver_port}", self.receiver_secret)
        finally:
            os.environ.clear()
            os.environ.update(saved)
            aws.reset_clients()

    def _start_alert_receiver(self):
        """The webhook receiver of the demo's alert (tools/webhook_receiver.py): logs each alert it gets."""
        self._say("starting the demo's webhook receiver (alerts are logged in logs/webhook.log)")
        self.receiver_secret = os.path.join(self.state_dir, "run", "webhook-secret")
        os.makedirs(os.path.dirname(self.receiver_secret), exist_ok=True)
        self.receiver_port = self._serve("webhook", "tools.webhook_receiver", ["--secret-file", self.receiver_secret],
                                         self.aws_env(), 0, "the webhook receiver")

    def _start_api(self):
        self._say("starting the API (Chalice local server, stage local) on "
                  + (self.api_url if self.api_port else "a port of its choosing"))
        self.api_port = self._serve("api", "tools.local_api", ["--host", "127.0.0.1"], self.aws_env(),
                                    self.api_port, "the API")

    def _start_workers(self):
        """The app's workers (tools/local_worker.py WORKERS: the export queue's Lambda handler...), one process each."""
        self._say(f"starting the workers ({', '.join(WORKERS)}: the app's handlers outside the routes, locally)")
        for name in WORKERS:
            self._spawn(f"{name}-worker", "tools.local_worker", [name], self.aws_env())

    def _write_agent_config(self):
        import yaml

        config: dict = {
            "cloud": {"url": self.api_url},
            "buffer": os.path.join(self.state_dir, "agent", "outbox.sqlite"),
            "buses": {f"LAN{i + 1}": {"type": "tcp", "host": "127.0.0.1", "port": port, "timeout": 1}
                      for i, port in enumerate(self.modbus_ports)},
            "meters": [{**meter, "Port": f"LAN{i + 1}", "SaveEvery": SAVE_EVERY} for i, meter in enumerate(DEMO_METERS)],
        }
        os.makedirs(os.path.dirname(config["buffer"]), exist_ok=True)
        with open(self.agent_config, "w") as handle:
            yaml.safe_dump(config, handle, sort_keys=False)

    def _agent_env(self):
        """The agent holds the site's ingest key, never the account key (a stolen box can only push)."""
        return {**self.aws_env(), "INTELLIMETER_API_KEY": self.ingest_key}

    def _start_meters(self):
        """Each simulated meter its own process (its bus of the agent's configuration alone), so one can be
        stopped (kill -STOP) to watch the demo's alert fire, and resumed (kill -CONT) to watch it resolve."""
        import yaml

        self._say(f"starting {len(DEMO_METERS)} simulated Modbus TCP meters on ports "
                  + ", ".join(map(str, self.modbus_ports)))
        # Their ports are fixed in the agent's configuration: one held by another program would answer
        # the readiness probe below in their place.
        taken = [p for p in self.modbus_ports if not bindable(p)]
        if taken:
            raise RuntimeError(f"the meters' port(s) {', '.join(map(str, taken))} already in use")
        with open(self.agent_config) as handle:
            config = yaml.safe_load(handle)
        for meter, port in zip(config["meters"], self.modbus_ports):
            alone = {**config, "buses": {meter["Port"]: config["buses"][meter["Port"]]}, "meters": [meter]}
            path = os.path.join(self.state_dir, "run", f"meter-{meter['MeterId']}.yaml")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as handle:
                yaml.safe_dump(alone, handle, sort_keys=False)
            self._spawn(f"meter-{meter['MeterId']}", "edge_agent",
                        ["simulate", "-c", path, *demo_load_args([meter["MeterId"]])], self._agent_env(), ports=[port])
        wait_for(lambda: self._check_alive() or all(port_in_use(p) for p in self.modbus_ports),
                 "the simulated meters")

    def _read_meters(self):
        """Each simulated meter's register now (the history must end below it); read_at: the time
        just before it was read (the history's last reading is stamped no later)."""
        self.read_at = time.time()
        answer = subprocess.run([sys.executable, "-m", "edge_agent", "read", "-c", self.agent_config, "--json"],
                                cwd=PROJECT_DIR, env=self._agent_env(), capture_output=True, text=True, timeout=60)
        values = {}
        for line in answer.stdout.splitlines():
            if line.startswith("{"):
                item = json.loads(line)
                if "value" in item:
                    values[item["MeterId"]] = item["value"]
        missing = [m["MeterId"] for m in DEMO_METERS if m["MeterId"] not in values]
        if missing:
            raise RuntimeError(f"could not read simulated meters {missing}: {answer.stderr[-500:]}")
        return values

    def _start_agent(self):
        self._say(f"starting the edge agent (SaveEvery {SAVE_EVERY} minute)")
        self._spawn("agent", "edge_agent", ["run", "-c", self.agent_config], self._agent_env())

    def api(self, method, path, **kwargs):
        """A request to the API as the demo user (by key)."""
        headers = {"X-API-Key": self.key, **kwargs.pop("headers", {})}
        return requests.request(method, self.api_url + path, headers=headers, timeout=60, **kwargs)

    def _wait_registered(self):
        def registered():
            self._check_alive()
            answer = self.api("GET", "/point")
            return answer.status_code == 200 and len(answer.json()) >= len(DEMO_METERS)
        wait_for(registered, "the agent to register its meters with PUT /point", timeout=60, interval=0.5)

    def _set_parents(self):
        """The demo's hierarchy (POST /point with Parent): the main incomer feeds the sub-meters."""
        for name, parent in DEMO_PARENTS.items():
            answer = self.api("POST", "/point", json={"name": name, "Parent": parent})
            if answer.status_code != 200:
                raise RuntimeError(f"could not set {name}'s parent: {answer.status_code} {answer.text[:300]}")

    def _load_history(self, live_values):  # noqa: C901  # first run or resumed state, per meter (stack branch: split after it lands)
        """Readings one SaveEvery apart through POST /data, ending below each live register: history_days
        of them on a first run, or from a kept state's last reading to now (the time make run was off)."""
        from chalicelib.platform import clock

        if not self.history_days:
            return
        # The last boundary before the live registers were read: the agent (started after) reads the next.
        end = int(self.read_at) // HISTORY_STEP * HISTORY_STEP
        rng = random.Random(2026)
        plans = []
        for meter in DEMO_METERS:
            name = meter["MeterId"]
            last = self.last_readings.get(name)
            first = (last[0] // HISTORY_STEP * HISTORY_STEP) if last else end - self.history_days * 86400
            times = list(range(first + HISTORY_STEP, end + 1, HISTORY_STEP))
            ceiling = live_values[name] - 0.01
            room = ceiling - last[1] if last else live_values[name] * 0.9   # a register never goes below zero
            if not times or room <= 0:      # nothing missed, or the simulated register was reset: a reset it is
                continue
            load = demo_loads()[name]
            steps = [load.kw(t, rng) * HISTORY_STEP / 3600 for t in times]
            total = sum(steps)
            if total > room:                                    # a history longer than the register allows is scaled
                steps = [step * room / total for step in steps]
                total = sum(steps)
            plans.append((name, times, steps, last[1] if last else ceiling - total))
        if not plans:
            return
        count = sum(len(times) for _name, times, _steps, _value in plans)
        if any(name in self.last_readings for name, *_rest in plans):
            self._say(f"filling the {SAVE_EVERY}-minute history since the last run: {count} readings through POST /data")
        else:
            self._say(f"loading {self.history_days} days of {SAVE_EVERY}-minute history per meter "
                      f"({count} readings) through POST /data")
        done = 0
        for name, times, steps, value in plans:
            batch = []
            for moment, step in zip(times, steps):
                value += step
                batch.append({"MeterId": name, "TimeStamping": clock.iso_utc(moment), "value": round(value, 3)})
                if len(batch) == 1000 or moment == times[-1]:
                    self._push(batch)
                    done += len(batch)
                    batch = []
                    if done % 20000 < 1000 or done == count:
                        self._say(f"  {done}/{count} readings loaded")

    def _push(self, batch):
        answer = self.api("POST", "/data", json={"readings": batch})
        if answer.status_code != 200 or answer.json().get("rejected"):
            raise RuntimeError(f"history push failed: {answer.status_code} {answer.text[:300]}")

    # ---- stop ----------------------------------------------------------------------------------

    def stop(self):
        """Stop every process at once (SIGTERM; SIGKILL after its grace), leaving none behind; the seconds it took."""
        self.stop_seconds = self.children.stop()
        return self.stop_seconds

    # ---- what to tell the user -----------------------------------------------------------------

    def _port_args(self):
        return "" if self.api_port == 8000 else f" API_PORT={self.api_port}"

    def banner(self):
        """The URL, credentials, key and curl lines that work as printed."""
        # The last 7 days of the demo project's calendar: start and end are both included.
        today = datetime.now(ZoneInfo(DEMO["timezone"])).date()
        week = f"start={today - timedelta(days=6)}&end={today}"
        hvac = self.processes["meter-hvac"].pid if "meter-hvac" in self.processes else "<pid of meter-hvac>"
        auth = f'-H "Authorization: Bearer {self.key}"'
        return "\n".join([
            "",
            "Intellimeter is running locally.",
            f"  API            {self.api_url}   (reference: docs/openapi.yaml, also at {self.api_url}/openapi.yaml)",
            f"  embedded AWS   {self.aws_url}   (moto: DynamoDB, S3, KMS, SQS, SNS)",
            f"  demo project   {DEMO['project']} ({DEMO['timezone']})",
            f"  log in as      {DEMO['username']} / {DEMO['password']}",
            f"  API key        {self.key}   (the account's: everything the account can do; keep it off site)",
            f"  ingest key     {self.ingest_key}   (scoped, label {DEMO_AGENT_LABEL!r}: held by the edge agent, "
            f"can only push; a new one each run)",
            "",
            "Try:",
            f"  curl -s {auth} {self.api_url}/data",
            f"  curl -s {auth} {self.api_url}/interval",
            f"  curl -s {auth} '{self.api_url}/point?responseType=yaml'",
            f"  curl -sL {auth} '{self.api_url}/file?{week}&type=csv' -o week.csv",
            f"  curl -sL {auth} '{self.api_url}/graphics?type=line&{week}' -o chart.png",
            f"  curl -s {auth} '{self.api_url}/bill?start={today.replace(day=1)}&end={today}&meter=hvac'"
            "   # this month's bill so far (Ontario TOU)",
            f"  curl -s -c cookies.txt -X PUT {self.api_url}/session -d username={DEMO['username']} "
            f"-d password={DEMO['password']}   # log in with a session cookie",
            "",
            f"Interactive API documentation:  {self.api_url}/docs",
            f"The key in your shell:          export KEY=$(make -s key{self._port_args()})",
            f"Edge agent status:  .venv/bin/python -m edge_agent status -c {os.path.relpath(self.agent_config, PROJECT_DIR)}",
            f"Logs:               {os.path.relpath(os.path.join(self.state_dir, 'logs'), PROJECT_DIR)}/",
            f"State:              {os.path.relpath(self.state_dir, PROJECT_DIR)}/ is kept: a restart keeps this key, "
            f"the projects and the readings ({'resumed' if self.resumed else 'new'} this time); "
            f"make run FRESH=1 starts over.",
            f"New readings arrive every minute. Stop everything with Ctrl-C (or kill -TERM {os.getpid()}, or "
            f"make stop{self._port_args()} from another terminal).",
            "",
            "Alerts: the demo project's meter_silent rule POSTs to a webhook receiver that logs each alert in "
            f"{os.path.relpath(self.children.log_path('webhook'), PROJECT_DIR)}. Stop a simulated meter and it fires "
            "about 7 minutes later (2 x SaveEvery + 5), resume it and it resolves at the agent's next try of it:",
            f"  kill -STOP {hvac}   # hvac stops answering",
            f"  kill -CONT {hvac}   # hvac is back",
            f"  curl -s {auth} {self.api_url}/alerts   # the rule's state",
            f"  curl -s {auth} '{self.api_url}/alerts/events?{week}'   # its history",
        ])


def demo_load_args(meters=None):
    """The simulate command's arguments that give each demo meter (or those named) its load (DEMO_LOADS)."""
    args = ["--timezone", DEMO["timezone"]]
    for name, (base, peak) in DEMO_LOADS.items():
        if meters is None or name in meters:
            args += ["--load", f"{name}={base}:{peak}"]
    return args


def demo_loads():
    """{meter: edge_agent.simulator.LoadProfile} of the demo meters: what the history is made of."""
    from edge_agent.simulator import LoadProfile

    return {name: LoadProfile(base, peak, DEMO["timezone"]) for name, (base, peak) in DEMO_LOADS.items()}


def demo_key(api_url):
    """The demo account's API key, asked of a running stack (log in with the demo password, GET /key)."""
    session = requests.Session()
    login = session.put(api_url + "/session", json={"username": DEMO["username"], "password": DEMO["password"]},
                        timeout=30)
    if login.status_code != 200:
        raise RuntimeError(f"the demo account can't log in on {api_url}: {login.status_code} {login.text[:200]}")
    return session.get(api_url + "/key", timeout=30).json()["key"]


def say(text, file=None):
    """Print, ignoring a terminal that is gone (EIO after SIGHUP) or a reader that left (EPIPE)."""
    try:
        print(text, file=file or sys.stdout, flush=True)
    except OSError:
        pass


def earlier_run(stack):
    """What stands in the way of starting in this state directory (a message), or None.

    The record (tools/processes.py) names the stack that wrote it and its children: the stack still
    running is "already running"; children running without it are an orphaned stack, for `make stop`;
    neither is a record left by a run that ended without cleaning up, forgotten here.
    """
    record = processes.Record.read(stack.state_dir)
    if record is None:
        return None
    if record.stack_alive():
        return (f"Intellimeter is already running (pid {record.stack_pid}) on {stack.api_url}: use it, or stop it "
                f"with Ctrl-C in its terminal or `make stop{stack._port_args()}`.")
    live = record.live_children()
    if live:
        return (f"An earlier make run of this checkout (pid {record.stack_pid}) ended without stopping its "
                f"processes; still running: {', '.join(f'{name} (pid {pid})' for name, pid in live.items())}. "
                f"Stop them with `make stop{stack._port_args()}`, then make run again.")
    record.forget()
    return None


def stop_recorded(stack, grace=90.0):
    """`make stop`: end the recorded stack of this state directory (SIGTERM), or the children it left; 0."""
    record = processes.Record.read(stack.state_dir)
    where = os.path.relpath(stack.state_dir, PROJECT_DIR)
    if record is None:
        busy = stack.busy_ports()
        say(f"nothing to stop: no make run is recorded in {where}/"
            + (f" (port(s) {', '.join(map(str, busy))} are held by another program)" if busy else ""))
        return 0
    started = time.monotonic()
    outcome = {}
    if record.stack_alive():
        say(f"stopping the stack (pid {record.stack_pid}) and its processes…")
        processes.signal_group(record.stack_pid, signal.SIGCONT)
        os.kill(record.stack_pid, signal.SIGTERM)
        deadline = started + grace
        while time.monotonic() < deadline and (record.stack_alive() or record.live_children()):
            time.sleep(0.1)
        if record.stack_alive():
            os.kill(record.stack_pid, signal.SIGKILL)       # its children get SIGTERM from the kernel
            outcome["stack"] = "killed"
    live = record.live_children()
    if live:
        say(f"stopping what an earlier make run (pid {record.stack_pid}) left running: "
            + ", ".join(f"{name} (pid {pid})" for name, pid in live.items()))
        outcome.update(record.end_children())
    record.forget()
    killed = sorted(name for name, what in outcome.items() if what == "killed")
    say(f"stopped in {time.monotonic() - started:.1f} s: no process of it left"
        + (f" ({', '.join(killed)} ignored SIGTERM: killed)" if killed else "") + ".")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["run", "key", "stop"])
    args = parser.parse_args(argv)
    api_port = int(os.environ.get("API_PORT", 8000))
    aws_port = int(os.environ.get("AWS_PORT", 5000))
    modbus_base = int(os.environ.get("MODBUS_PORT", 5020))
    history_days = int(os.environ.get("DEMO_HISTORY_DAYS", HISTORY_DAYS))
    stack = Stack(api_port, aws_port, (modbus_base, modbus_base + 1, modbus_base + 2), history_days=history_days)
    if args.command == "key":
        return print_key(stack)
    if args.command == "stop":
        return stop_recorded(stack)
    return run(stack)


def print_key(stack):
    """make key: the demo account's key, from the running stack."""
    if not port_in_use(stack.api_port):
        print(f"nothing answers on {stack.api_url}: start it with `make run` (in another terminal) first",
              file=sys.stderr)
        return 1
    try:
        print(demo_key(stack.api_url))
    except (RuntimeError, requests.RequestException, ValueError, KeyError) as error:
        print(f"make key: {error}", file=sys.stderr)
        return 1
    return 0


def run(stack):
    """make run: start the stack, serve until a signal, stop it; the exit status."""
    problem = earlier_run(stack)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    busy = stack.busy_ports()
    if busy:
        print(f"port(s) {', '.join(map(str, busy))} already in use: another program (or another make run) holds "
              f"them. Choose others with API_PORT=… AWS_PORT=… MODBUS_PORT=… make run", file=sys.stderr)
        return 1
    if os.environ.get("FRESH", "") not in ("", "0"):
        print(f"FRESH: forgetting the state of earlier runs ({os.path.relpath(stack.state_dir, PROJECT_DIR)}/)")
        stack.forget()
    # Ctrl-C; SIGTERM from a script or a service manager (a script's background job ignores SIGINT); SIGHUP
    # from a closed terminal. The first one stops everything; more during the stop are ignored.
    received: list[str] = []

    def interrupt(signum, _frame):
        if not received:
            received.append(signal.Signals(signum).name)
            raise KeyboardInterrupt

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupt)
    status = 0
    try:
        stack.start()
        say(stack.banner())
        while True:
            time.sleep(1)
            stack._check_alive()
    except KeyboardInterrupt:
        say(f"\nstopping ({received[0] if received else 'SIGINT'})…")
    except RuntimeError as error:
        say(f"make run failed: {error}", file=sys.stderr)
        status = 1
    received.append("stopping")
    seconds = stack.stop()
    say(f"stopped in {seconds:.1f} s: no process left behind.")
    return status


if __name__ == "__main__":
    sys.exit(main())

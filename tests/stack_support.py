"""`make run` as a user runs it, for the tests: in its own session, on ports outside the ephemeral range.

A Site is one make run's ports and its state directory (.local/stack-API_PORT/); start() runs make
run until its banner. The ports are picked by tools.ports.free_port (outside ip_local_port_range:
no outgoing connection takes them between the pick and the servers' bind); if another session's
server still took one first (EADDRINUSE), the site moves to new ports, its state directory with it,
and starts again.
"""
import json
import os
import shutil
import signal
import subprocess
import time

from tools.ports import free_port
from tools.processes import Record, alive
from tools.stack import PROJECT_DIR, port_in_use

BANNER_END = "Stop everything with Ctrl-C"


def read_banner(process, timeout=300):
    """What `make run` prints up to its banner's last line (or its end, or the timeout)."""
    lines = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if BANNER_END in line:
            break
    return "".join(lines)


class Site:
    """The ports and state directory of one make run, started and restarted as a user would."""

    def __init__(self, **env):
        self.extra = {k: str(v) for k, v in env.items()}
        self.base = free_port(5)
        self.building_key: str | None = None      # the account key of a building's state, when a test made one

    @property
    def ports(self):
        return [self.base + i for i in range(5)]      # API, AWS, then the three meters

    @property
    def state_dir(self):
        return os.path.join(PROJECT_DIR, ".local", f"stack-{self.base}")

    @property
    def env(self):
        env = {k: v for k, v in os.environ.items() if k != "FRESH"}
        env.update({"API_PORT": str(self.base), "AWS_PORT": str(self.base + 1), "MODBUS_PORT": str(self.base + 2),
                    "DEMO_HISTORY_DAYS": "1", **self.extra})
        return env

    @property
    def api_url(self):
        return f"http://127.0.0.1:{self.base}"

    def make(self, *args, **kwargs):
        """`make ARGS` for this site, run to its end."""
        return subprocess.run(["make", "--no-print-directory", *args], cwd=PROJECT_DIR, env=self.env,
                              capture_output=True, text=True, timeout=kwargs.pop("timeout", 300), **kwargs)

    def start(self, attempts=3, **popen):
        """make run in a session of its own, up to its banner: (process, banner). Moves on EADDRINUSE."""
        for _attempt in range(attempts):
            process = subprocess.Popen(["make", "--no-print-directory", "run"], cwd=PROJECT_DIR, env=self.env,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                       start_new_session=True, **popen)
            banner = read_banner(process)
            if BANNER_END in banner:
                return process, banner
            rest = process.communicate(timeout=120)[0] if process.poll() is None else process.stdout.read()
            if "in use" not in banner + rest:        # "port(s) … already in use", "Address already in use"
                raise AssertionError(f"make run did not start:\n{banner}{rest}")
            self._move()
        raise AssertionError("make run found its ports taken at every attempt")

    def _move(self):
        old = self.state_dir
        self.base = free_port(5)
        if os.path.exists(old):
            os.rename(old, self.state_dir)

    def record(self):
        return Record.read(self.state_dir)

    def close(self):
        shutil.rmtree(self.state_dir, ignore_errors=True)


def recorded(record):
    """[(pid, kernel start time)] of a recorded stack and its children."""
    return [(record.data["pid"], record.data.get("started"))] + [
        (child["pid"], child.get("started")) for child in record.data["children"].values()]


def wait_gone(record, ports, timeout=120):
    """Until no recorded process runs and no port answers (a stop ends within its graces); what is left."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [pid for pid, started in recorded(record) if alive(pid, started)]
        held = [p for p in ports if port_in_use(p)]
        if not left and not held:
            return [], []
        time.sleep(0.2)
    return left, held


def end(process):
    """Stop a make run a test left running (SIGTERM to its group, then SIGKILL)."""
    if process is not None and process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate(timeout=30)


def stop_time(output):
    """The seconds make run reported for its stop ("stopped in X s"), or None."""
    import re

    found = re.search(r"stopped in ([0-9.]+) s: no process left behind\.", output)
    return float(found.group(1)) if found else None


def load_json_line(text):
    return json.loads(text.strip().splitlines()[-1])

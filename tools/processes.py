"""The stack's processes: started bound to it, recorded in its state directory, stopped together.

Each child runs through tools/child.py (the kernel sends it SIGTERM when the stack dies, even by
SIGKILL) in a session of its own (a terminal's signals reach the stack alone, which stops them all
at once). Their pids, with the kernel's start time of each (a pid reused by another program is not
ours), and their ports are recorded in STATE_DIR/stack.json while they run, so that a later
`make run` can tell an orphaned stack of its own from another program, and `make stop` can end it.
"""
import json
import os
import signal
import subprocess
import sys
import time

RECORD = "stack.json"


def started_at(pid):
    """The kernel's start time of a process (clock ticks since boot; Linux), None elsewhere or when gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rpartition(")")[2].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else int(fields[19])   # a zombie has ended


def alive(pid, started=None):
    """True while the process runs and is the one recorded (same start time, where the system tells it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass                                    # someone else's process: its start time tells
    if os.path.exists("/proc/self/stat"):
        now = started_at(pid)
        return now is not None and (started is None or now == started)
    return True


def signal_group(pid, signum):
    """A signal to a child's process group (the child leads its own session), or to it alone."""
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        return
    except PermissionError:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def write_ready(path, port):
    """{"pid", "port"} in path, atomically: a child saying it serves (and on which port, when given 0)."""
    temporary = f"{path}.tmp"
    with open(temporary, "w") as handle:
        json.dump({"pid": os.getpid(), "port": port}, handle)
    os.replace(temporary, path)


def serve(server, ready_file, port):
    """Say the server is ready (ready_file, when given) and serve until interrupted; the exit status 0."""
    if ready_file:
        write_ready(ready_file, port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def read_ready(path):
    """The port a child wrote in its ready file, None before it did."""
    try:
        with open(path) as handle:
            return json.load(handle)["port"]
    except (OSError, ValueError, KeyError):
        return None


class Record:
    """STATE_DIR/stack.json: the stack's pid, its children's and their ports, while it runs."""

    def __init__(self, path, data):
        self.path, self.data = path, data

    @classmethod
    def read(cls, state_dir):
        path = os.path.join(state_dir, RECORD)
        try:
            with open(path) as handle:
                return cls(path, json.load(handle))
        except (OSError, ValueError):
            return None

    @property
    def stack_pid(self):
        return self.data["pid"]

    def stack_alive(self):
        return alive(self.data["pid"], self.data.get("started"))

    def live_children(self):
        """{name: pid} of the recorded children still running."""
        return {name: child["pid"] for name, child in self.data.get("children", {}).items()
                if alive(child["pid"], child.get("started"))}

    def ports(self):
        return [port for child in self.data.get("children", {}).values() for port in child.get("ports", [])]

    def forget(self):
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass

    def end_children(self, grace=30.0):
        """SIGTERM (and SIGCONT, for a stopped one) to every live recorded child at once, SIGKILL to those
        still there after `grace` seconds; then the record goes. Returns {name: "ended" | "killed"}."""
        children = self.data.get("children", {})
        live = {name: children[name] for name in self.live_children()}
        for child in live.values():
            signal_group(child["pid"], signal.SIGTERM)
            signal_group(child["pid"], signal.SIGCONT)
        outcome = {name: "ended" for name in live}
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(alive(c["pid"], c.get("started")) for c in live.values()):
            time.sleep(0.1)
        for name, child in live.items():
            if alive(child["pid"], child.get("started")):
                signal_group(child["pid"], signal.SIGKILL)
                outcome[name] = "killed"
        while any(alive(c["pid"], c.get("started")) for c in live.values()) and time.monotonic() < deadline + 10:
            time.sleep(0.1)
        self.forget()
        return outcome


class Children:
    """The processes of one stack: spawned bound to this process, recorded, stopped in parallel."""

    def __init__(self, state_dir, extra=None):
        self.state_dir = state_dir
        self.processes = {}                      # name → Popen
        self.graces = {}                         # name → seconds it may take to stop
        self.stopped_in = None
        self.record = Record(os.path.join(state_dir, RECORD),
                             {"pid": os.getpid(), "started": started_at(os.getpid()), **(extra or {}),
                              "children": {}})

    def log_path(self, name):
        return os.path.join(self.state_dir, "logs", f"{name}.log")

    def spawn(self, name, module, args, env, cwd, ports=(), grace=10.0):
        """`python -m module args` as a child bound to this process, its output in logs/NAME.log."""
        os.makedirs(os.path.dirname(self.log_path(name)), exist_ok=True)
        with open(self.log_path(name), "ab") as log:
            process = subprocess.Popen([sys.executable, "-m", "tools.child", str(os.getpid()), module, *args],
                                       cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        self.processes[name], self.graces[name] = process, grace
        self.record.data["children"][name] = {"pid": process.pid, "started": started_at(process.pid),
                                              "ports": list(ports)}
        self.save_record()
        return process

    def set_ports(self, name, ports):
        self.record.data["children"][name]["ports"] = list(ports)
        self.save_record()

    def save_record(self):
        os.makedirs(self.state_dir, exist_ok=True)
        temporary = self.record.path + ".tmp"
        with open(temporary, "w") as handle:
            json.dump(self.record.data, handle, indent=1)
        os.replace(temporary, self.record.path)

    def check_alive(self):
        """RuntimeError naming the first child that ended, with the last line of its log."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with status {process.returncode}{self.last_words(name)}: "
                                   f"see {self.log_path(name)}")

    def last_words(self, name):
        try:
            with open(self.log_path(name), "rb") as handle:
                handle.seek(max(0, os.path.getsize(self.log_path(name)) - 2000))
                lines = [line for line in handle.read().decode(errors="replace").splitlines() if line.strip()]
        except OSError:
            return ""
        return f" ({lines[-1].strip()[:300]})" if lines else ""

    def stop(self):
        """SIGTERM to every child at once; each gets its grace, then SIGKILL. Returns the seconds it took."""
        started = time.monotonic()
        live = {name: p for name, p in self.processes.items() if p.poll() is None}
        if not live and self.stopped_in is not None:
            return self.stopped_in                  # stopped already (a failed start stops, then its caller)
        for process in live.values():
            signal_group(process.pid, signal.SIGTERM)
            signal_group(process.pid, signal.SIGCONT)       # one stopped with kill -STOP (the alerts demo) too
        for name, process in live.items():
            try:
                process.wait(timeout=max(0.0, started + self.graces[name] - time.monotonic()))
            except subprocess.TimeoutExpired:
                signal_group(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        self.record.forget()
        self.stopped_in = time.monotonic() - started
        return self.stopped_in

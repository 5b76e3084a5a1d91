"""The README's front door, run as printed: `make run`, its curl lines, `make admin`, a second `make run`, Ctrl-C."""
import os
import re
import shlex
import signal
import subprocess
import time

import pytest

from tools.stack import PROJECT_DIR, free_port, port_in_use


@pytest.fixture(scope="module")
def make_run():
    ports = {"API_PORT": free_port(), "AWS_PORT": free_port()}
    modbus = free_port()
    while any(port_in_use(p) for p in (modbus + 1, modbus + 2)):
        modbus = free_port()
    env = {**os.environ, **{k: str(v) for k, v in ports.items()}, "MODBUS_PORT": str(modbus), "DEMO_HISTORY_DAYS": "2"}
    process = subprocess.Popen(["make", "--no-print-directory", "run"], cwd=PROJECT_DIR, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Stop everything with Ctrl-C" in line:
            break
    banner = "".join(lines)
    yield process, banner, env, [ports["API_PORT"], ports["AWS_PORT"], modbus, modbus + 1, modbus + 2]
    if process.poll() is None:  # a test failed before Ctrl-C: stop it the same way
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def test_banner_names_everything(make_run):
    _process, banner, env, _ports = make_run
    assert "Intellimeter is running locally." in banner, banner
    assert f"http://127.0.0.1:{env['API_PORT']}" in banner
    assert "demo / demo-password-2026" in banner
    assert re.search(r"API key\s+[0-9a-f]{10}(-[0-9a-f]{10}){3}", banner)
    assert "edge_agent status" in banner


def test_printed_curl_lines_work(make_run, tmp_path):
    _process, banner, _env, _ports = make_run
    curls = [line.strip() for line in banner.splitlines() if line.strip().startswith("curl ")]
    assert len(curls) >= 5
    for command in curls:
        command = command.split("   #")[0]
        answer = subprocess.run(["bash", "-c", command + " -w '%{http_code}'"], cwd=tmp_path, capture_output=True,
                                text=True, timeout=60)
        assert answer.returncode == 0, (command, answer.stderr)
        assert answer.stdout.endswith("200"), (command, answer.stdout[-300:])
    assert (tmp_path / "week.csv").read_text().startswith("MeterParam,TimeStamping,value")
    assert (tmp_path / "chart.png").read_bytes()[:4] == b"\x89PNG"


def test_make_admin_creates_a_project(make_run):
    _process, _banner, env, _ports = make_run
    args = "create-project acme --timezone Europe/Paris --username acme-admin --email admin@acme.example"
    answer = subprocess.run(["make", "--no-print-directory", "-s", "admin", f"ARGS={args}"], cwd=PROJECT_DIR,
                            env=env, input="a-long-enough-password\n", capture_output=True, text=True, timeout=120)
    assert answer.returncode == 0, answer.stderr
    assert '"key"' in answer.stdout and '"username": "acme-admin"' in answer.stdout


def test_second_make_run_says_so(make_run):
    _process, _banner, env, _ports = make_run
    answer = subprocess.run(["make", "--no-print-directory", "run"], cwd=PROJECT_DIR, env=env, capture_output=True,
                            text=True, timeout=120)
    assert answer.returncode != 0
    assert "already running" in answer.stderr


def test_ctrl_c_stops_everything(make_run):
    process, _banner, _env, ports = make_run
    os.killpg(process.pid, signal.SIGINT)
    output = process.communicate(timeout=60)[0]
    assert "stopped: no process left behind." in output
    assert not any(port_in_use(p) for p in ports)
    leftovers = subprocess.run(["pgrep", "-f", f"--port {ports[0]}"], capture_output=True, text=True).stdout
    assert leftovers.strip() == ""

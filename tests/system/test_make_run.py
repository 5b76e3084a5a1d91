"""The README's front door, run as printed: `make run`, its curl lines, `make admin`, a second `make run`, Ctrl-C."""
import os
import re
import signal
import subprocess

import pytest
import requests

from tests.stack_support import Site, end, stop_time, wait_gone
from tools.stack import PROJECT_DIR, port_in_use


@pytest.fixture(scope="module")
def site():
    made = Site(DEMO_HISTORY_DAYS=2)
    yield made
    made.make("stop")
    made.close()


@pytest.fixture(scope="module")
def make_run(site):
    process, banner = site.start()
    yield process, banner, site.env, site.ports
    end(process)                    # a test failed before Ctrl-C


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


def _readme_commands(prefix):
    """The README's shell lines (in ```sh blocks) that start with prefix, comments removed."""
    with open(os.path.join(PROJECT_DIR, "README.md")) as handle:
        blocks = re.findall(r"```sh\n(.*?)```", handle.read(), flags=re.S)
    lines = [line.split(" #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith(prefix)]


def test_the_readmes_curl_lines_work_against_make_run(make_run, tmp_path):
    """The README's examples as written, with this run's key in $KEY and its port for 8000."""
    _process, banner, env, _ports = make_run
    key = re.search(r"[0-9a-f]{10}(-[0-9a-f]{10}){3}", banner).group(0)
    curls = _readme_commands("curl ")
    assert len(curls) >= 3
    for command in curls:
        command = command.replace("127.0.0.1:8000", f"127.0.0.1:{env['API_PORT']}")
        answer = subprocess.run(["bash", "-c", command + " -w '%{http_code}'"], cwd=tmp_path, capture_output=True,
                                text=True, timeout=60, env={**env, "KEY": key})
        assert answer.returncode == 0, (command, answer.stderr)
        assert answer.stdout.endswith("200"), (command, answer.stdout[-300:])
    assert (tmp_path / "week.csv").read_text().startswith("MeterParam,TimeStamping,value")
    assert (tmp_path / "chart.png").read_bytes()[:4] == b"\x89PNG"


def test_the_readmes_commissioning_commands_work_on_the_demo_agent(make_run):
    """`python -m edge_agent read|status -c agent.yaml` as in the README, on make run's agent config."""
    _process, banner, env, _ports = make_run
    config = re.search(r"edge_agent status -c (\S+)", banner).group(1)
    commands = _readme_commands("python -m edge_agent ")
    assert {c.split()[3] for c in commands} >= {"read", "status"}
    for command in commands:
        command = command.replace("python ", ".venv/bin/python ", 1).replace("agent.yaml", config)
        answer = subprocess.run(["bash", "-c", command], cwd=PROJECT_DIR, capture_output=True, text=True,
                                timeout=120, env=env)
        assert answer.returncode == 0, (command, answer.stderr)
        assert answer.stdout.strip(), command
    status = [c for c in commands if " status " in c and "--json" in c]
    assert status, "the README shows status --json"


def test_make_admin_creates_a_project(make_run):
    """The README's `make admin` line as written: the password from stdin, the account and key as JSON."""
    _process, _banner, env, _ports = make_run
    [command] = _readme_commands("echo ")
    assert "make admin" in command and "create-project" in command
    answer = subprocess.run(["bash", "-c", command], cwd=PROJECT_DIR, env=env, capture_output=True, text=True,
                            timeout=120)
    assert answer.returncode == 0, answer.stderr
    assert '"key"' in answer.stdout and '"username": "acme-admin"' in answer.stdout
    assert "a-long-enough-password" not in answer.stdout + answer.stderr


def test_second_make_run_says_so(make_run):
    _process, _banner, env, _ports = make_run
    answer = subprocess.run(["make", "--no-print-directory", "run"], cwd=PROJECT_DIR, env=env, capture_output=True,
                            text=True, timeout=120)
    assert answer.returncode != 0
    assert "already running" in answer.stderr


def test_the_agent_holds_an_ingest_key_printed_apart_from_the_account_key(make_run):
    """The demo agent pushes with a scoped ingest key (it can't read or manage anything); the banner shows both."""
    import requests

    _process, banner, env, _ports = make_run
    account_key = re.search(r"API key\s+(\S+)", banner).group(1)
    ingest_key = re.search(r"ingest key\s+(\S+)", banner).group(1)
    assert ingest_key != account_key
    url = f"http://127.0.0.1:{env['API_PORT']}"
    assert requests.get(url + "/data", headers={"X-API-Key": ingest_key}, timeout=30).status_code == 403
    keys = requests.get(url + "/keys", headers={"X-API-Key": account_key}, timeout=30).json()
    agent = next(k for k in keys if k["label"] == "demo site agent")   # (the README's lines make another)
    assert agent["scope"] == "ingest"
    assert agent["last_used"] is not None          # the agent registered its meters with it


def test_the_readmes_key_line_gives_the_banners_key(make_run):
    _process, banner, env, _ports = make_run
    key = re.search(r"API key\s+(\S+)", banner).group(1)
    [command] = _readme_commands("export KEY=")
    answer = subprocess.run(["bash", "-c", command + ' && echo "KEY=$KEY"'], cwd=PROJECT_DIR, env=env,
                            capture_output=True, text=True, timeout=120)
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip().endswith(f"KEY={key}")


def test_ctrl_c_stops_everything(make_run, site):
    process, _banner, _env, ports = make_run
    record = site.record()
    os.killpg(process.pid, signal.SIGINT)
    output = process.communicate(timeout=120)[0]
    assert stop_time(output) is not None, output[-2000:]       # "stopped in X s: no process left behind."
    assert wait_gone(record, []) == ([], [])                   # every pid it recorded has ended...
    assert not any(port_in_use(p) for p in ports)              # ...and nothing answers on its ports


def test_a_restart_keeps_the_key_and_the_projects_and_sigterm_stops_it_from_a_script(make_run, site):
    """After Ctrl-C, `make run` again as a script starts it (SIGINT ignored, as for a background job):
    the same demo key, the project `make admin` made still there; SIGTERM to make stops everything."""
    _process, banner, env, _ports = make_run
    key = re.search(r"API key\s+(\S+)", banner).group(1)
    process = None
    try:
        process, second = site.start(preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        url = site.api_url
        assert re.search(r"API key\s+(\S+)", second).group(1) == key, second
        assert "with the state of the last run" in second and "(resumed this time)" in second
        login = requests.put(url + "/session", json={"username": "acme-admin", "password": "a-long-enough-password"},
                             timeout=30)
        assert login.status_code == 200, login.text
        assert requests.get(url + "/interval", headers={"Authorization": f"Bearer {key}"}, timeout=30).json()
        # The agent's ingest key is replaced at each start (shown once, never stored): the last one stops.
        old_ingest = re.search(r"ingest key\s+(\S+)", banner).group(1)
        new_ingest = re.search(r"ingest key\s+(\S+)", second).group(1)
        assert new_ingest != old_ingest
        assert requests.put(url + "/point", json={"MeterId": "x"}, headers={"X-API-Key": old_ingest},
                            timeout=30).status_code == 401
        record = site.record()
        process.send_signal(signal.SIGTERM)                 # to make alone, as a script or a service manager does
        output = process.communicate(timeout=120)[0]
        assert stop_time(output) is not None, output[-2000:]
        assert wait_gone(record, site.ports) == ([], [])
    finally:
        end(process)

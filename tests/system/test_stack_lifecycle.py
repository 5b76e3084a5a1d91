"""`make run` lives and dies as one (issue 24), started as a user starts it: `make run` in a session of its own.

Ended by a closed terminal (SIGHUP to its process group), by SIGKILL to tools.stack alone (its
children get SIGTERM from the kernel), with a child hung (SIGSTOP) when tools.stack dies (the next
make run names the orphan and `make stop` ends it), and by SIGTERM with a large state (a building's
year, built with the product's storage functions by bench/bench_stack_stop.py). After each, no
process it recorded runs and none of its ports answers, and the next `make run` starts (the next
step's start, or the test's own). The stop times make run reports are printed (pytest -s), never
asserted: the machine is shared.
"""
import os
import signal
import subprocess
import sys
import urllib.parse

import pytest
import requests

from tests.stack_support import Site, end, load_json_line, recorded, stop_time, wait_gone
from tools.processes import alive
from tools.stack import PROJECT_DIR, wait_for

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="process groups, prctl")


@pytest.fixture(scope="module")
def site():
    made = Site()
    yield made
    made.make("stop")
    made.close()


def _log_tail(site, name, lines=15):
    try:
        with open(os.path.join(site.state_dir, "logs", f"{name}.log")) as handle:
            return "".join(handle.readlines()[-lines:])
    except OSError as error:
        return str(error)


def _assert_nothing_left(record, ports):
    left, held = wait_gone(record, ports)
    assert not left, f"processes of the stack still running: {left}"
    assert not held, f"ports still answering: {held}"


def test_a_closed_terminal_sighup_to_its_group_stops_everything(site):
    process, banner = site.start()
    record = site.record()
    assert set(record.data["children"]) >= {"aws", "api", "export-worker", "meters", "agent"}
    os.killpg(process.pid, signal.SIGHUP)          # what a terminal sends its foreground group when it closes
    output = process.communicate(timeout=180)[0]
    _assert_nothing_left(record, site.ports)
    print(f"\nSIGHUP: make run reported stopped in {stop_time(output)} s")
    assert "stopping (SIGHUP)" in output and stop_time(output) is not None, output[-2000:]
    assert site.record() is None                   # a stop that ran to its end forgets its record


def test_sigkill_to_the_stack_alone_leaves_nothing(site):
    process, banner = site.start()                 # after the SIGHUP: a new make run starts
    record = site.record()
    assert alive(record.stack_pid)
    os.kill(record.stack_pid, signal.SIGKILL)      # no handler of its runs
    process.communicate(timeout=60)
    _assert_nothing_left(record, site.ports)


def test_an_orphaned_stack_is_named_and_make_stop_ends_it(site):
    process, banner = site.start()                 # after the SIGKILL: its record is stale, forgotten
    record = site.record()
    agent = record.data["children"]["agent"]["pid"]
    os.kill(agent, signal.SIGSTOP)                 # a child that cannot act on the kernel's SIGTERM
    os.kill(record.stack_pid, signal.SIGKILL)
    process.communicate(timeout=60)
    wait_for(lambda: not any(alive(pid, started) for pid, started in recorded(record)
                             if pid not in (agent, record.stack_pid)), "the other children to end", timeout=120)
    assert alive(agent), _log_tail(site, "agent")
    again = site.make("run")
    assert again.returncode != 0
    assert "ended without stopping its processes" in again.stderr and f"agent (pid {agent})" in again.stderr
    assert f"make stop API_PORT={site.base}" in again.stderr
    stopped = site.make("stop")
    assert stopped.returncode == 0 and "stopped in" in stopped.stdout, stopped.stdout + stopped.stderr
    _assert_nothing_left(record, site.ports)
    assert "nothing to stop" in site.make("stop").stdout


def test_after_make_stop_make_run_starts(site):
    process, banner = site.start()
    try:
        assert requests.get(site.api_url + "/openapi.yaml", timeout=30).status_code == 200
    finally:
        end(process)


@pytest.fixture(scope="module")
def building():
    """A site whose state holds a building: 30 meters x a year (2025) of 5-minute readings (10,950 day items)."""
    made = Site()
    answer = subprocess.run([sys.executable, "bench/bench_stack_stop.py", "--build-only", "--meters", "30",
                             "--days", "365", "--state", os.path.join(made.state_dir, "aws-state")],
                            cwd=PROJECT_DIR, capture_output=True, text=True, timeout=900)
    assert answer.returncode == 0, answer.stderr[-3000:]
    made.building_key = load_json_line(answer.stdout)["key"]
    yield made
    made.make("stop")
    made.close()


def _get(site, path, **params):
    return requests.get(site.api_url + path, params=params, headers={"Authorization": f"Bearer {site.building_key}"},
                        allow_redirects=False, timeout=120)


def test_sigterm_with_a_large_state_stops_and_keeps_files_and_a_running_job(building):
    """SIGTERM to make with a building's year in the state; before it, a file link and an export job of
    1.3 M rows (a job: 202). After it nothing is left; a new make run has the building, the link
    answers the same bytes (issue 20 item 6), and the job, cut by the stop, finishes."""
    process, banner = building.start()
    try:
        assert "with the state of the last run" in banner
        meters = _get(building, "/point").json()
        assert len(meters) == 30
        week = _get(building, "/file", start="2025-03-01", end="2025-03-07", type="csv")
        assert week.status_code == 303, week.text
        link, week_bytes = week.headers["Location"], requests.get(week.headers["Location"], timeout=60).content
        assert week_bytes.count(b"\n") == 30 * 7 * 288 + 1
        job = _get(building, "/file", start="2025-01-01", end="2025-05-30", type="csv")
        assert job.status_code == 202, job.text
        record = building.record()
        process.send_signal(signal.SIGTERM)        # to make alone, as a script or a service manager does
        output = process.communicate(timeout=300)[0]
    finally:
        end(process)
    _assert_nothing_left(record, building.ports)
    print(f"\nSIGTERM, a year of 30 meters in the state: make run reported stopped in {stop_time(output)} s")
    assert stop_time(output) is not None, output[-2000:]

    process, banner = building.start()
    try:
        assert requests.get(link, timeout=60).content == week_bytes        # a link made before the restart
        location = job.headers["Location"]

        def finished():
            answer = _get(building, location)
            assert answer.status_code in (202, 303), answer.text
            return answer if answer.status_code == 303 else None

        done = wait_for(finished, "the export job begun before the restart", timeout=900, interval=2)
        rows = requests.get(done.headers["Location"], timeout=300).content.count(b"\n")
        assert rows == 30 * 150 * 288 + 1
        assert urllib.parse.urlparse(done.headers["Location"]).port == building.base + 1   # the embedded AWS
        record = building.record()
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=300)[0]
        print(f"SIGTERM again: make run reported stopped in {stop_time(output)} s")
    finally:
        end(process)
    _assert_nothing_left(record, building.ports)

"""The pieces the stack's life rests on: a child bound to its parent (tools/child.py), the record's idea of
"still ours" (tools/processes.py), ports outside the ephemeral range (tools/ports.py)."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tools import ports, processes
from tools.stack import PROJECT_DIR, wait_for

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl, /proc")


@linux
def test_a_child_ends_when_its_parent_is_killed(tmp_path):
    """A parent started a child through tools.child and is then SIGKILLed: the kernel's SIGTERM ends the child."""
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-m", "tools.child", str(os.getpid()), "http.server", "0",
                                  "--bind", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        open({str(pid_file)!r}, "w").write(str(child.pid))
        time.sleep(600)
        """)], cwd=PROJECT_DIR)
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text(), "the child's pid", timeout=60)
        child = int(pid_file.read_text())
        started = processes.started_at(child)
        time.sleep(1)                               # the child is past its start, serving
        assert processes.alive(child, started)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        wait_for(lambda: not processes.alive(child, started), "the child to end", timeout=30)
    finally:
        parent.kill()


def test_a_child_whose_parent_is_already_gone_does_not_start():
    """The parent died between the fork and prctl: the child sees another parent and ends, running nothing."""
    not_my_parent = os.getpid() + 1 if os.getpid() + 1 != os.getppid() else os.getpid() + 2
    answer = subprocess.run([sys.executable, "-m", "tools.child", str(not_my_parent), "http.server", "0"],
                            cwd=PROJECT_DIR, capture_output=True, text=True, timeout=60)
    assert answer.returncode == 0 and "Serving HTTP" not in answer.stdout + answer.stderr


@linux
def test_a_recorded_pid_with_another_start_time_is_not_ours():
    me = processes.started_at(os.getpid())
    assert processes.alive(os.getpid(), me)
    assert not processes.alive(os.getpid(), me + 1)          # the pid reused by another program
    assert not processes.alive(2 ** 22 + 1)                  # beyond pid_max: no such process


def test_free_ports_lie_outside_the_ephemeral_range_and_are_free():
    first, last = ports.ephemeral_range()
    for _ in range(20):
        port = ports.free_port(5)
        span = range(port, port + 5)
        assert not any(first <= p <= last for p in span)
        assert all(ports.bindable(p) for p in span)


def test_a_port_a_stopped_server_left_in_time_wait_is_free_and_a_listening_one_is_not():
    """The server closed its connection first (as a stopped meter or API does): the port waits in
    TIME_WAIT, and a server binding it as ours do (SO_REUSEADDR) gets it, so the probe says free."""
    import socket

    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", ports.free_port()))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    assert not ports.bindable(port)                            # listening
    accepted.close()                                           # the server's side closes first: its TIME_WAIT
    server.close()
    client.close()
    assert ports.bindable(port)
    again = socket.socket()
    again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    again.bind(("127.0.0.1", port))                            # what the probe promised
    again.close()

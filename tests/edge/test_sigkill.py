"""The agent SIGKILLed mid-batch and restarted: nothing lost, nothing doubled."""

import os
import signal
import subprocess
import sys
import time

from conftest import KEY, ROOT, meter, write_config
from edge_agent.clock import iso
from edge_agent.outbox import Outbox, Reading, Take
from edge_support import FakeCloud, free_port


def _start(cfg_path, log_path):
    env = {**os.environ, "INTELLIMETER_API_KEY": KEY, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "-c", str(cfg_path)], cwd=str(ROOT),
                            env=env, stdout=subprocess.DEVNULL, stderr=open(log_path, "ab"))


def _wait(cond, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


def test_sigkill_mid_batch_then_restart(tmp_path):
    cloud = FakeCloud(KEY, delay_after_store=0.3)  # stores the batch, then answers late
    try:
        names = ["a", "b", "c"]
        # the key comes from the environment; meters on a bus where nothing answers
        cfg_path = write_config(
            tmp_path, [meter(n, i + 1, "LAN1") for i, n in enumerate(names)],
            {"LAN1": {"type": "tcp", "host": "127.0.0.1", "port": free_port(), "timeout": 0.1}},
            url=cloud.url, key=None, cloud_extra={"batch_size": 250, "backoff_initial": 0.05, "backoff_max": 0.2})
        ob = Outbox(str(tmp_path / "outbox.sqlite"))
        t0 = (int(time.time()) - 30 * 86400) // 300 * 300
        taken = {}
        takes = []
        for k in range(800):  # 2400 readings taken during an earlier outage
            for n in names:
                r = Reading(n, iso(t0 + 300 * k), round(1000 + k * 0.25 + ord(n), 3))
                takes.append(Take(n, "", r))
                taken[(n, r.ts)] = r.value
        assert set(ob.record_poll(takes)) == {"stored"}
        log = tmp_path / "agent.log"
        p = _start(cfg_path, log)
        # kill it while a batch is stored in the cloud but its receipt is not yet back
        assert _wait(lambda: cloud.posts >= 3 and cloud.in_flight == 1), log.read_text()
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        st = ob.status()
        assert 0 < st["pending"] < len(taken)
        assert len(cloud.store) > len(taken) - st["pending"]  # the cloud has a batch the agent never saw acknowledged
        p = _start(cfg_path, log)
        try:
            assert _wait(lambda: ob.status()["pending"] == 0, 60), log.read_text()
        finally:
            p.send_signal(signal.SIGTERM)
            assert p.wait(20) == 0
        st = ob.status()
        assert st["dead_letters"] == 0
        assert cloud.rejected == 0  # never two values for one (meter, time)
        assert cloud.duplicates >= 250  # the interrupted batch was resent, and counted as delivered
        got = {(m, t.strftime("%Y-%m-%dT%H:%M:%SZ")): v for (m, t), v in cloud.store.items()}
        assert got == taken  # every reading exactly once, nothing extra
        text = log.read_text()
        assert KEY not in text
        assert "event=registered meter=a" in text and "event=stopped" in text
    finally:
        cloud.close()

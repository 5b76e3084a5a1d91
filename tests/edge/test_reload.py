"""A running agent follows its config file: a valid change re-registers the meters, an invalid one is refused."""

import logging
import os
import threading
import time

from conftest import meter, write_config
from edge_agent.agent import Agent
from edge_agent.config import load_config
from edge_support import free_port


def wait_until(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def rewrite(tmp_path, meters, url, bus):
    """Write the config anew with a later mtime (a second write can fall in the same mtime tick)."""
    path = write_config(tmp_path, meters, bus, url=url)
    later = time.time() + 5
    os.utime(path, (later, later))
    return path


def test_a_config_change_registers_new_meters_and_an_invalid_one_keeps_the_running_config(tmp_path, fake_cloud,
                                                                                         caplog):
    bus = {"LAN1": {"type": "tcp", "host": "127.0.0.1", "port": free_port(), "timeout": 0.2}}
    path = write_config(tmp_path, [meter("meter1", 1, "LAN1")], bus, url=fake_cloud.url)
    agent = Agent(load_config(path))
    runner = threading.Thread(target=agent.run, daemon=True)
    caplog.set_level(logging.INFO)
    runner.start()
    try:
        assert wait_until(lambda: "meter1" in fake_cloud.points), "the agent registers its meters on start"
        assert "meter2" not in fake_cloud.points

        rewrite(tmp_path, [meter("meter1", 1, "LAN1"), meter("meter2", 2, "LAN1", save_every=15)], fake_cloud.url, bus)
        assert wait_until(lambda: "meter2" in fake_cloud.points), "a new meter in the config is registered"
        assert fake_cloud.points["meter2"]["SaveEvery"] == 15
        assert [m.MeterId for m in agent.cfg.meters] == ["meter1", "meter2"]

        rewrite(tmp_path, [meter("meter1", 1, "LAN1"), meter("meter1", 2, "LAN1")], fake_cloud.url, bus)
        assert wait_until(lambda: any(r.getMessage() == "config_reload_rejected" for r in caplog.records))
        assert [m.MeterId for m in agent.cfg.meters] == ["meter1", "meter2"], "the running config is kept"
        assert runner.is_alive()
    finally:
        agent.stop_event.set()
        runner.join(30)
    assert not runner.is_alive()

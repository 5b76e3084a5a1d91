"""Fixtures for the edge agent tests: configs, a simulated site, a fake cloud."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

from edge_support import FakeCloud, free_port  # noqa: E402

KEY = "f27a4f7186-d4a6635fe7-992d888955-284e0b037c"

MAP_METERS = [
    # (MeterId, map, NoPhases, MeterType, startAddress)
    ("imeter45", "Priority.ici", "3", "I-45/MFX/636", 1100),
    ("sdm630", "Eastron.SDM630", "3", "SDM630", None),
    ("sdm120", "Eastron.SDM120", "1", "SDM120", None),
    ("em24", "CarloGavazzi.EM24", "3", "EM24DIN", None),
    ("iem3000", "Schneider.iEM3000", "3", "iEM3155", None),
]


def write_config(tmp_path: Path, meters: list[dict], buses: dict, url: str = "http://127.0.0.1:9", key: str | None = KEY,
                 extra: dict | None = None, cloud_extra: dict | None = None) -> Path:
    cloud = {"url": url}
    if key:
        cloud["key"] = key
    cloud.update(cloud_extra or {})
    doc = {"cloud": cloud, "buffer": str(tmp_path / "outbox.sqlite"), "buses": buses, "meters": meters}
    doc.update(extra or {})
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def meter(name, modbus_id, port, mapname="Priority.ici", phases="3", mtype="I-45/MFX/636", save_every=5, start=1100):
    d = {"MeterId": name, "ModbusId": modbus_id, "Port": port, "NoPhases": phases, "MeterType": mtype,
         "ModbusMap": mapname, "SaveEvery": save_every}
    if start is not None:
        d["startAddress"] = start
    return d


@pytest.fixture
def fake_cloud():
    c = FakeCloud(KEY)
    yield c
    c.close()


@pytest.fixture
def tcp_port():
    return free_port()


@pytest.fixture
def no_stale_log_handler():
    """`cli.main` points the agent's log handler at the test's captured stderr: drop it afterwards."""
    yield
    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, "_edge_agent", False)]:
        root.removeHandler(h)

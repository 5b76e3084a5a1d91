"""A bad config stops the agent at start, naming the file, the meter and the field."""

import pytest
import yaml

from conftest import KEY, meter, write_config
from edge_agent.config import ConfigError, load_config

BUS = {"USB0": {"type": "serial", "device": "/dev/ttyUSB0", "baudrate": 9600, "parity": "N", "stopbits": 1, "timeout": 0.5}}


def test_the_issue_example_config_loads(tmp_path):
    p = tmp_path / "agent.yaml"
    p.write_text(f"""
cloud:
  url: https://api.example.com
  key: {KEY}
buffer: {tmp_path}/outbox.sqlite
buses:
  USB0: {{type: serial, device: /dev/ttyUSB0, baudrate: 9600, parity: N, stopbits: 1, timeout: 0.5}}
  LAN1: {{type: tcp, host: 192.168.1.50, port: 502, timeout: 1}}
meters:
  - {{MeterId: meter1, ModbusId: 1, Port: USB0, NoPhases: "3", MeterType: I-45/MFX/636, ModbusMap: Priority.ici, SaveEvery: 5, startAddress: 1100}}
""")
    cfg = load_config(p)
    m = cfg.meters[0]
    assert m.point() == {"MeterId": "meter1", "ModbusId": 1, "Port": "USB0", "NoPhases": "3", "MeterType": "I-45/MFX/636",
                         "ModbusMap": "Priority.ici", "SaveEvery": 5, "startAddress": 1100}
    assert cfg.buses["LAN1"].host == "192.168.1.50"
    assert KEY not in repr(cfg) and KEY not in str(cfg.__dict__)
    assert cfg.key == KEY


def test_shipped_example_config_is_valid():
    from pathlib import Path

    from edge_agent import config
    cfg = load_config(Path(config.__file__).parent / "agent.example.yaml")
    assert cfg.meters


@pytest.mark.parametrize("change,where,field", [
    (lambda ms: ms[1].update(Port="USB9"), "meter 'm2'", "Port"),
    (lambda ms: ms[1].update(ModbusMap="Nope.map"), "meter 'm2'", "ModbusMap"),
    (lambda ms: ms[1].update(MeterId="m1"), "meter 'm1' (meters[1])", "MeterId"),
    (lambda ms: ms[1].pop("SaveEvery"), "meter 'm2'", "SaveEvery"),
    (lambda ms: ms[1].update(SaveEvery="five"), "meter 'm2'", "SaveEvery"),
    (lambda ms: ms[1].update(ModbusId=300), "meter 'm2'", "ModbusId"),
    (lambda ms: ms[1].update(startAddress="1100"), "meter 'm2'", "startAddress"),
    (lambda ms: ms[1].pop("MeterId"), "meters[1]", "MeterId"),
])
def test_bad_meter_fields_are_named(tmp_path, change, where, field):
    ms = [meter("m1", 1, "USB0"), meter("m2", 2, "USB0")]
    change(ms)
    p = write_config(tmp_path, ms, BUS)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and where in msg and f"field '{field}'" in msg, msg


def test_bad_bus_and_cloud_are_named(tmp_path):
    p = write_config(tmp_path, [meter("m1", 1, "USB0")], {"USB0": {"type": "serial"}})
    with pytest.raises(ConfigError, match="bus 'USB0': field 'device': missing"):
        load_config(p)
    p = write_config(tmp_path, [meter("m1", 1, "USB0")], {"USB0": {"type": "rs232", "device": "x"}})
    with pytest.raises(ConfigError, match="field 'type'"):
        load_config(p)
    p = write_config(tmp_path, [meter("m1", 1, "USB0")], BUS, url="ftp://x")
    with pytest.raises(ConfigError, match="field 'url'"):
        load_config(p)


def test_key_sources(tmp_path, monkeypatch):
    monkeypatch.delenv("INTELLIMETER_API_KEY", raising=False)
    p = write_config(tmp_path, [meter("m1", 1, "USB0")], BUS, key=None)
    cfg = load_config(p)
    assert cfg.key is None
    with pytest.raises(ConfigError, match="no API key"):
        cfg.require_key()
    monkeypatch.setenv("INTELLIMETER_API_KEY", KEY)
    assert load_config(p).key == KEY
    (tmp_path / "key").write_text("abc-from-file\n")
    doc = yaml.safe_load(p.read_text())
    doc["cloud"]["key_file"] = "key"
    p.write_text(yaml.safe_dump(doc))
    assert load_config(p).key == "abc-from-file"
    assert "abc-from-file" not in repr(load_config(p))

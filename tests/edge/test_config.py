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


def test_every_problem_is_named_in_one_go(tmp_path, capsys):
    """A site engineer fixes a config in one pass: `check` lists every problem, one line each, not the first."""
    maps = tmp_path / "maps"
    maps.mkdir()
    (maps / "Site.Meter.yaml").write_text("name: Site.Meter\nenergy: e\nmax_registers: 200\n"
                                          "registers:\n  e: {address: 1, type: uint33}\n")
    ms = [meter("m1", 1, "USB9"), meter("m2", 2, "USB0", save_every=0), meter("m3", 3, "USB0", mapname="Site.Meter")]
    bus = {"USB0": dict(BUS["USB0"], parity="X")}
    p = write_config(tmp_path, ms, bus, url="ftp://x", extra={"maps_dir": "maps", "agent": {"retention_days": 0}})
    with pytest.raises(ConfigError) as e:
        load_config(p)
    expected = [
        ("cloud", "url", "must be an https:// URL"),
        ("bus 'USB0'", "parity", "must be N, E or O, got 'X'"),
        ("meter 'm1' (meters[0])", "Port", "unknown bus 'USB9' (buses: USB0)"),
        ("meter 'm2' (meters[1])", "SaveEvery", "must be >= 1, got 0"),
        ("meter 'm3' (meters[2])", "ModbusMap", "max_registers must be 1..125"),
        ("meter 'm3' (meters[2])", "ModbusMap", "register e: type must be one of"),
        ("agent", "retention_days", "must be >= 1, got 0"),
    ]
    assert len(e.value.problems) == len(expected), e.value.problems
    for where, fld, why in expected:
        assert any(pr.startswith(f"{p}: {where}: field '{fld}': ") and why in pr for pr in e.value.problems), (where, fld)
    from edge_agent import cli
    assert cli.main(["check", "-c", str(p)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"config error: {pr}" for pr in e.value.problems]


def test_left_out_values_take_the_documented_defaults_everywhere(tmp_path):
    """A value left out of agent.yaml means its documented default (docs/edge-agent.md), in the config
    and in the parts built from it: a Sender or an Outbox not told a value uses the same one."""
    from edge_agent.clock import FakeClock
    from edge_agent.outbox import Outbox
    from edge_agent.sender import Sender

    buses = {"USB0": {"type": "serial", "device": "/dev/ttyUSB0"}, "LAN1": {"type": "tcp", "host": "10.0.0.5"}}
    cfg = load_config(write_config(tmp_path, [meter("m1", 1, "USB0")], buses, url="https://api.example.com"))
    assert (cfg.batch_size, cfg.http_timeout, cfg.backoff_initial, cfg.backoff_max) == (500, 30.0, 1.0, 300.0)
    assert (cfg.max_pending, cfg.retention_days, cfg.meter_backoff_max_minutes) == (7_000_000, 14, 30)
    usb, lan = cfg.buses["USB0"], cfg.buses["LAN1"]
    assert (usb.baudrate, usb.parity, usb.stopbits, usb.bytesize, usb.timeout, usb.retries) == (9600, "N", 1, 8, 0.5, 1)
    assert (lan.port, lan.timeout, lan.retries) == (502, 1.0, 1)
    told = Sender(Outbox(cfg.buffer, cfg.max_pending), None, cfg.meters, batch_size=cfg.batch_size,
                  backoff_initial=cfg.backoff_initial, backoff_max=cfg.backoff_max,
                  retention_days=cfg.retention_days, clock=FakeClock())
    untold = Sender(Outbox(cfg.buffer), None, cfg.meters, clock=FakeClock())
    for s in (told, untold):
        assert (s.max_batch, s.backoff_initial, s.backoff_max, s.retention_days) == (500, 1.0, 300.0, 14)
        assert s.outbox.max_pending == 7_000_000

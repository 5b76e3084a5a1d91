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
    from_file = "0123456789-abcdefabcd-0123456789-abcdefabcd"
    (tmp_path / "key").write_text(from_file + "\n")
    (tmp_path / "key").chmod(0o640)
    doc = yaml.safe_load(p.read_text())
    doc["cloud"]["key_file"] = "key"
    p.write_text(yaml.safe_dump(doc))
    assert load_config(p).key == from_file
    assert from_file not in repr(load_config(p))


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


# ---- commissioning mistakes `check` catches (issue 19, item 8) ---------------------------------------------

SDM = 'NoPhases: "3", MeterType: SDM630, ModbusMap: Eastron.SDM630, SaveEvery: 5'
GOOD_KEY = "0123456789-abcdefabcd-0123456789-abcdefabcd"


def _site(tmp_path, buses: str, meters: list[str], key_file: bytes = GOOD_KEY.encode() + b"\n", mode: int = 0o640):
    """An agent.yaml written as text (so a value keeps the form it was typed in) and its key file."""
    kf = tmp_path / "api.key"
    kf.write_bytes(key_file)
    kf.chmod(mode)
    p = tmp_path / "agent.yaml"
    p.write_text("cloud: {url: https://api.example.com, key_file: api.key}\n"
                 f"buffer: {tmp_path}/outbox.sqlite\n"
                 f"buses:\n{buses}\n"
                 "meters:\n" + "".join(f"  - {{{m}}}\n" for m in meters))
    return p


USB = "  USB0: {type: serial, device: /dev/ttyUSB0}\n  USB1: {type: serial, device: /dev/ttyUSB1}"
M1 = f"MeterId: m1, ModbusId: 1, Port: USB0, {SDM}"

MISTAKES = [
    # (what, buses, meters, where, field, what the line says)
    ("two meters with one ModbusId on a bus", USB, [M1, f"MeterId: m2, ModbusId: 1, Port: USB0, {SDM}"],
     "meter 'm2' (meters[1])", "ModbusId", "1 is also the ModbusId of meter 'm1' (meters[0]) on bus 'USB0'"),
    ("ModbusId 010 (YAML 1.1: octal 8)", USB, [M1, f"MeterId: m2, ModbusId: 010, Port: USB0, {SDM}"],
     "meter 'm2' (meters[1])", "ModbusId", "written 010: YAML reads a number with a leading 0 as octal, 8; write 10"),
    ("ModbusId 09 (YAML: text)", USB, [M1, f"MeterId: m2, ModbusId: 09, Port: USB0, {SDM}"],
     "meter 'm2' (meters[1])", "ModbusId", "written 09"),
    ("buadrate", "  USB0: {type: serial, device: /dev/ttyUSB0, buadrate: 2400}", [M1],
     "bus 'USB0'", "buadrate", "unknown key: did you mean 'baudrate'?"),
    ("partiy", "  USB0: {type: serial, device: /dev/ttyUSB0, partiy: E}", [M1],
     "bus 'USB0'", "partiy", "unknown key: did you mean 'parity'?"),
    ("startAdress", USB, [f"{M1}, startAdress: 1100"],
     "meter 'm1' (meters[0])", "startAdress", "unknown key: did you mean 'startAddress'?"),
    ("max_power_KW", USB, [f"{M1}, max_power_KW: 250"],
     "meter 'm1' (meters[0])", "max_power_KW", "unknown key: did you mean 'max_power_kw'?"),
    ("two buses on one device", "  USB0: {type: serial, device: /dev/ttyUSB0}\n"
                                "  RS485: {type: serial, device: /dev/ttyUSB0, baudrate: 2400}",
     [M1, f"MeterId: m2, ModbusId: 2, Port: RS485, {SDM}"],
     "bus 'RS485'", "device", "/dev/ttyUSB0 is the port of bus 'USB0' too"),
    ("names the cloud merges: NFC and NFD", USB, [f"MeterId: \"caf\\u00e9\", ModbusId: 1, Port: USB0, {SDM}",
                                                  f"MeterId: \"cafe\\u0301\", ModbusId: 2, Port: USB0, {SDM}"],
     "meter 'cafe\u0301' (meters[1])", "MeterId", "the cloud takes 'cafe\\u0301' and 'caf\\xe9' for one meter"),
    ("names the cloud merges: a trailing space", USB, [M1, f"MeterId: \"m1 \", ModbusId: 2, Port: USB0, {SDM}"],
     "meter 'm1 ' (meters[1])", "MeterId", "the cloud takes 'm1 ' and 'm1' for one meter"),
    ("a name the cloud refuses: 65 characters", USB, [f"MeterId: {'x' * 65}, ModbusId: 1, Port: USB0, {SDM}"],
     f"meter '{'x' * 65}' (meters[0])", "MeterId", "65 characters: the cloud refuses names over 64"),
]


@pytest.mark.parametrize("what,buses,meters,where,fld,says", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_check_catches_a_commissioning_mistake_in_one_line(tmp_path, capsys, what, buses, meters, where, fld, says):
    """Each mistake is one `config error:` line naming the file, the place and the field; exit 2."""
    from edge_agent import cli

    p = _site(tmp_path, buses, meters)
    assert cli.main(["check", "-c", str(p)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"config error: {p}: {where}: field '{fld}': ") and says in lines[0], lines[0]


def test_a_meter_may_share_its_modbus_id_with_one_on_another_bus_and_a_decimal_id_is_fine(tmp_path, capsys):
    from edge_agent import cli

    p = _site(tmp_path, USB, [M1, f"MeterId: m2, ModbusId: 1, Port: USB1, {SDM}",
                              f"MeterId: m3, ModbusId: 10, Port: USB0, {SDM}", f"MeterId: m4, ModbusId: 0x0B, Port: USB0, {SDM}"])
    assert cli.main(["check", "-c", str(p)]) == 0, capsys.readouterr().err
    assert [m.ModbusId for m in load_config(p).meters] == [1, 1, 10, 11]


def test_two_bus_names_for_one_port_through_a_link_are_caught(tmp_path):
    """/dev/serial/by-id/... links and /dev/ttyUSB0 name one port: compared after resolving links."""
    port = tmp_path / "ttyUSB0"
    port.write_text("")
    (tmp_path / "usb-FTDI_FT232R-if00-port0").symlink_to(port)
    p = _site(tmp_path, f"  A: {{type: serial, device: {port}}}\n"
                        f"  B: {{type: serial, device: {tmp_path}/usb-FTDI_FT232R-if00-port0}}",
              [f"MeterId: m1, ModbusId: 1, Port: A, {SDM}", f"MeterId: m2, ModbusId: 2, Port: B, {SDM}"])
    with pytest.raises(ConfigError, match=r"bus 'B': field 'device': .* is the port of bus 'A' too"):
        load_config(p)


KEY_FILES = [
    ("a byte-order mark", b"\xef\xbb\xbf" + GOOD_KEY.encode() + b"\n", 0o640, "starts with a byte-order mark"),
    ("two lines", (GOOD_KEY + "\n" + GOOD_KEY + "\n").encode(), 0o640, "holds 2 lines"),
    ("not the documented form", b"0123456789-ABCDEFABCD-0123456789-abcdefabcd\n", 0o640,
     "four groups of ten lowercase hex digits separated by '-'"),
    ("a quoted key", f'"{GOOD_KEY}"\n'.encode(), 0o640, "four groups of ten lowercase hex digits"),
    ("readable by every user", GOOD_KEY.encode() + b"\n", 0o644, "may be read by every user of the box (mode 0644)"),
]


@pytest.mark.parametrize("what,content,mode,says", KEY_FILES, ids=[k[0] for k in KEY_FILES])
def test_check_refuses_a_key_file_not_in_the_documented_form(tmp_path, capsys, monkeypatch, what, content, mode, says):
    """The key file holds the key alone, on one line, as PUT /keys shows it, and only root and the service's
    group may read it (0640 root:intellimeter); the line never shows the key."""
    from edge_agent import cli

    monkeypatch.delenv("INTELLIMETER_API_KEY", raising=False)
    p = _site(tmp_path, USB, [M1], key_file=content, mode=mode)
    assert cli.main(["check", "-c", str(p)]) == 2
    assert cli.main(["run", "-c", str(p)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0] == lines[1], lines
    assert lines[0].startswith(f"config error: {p}: cloud: field 'key_file': {tmp_path / 'api.key'}") and says in lines[0]
    assert GOOD_KEY not in lines[0] and GOOD_KEY.upper()[10:21] not in lines[0]
    assert cli.main(["read", "-c", str(p), "--json"]) in (0, 1)  # commands that need no key still work

"""The systemd unit as shipped starts on a box installed as docs/edge-agent.md says.

The unit is read with a small parser of systemd's syntax (repeated keys kept), checked
by ``systemd-analyze verify``, and its credentials are applied for real (fork, setgroups,
setgid, setuid) to run its ExecStartPre check against a key file made as the docs make it.
"""

import fnmatch
import grp
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import KEY, ROOT, meter, write_config
from edge_agent import cli

UNIT = ROOT / "edge_agent" / "intellimeter-agent.service"
DOCS = ROOT / "docs" / "edge-agent.md"

# The serial ports of the boards the docs support, with the device group their kernel driver
# registers in /proc/devices (the name DeviceAllow=char-NAME matches):
SERIAL_PORTS = {
    "/dev/ttyUSB0": "ttyUSB",  # drivers/usb/serial/usb-serial.c: FTDI, CH340, CP210x RS-485 adapters
    "/dev/ttyACM0": "ttyACM",  # drivers/usb/class/cdc-acm.c: CDC-ACM adapters
    "/dev/ttyAMA0": "ttyAMA",  # drivers/tty/serial/amba-pl011.c: the Raspberry Pi's PL011 UART
    "/dev/ttyS0": "ttyS",  # drivers/tty/serial/8250: PC UARTs and the Raspberry Pi's mini UART
    "/dev/ttySC0": "ttySC",  # drivers/tty/serial/sc16is7xx.c: RS-485 HATs (Waveshare, ...)
}


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """systemd unit syntax: [Section], Key=Value, repeated keys kept, # and ; comments,
    backslash continuation."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    lines = iter(text.splitlines())
    for line in lines:
        line = line.strip()
        while line.endswith("\\"):
            line = line[:-1] + " " + next(lines).strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        k, _, v = line.partition("=")
        assert current is not None, f"a setting before any [section]: {line}"
        current.append((k.strip(), v.strip()))
    return sections


def values(unit, section, key):
    return [v for k, v in unit[section] if k == key]


@pytest.fixture(scope="module")
def unit():
    return parse_unit(UNIT.read_text())


def docs_key_file():
    """The key file as the install steps of the docs create it: (mode, owner, group, path)."""
    m = re.search(r"install -m (0[0-7]{3}) -o (\S+) -g (\S+) /dev/null (\S+)", DOCS.read_text())
    assert m, "docs/edge-agent.md no longer shows how the key file is created"
    return int(m.group(1), 8), m.group(2), m.group(3), m.group(4)


def test_the_service_keeps_its_own_group_and_gets_dialout(unit):
    svc = unit["Service"]
    assert values(unit, "Service", "User") == ["intellimeter"]
    assert values(unit, "Service", "Group") in ([], ["intellimeter"])  # never one that drops the user's own group
    assert "dialout" in " ".join(values(unit, "Service", "SupplementaryGroups")).split()
    mode, owner, group, path = docs_key_file()
    assert (mode, owner, group) == (0o640, "root", "intellimeter")  # readable through the user's own group only
    assert any(k == "ExecStart" and "edge_agent run" in v for k, v in svc)


def test_device_allow_covers_the_serial_ports_of_the_supported_boards(unit):
    allowed = [v.split() for v in values(unit, "Service", "DeviceAllow")]
    assert all(len(a) == 2 and set(a[1]) <= set("rwm") for a in allowed)
    assert values(unit, "Service", "DevicePolicy") in ([], ["closed"], ["strict"])

    def allows(group):
        return any(spec.startswith("char-") and fnmatch.fnmatchcase(group, spec[5:]) and {"r", "w"} <= set(rights)
                   for spec, rights in allowed)

    for dev, group in SERIAL_PORTS.items():
        assert allows(group), f"{dev} (device group {group}) is not allowed"
    for other in ("mem", "tty", "ptm", "input", "hidraw", "watchdog"):
        assert not allows(other), f"{other} should stay closed"
    # the serial groups this machine's kernel has are the names the table above uses
    here = {line.split()[1] for line in Path("/proc/devices").read_text().splitlines()
            if line[:1] == " " or line[:1].isdigit()}
    for name in here & {"ttyS", "ttyUSB", "ttyACM", "ttyAMA", "ttySC"}:
        assert allows(name)


def test_the_usb_serial_drivers_are_loaded_before_start(unit):
    """char-ttyUSB matches only if usbserial is loaded when the unit starts (systemd.resource-control)."""
    for key in ("Wants", "After"):
        loaded = " ".join(values(unit, "Unit", key)).split()
        assert "modprobe@usbserial.service" in loaded and "modprobe@cdc_acm.service" in loaded


def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is part of the test tools (apt-get install systemd)"
    text = UNIT.read_text().replace("/opt/intellimeter-agent/venv/bin/python", sys.executable)
    p = tmp_path / "intellimeter-agent.service"
    p.write_text(text)
    r = subprocess.run([tool, "verify", str(p)], capture_output=True, text=True, timeout=60)
    ours = [line for line in (r.stdout + r.stderr).splitlines() if "intellimeter-agent.service" in line]
    assert r.returncode == 0 and ours == [], r.stdout + r.stderr


def _exec_start(unit, config: Path, command: str = "run") -> list[str]:
    """The unit's ExecStart as argv, with the site's paths replaced by the test's (``check``: the same
    command line with the subcommand that runs the same start checks and then stops)."""
    (cmd,) = values(unit, "Service", "ExecStart")
    argv = shlex.split(cmd)
    assert argv[0] == "/opt/intellimeter-agent/venv/bin/python" and argv[1:4] == ["-m", "edge_agent", "run"]
    assert argv[-2:] == ["-c", "/etc/intellimeter-agent/agent.yaml"]
    return [sys.executable, *argv[1:3], command, *argv[4:-1], str(config)]


def _mkdir(p: Path) -> Path:
    p.mkdir()
    return p


def test_a_failed_start_check_stops_the_unit_instead_of_restarting_it(unit, tmp_path):
    """``Restart=always`` restarts a unit whose start fails, every ``RestartSec``, forever (5 s apart, the
    start rate limit of 5 in 10 s is never reached). ``RestartPreventExitStatus=2`` stops that, but systemd
    tests it against the MAIN process's exit status only (src/core/service.c, service_shall_restart:
    ``exit_status_set_test(&s->restart_prevent_status, s->main_exec_status...)``, and main_exec_status is
    reset at each start): so no ExecStartPre may fail, and ``run`` itself exits 2 on each start problem."""
    assert values(unit, "Service", "Restart") == ["always"]
    assert "2" in " ".join(values(unit, "Service", "RestartPreventExitStatus")).split()
    assert all(v.startswith("-") for v in values(unit, "Service", "ExecStartPre")), "a failing ExecStartPre restarts"
    env = {k: v for k, v in os.environ.items() if k != "INTELLIMETER_API_KEY"}
    bus = {"USB0": {"type": "serial", "device": "/dev/ttyUSB0"}}
    broken = {
        "config": write_config(_mkdir(tmp_path / "a"), [meter("m1", 1, "USB9")], bus, url="https://api.example.com"),
        "key": write_config(_mkdir(tmp_path / "b"), [meter("m1", 1, "USB0")], bus, url="https://api.example.com", key=None,
                            cloud_extra={"key_file": str(tmp_path / "nokey")}),
    }
    for what, cfg in broken.items():
        r = subprocess.run(_exec_start(unit, cfg), cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, (what, r.stdout + r.stderr)
        assert r.stderr.startswith("config error: ") and len(r.stderr.splitlines()) == 1, r.stderr


@pytest.mark.parametrize("key_file", ["missing", "directory"])
def test_the_start_check_fails_when_the_key_cannot_be_read(unit, tmp_path, key_file):
    kf = tmp_path / "api.key"
    if key_file == "directory":
        kf.mkdir()
    cfg = write_config(tmp_path, [meter("m1", 1, "USB0")], {"USB0": {"type": "serial", "device": "/dev/ttyUSB0"}},
                       url="https://api.example.com", key=None, cloud_extra={"key_file": str(kf)})
    env = {k: v for k, v in os.environ.items() if k != "INTELLIMETER_API_KEY"}
    r = subprocess.run(_exec_start(unit, cfg), cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "field 'key_file'" in r.stderr and "cannot read" in r.stderr
    kf.rmdir() if kf.is_dir() else None
    kf.write_text(KEY + "\n")
    kf.chmod(0o640)
    r = subprocess.run(_exec_start(unit, cfg, "check"), cwd=str(ROOT), env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "OK, 1 meters" in r.stdout and KEY not in r.stdout + r.stderr


def _check_as(uid: int, gid: int, groups: list[int], argv: list[str]) -> tuple[int, str]:
    """Run the check in a child with exactly these credentials (as systemd would set them)."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop to the unit's credentials, run the check, report
        code = 99
        try:
            os.close(rfd)
            sys.stdout = open(os.devnull, "w")
            sys.stderr = os.fdopen(wfd, "w")
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)
            code = cli.main(argv)
        finally:
            sys.stderr.flush()
            os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd) as f:
        err = f.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), err


def _may_read(mode: int, owner: tuple[int, int], uid: int, groups: list[int]) -> bool:
    """The kernel's read check for a file of this mode and owner (uid, gid), for a process that is not root."""
    if uid == owner[0]:
        return bool(mode & 0o400)
    if owner[1] in groups:
        return bool(mode & 0o040)
    return bool(mode & 0o004)


def _unit_credentials(unit, user_gid: int, names: dict[str, int]) -> tuple[int, list[int]]:
    """The gid and supplementary groups systemd gives the service: Group= or else the user's own
    primary group; SupplementaryGroups= on top."""
    group = values(unit, "Service", "Group")
    gid = names[group[0]] if group else user_gid
    extra = [names[g] for v in values(unit, "Service", "SupplementaryGroups") for g in v.split()]
    return gid, sorted({gid, *extra})


def test_the_service_can_read_the_key_the_docs_install_and_a_dialout_group_could_not(unit):
    """With the shipped unit the check passes; with the old ``Group=dialout`` it fails loudly (exit 2)."""
    mode, _, _, _ = docs_key_file()
    service_gid = 4242  # the intellimeter user's own group (useradd --user-group)
    dialout = grp.getgrnam("dialout").gr_gid
    names = {"intellimeter": service_gid, "dialout": dialout}
    d = Path(tempfile.mkdtemp(prefix="unit-"))
    try:
        d.chmod(0o755)
        kf = d / "api.key"
        kf.write_text(KEY + "\n")
        if os.geteuid() == 0:
            os.chown(kf, 0, service_gid)
        kf.chmod(mode)
        state = d / "state"  # StateDirectory=: the service user's
        state.mkdir()
        if os.geteuid() == 0:
            os.chown(state, 65534, service_gid)
        cfg = write_config(d, [meter("m1", 1, "USB0")], {"USB0": {"type": "serial", "device": "/dev/ttyUSB0"}},
                           url="https://api.example.com", key=None, cloud_extra={"key_file": str(kf)})
        cfg.write_text(cfg.read_text().replace(str(d / "outbox.sqlite"), str(state / "outbox.sqlite")))
        cfg.chmod(0o644)
        argv = _exec_start(unit, cfg, "check")[3:]  # check -c CONFIG (`run` checks the same first)
        env_key = os.environ.pop("INTELLIMETER_API_KEY", None)
        old = parse_unit(UNIT.read_text().replace("User=intellimeter", "User=intellimeter\nGroup=dialout"))
        new_creds = _unit_credentials(unit, service_gid, names)
        old_creds = _unit_credentials(old, service_gid, names)
        assert _may_read(mode, (0, service_gid), 65534, new_creds[1])
        assert not _may_read(mode, (0, service_gid), 65534, old_creds[1])
        try:
            if os.geteuid() == 0:  # and for real: the check under exactly those credentials
                assert _check_as(65534, *new_creds, argv) == (0, "")
                code, err = _check_as(65534, *old_creds, argv)
                assert code == 2 and "field 'key_file'" in err and "Permission denied" in err
        finally:
            if env_key is not None:
                os.environ["INTELLIMETER_API_KEY"] = env_key
    finally:
        shutil.rmtree(d)


def test_the_start_check_fails_when_root_left_the_outbox_unwritable(unit):
    """A command run as root on the box can leave outbox files the service cannot write: the
    check under the unit's credentials says so, instead of an agent that fails at its first write."""
    service_gid = 4242
    d = Path(tempfile.mkdtemp(prefix="unit-"))
    try:
        d.chmod(0o755)
        state = d / "state"
        state.mkdir()
        if os.geteuid() == 0:  # StateDirectory= is the service user's
            os.chown(state, 65534, service_gid)
        cfg = write_config(d, [meter("m1", 1, "USB0")], {"USB0": {"type": "serial", "device": "/dev/ttyUSB0"}},
                           url="https://api.example.com", key=KEY)
        cfg.write_text(cfg.read_text().replace(str(d / "outbox.sqlite"), str(state / "outbox.sqlite")))
        cfg.chmod(0o644)
        argv = _exec_start(unit, cfg, "check")[3:]
        creds = _unit_credentials(unit, service_gid, {"dialout": grp.getgrnam("dialout").gr_gid})
        wal = state / "outbox.sqlite-wal"
        wal.write_bytes(b"")  # as root: root-owned, 0644
        wal.chmod(0o644)
        if os.geteuid() == 0:
            for args in (argv, _exec_start(unit, cfg)[3:]):  # check, and run as the unit starts it
                code, err = _check_as(65534, *creds, args)
                assert code == 2 and "field 'buffer'" in err and "outbox.sqlite-wal" in err and "chown" in err
            os.chown(wal, 65534, service_gid)
            assert _check_as(65534, *creds, argv) == (0, "")
        else:
            wal.chmod(0o444)
            assert cli.main(argv) == 2
            wal.chmod(0o644)
            assert cli.main(argv) == 0
    finally:
        shutil.rmtree(d)

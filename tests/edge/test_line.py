"""The line layer against meters and lines the project did not write (issue 19, items 1, 4, 6, 9).

Meters are pymodbus's own ``ModbusSerialServer`` and ``ModbusTcpServer`` with the makers' register
layouts (``maker_meters.py``); serial lines are ``rs485_line.Line``: pseudo-terminals joined by a
model of a 2-wire bus that paces bytes at the baud, delays a meter's answers and lets two masters
collide; gateways are ``modbus_gateway.GatewayProxy`` in front of a ``ModbusTcpServer``. No timing
is asserted: values, counts and reasons are.
"""

import os
import re
import subprocess
import sys
import threading
import time

import pytest
from maker_meters import MeterSpec, start_meters, start_serial_meters
from modbus_gateway import GatewayProxy
from pymodbus.client import ModbusSerialClient
from rs485_line import Line

from conftest import meter, write_config
from edge_agent import cli
from edge_agent.config import load_config
from edge_agent.outbox import Outbox
from edge_agent.reader import BusReader, MeterReadError
from edge_agent.scheduler import Poller
from edge_support import free_port

B = 1_800_000_000
ENERGY, POWER_W = 98_765.4, 20_000.0  # the EM24's total (kWh) and its power (W): 2000.0 as a 0.1-kWh raw


def _serial_cfg(tmp_path, device, meters, baudrate=9600, timeout=0.5, retries=1, **extra):
    bus = {"type": "serial", "device": device, "baudrate": baudrate, "timeout": timeout, "retries": retries, **extra}
    return load_config(write_config(tmp_path, meters, {"RS": bus}))


@pytest.fixture
def em24_line(tmp_path):
    """An EM24 (pymodbus ModbusSerialServer, maker layout) on a 9600-baud line; the agent's end."""
    line = Line(9600)
    agent = line.attach("agent")
    meters = line.attach("meters")
    bus = start_serial_meters(meters.path, [MeterSpec("CarloGavazzi.EM24", unit=1, energy_kwh=ENERGY, power_w=POWER_W)])
    cfg = _serial_cfg(tmp_path, agent.path, [meter("em24", 1, "RS", "CarloGavazzi.EM24", start=None)])
    yield line, meters, bus, cfg
    bus.stop()
    line.close()


# ---- item 1: a late answer is never taken for another request ---------------------------------------------


def test_an_em24_answering_600ms_late_never_lends_a_value_to_another_request(em24_line):
    """The issue's case: EM24, RTU 9600, timeout 0.5 s, retries 1, answers 600 ms late. Its merged read
    asks fc3@0+6, fc3@12+6, fc3@40+2 (power) and fc3@52+2 (energy): same unit, function and byte count
    in pairs. Every read either gives the meter's own values or fails saying the meter answers late."""
    line, meters, bus, cfg = em24_line
    m = cfg.meter("em24")
    reader = BusReader(cfg.buses["RS"])
    try:
        v = reader.read(m)  # a meter in good health first (identified: the id read is not repeated)
        assert v.scaled["import_kwh"] == pytest.approx(ENERGY) and v.scaled["power_w"] == pytest.approx(POWER_W)
        meters.delay = 0.6
        reasons = []
        for _ in range(4):
            line.wait_idle()  # a new poll: the line is quiet again (polls are minutes apart)
            try:
                v = reader.read(m)
            except MeterReadError as exc:
                reasons.append(str(exc))
                continue
            assert v.scaled["import_kwh"] == pytest.approx(ENERGY)  # never the power register's 2000.0
            assert v.scaled["power_w"] == pytest.approx(POWER_W)
            assert v.scaled["v1"] == pytest.approx(230.0)
        assert len(reasons) == 4
        for r in reasons:
            late = re.search(r"answers after (\d+) ms; timeout 500 ms", r)
            assert late and int(late.group(1)) >= 600, r
        assert reader.line.counts["late"] == 4
    finally:
        reader.close()


def test_a_late_em24_never_puts_a_wrong_value_in_the_outbox(em24_line):
    """The same meter through the poller (`run`): the outbox holds its good reading and nothing else;
    `status` names the reason."""
    line, meters, bus, cfg = em24_line
    ob = Outbox(cfg.buffer)
    poller = Poller(cfg, ob)
    try:
        assert poller.poll(B, meters=cfg.meters)[0].value == pytest.approx(ENERGY)
        meters.delay = 0.6
        for k in range(1, 4):
            line.wait_idle()
            res = poller.poll(B + 300 * k, meters=cfg.meters)[0]
            assert res.outcome == "failed" and "answers after" in res.error and "timeout 500 ms" in res.error
        assert [(m, v) for m, _, v, _ in ob.all_readings()] == [("em24", pytest.approx(ENERGY))]
        assert ob.status()["suspect_readings"] == 0
        assert "answers after" in ob.status()["failing_meters"][0]["last_error"]
    finally:
        poller.close()


def test_a_meter_answering_after_its_retry_is_caught_by_the_echo(em24_line):
    """An answer later than twice the timeout lands in the retry's window: the retry's own answer
    follows it, and that echo fails the meter instead of leaving it to answer the next request."""
    line, meters, bus, cfg = em24_line
    m = cfg.meter("em24")
    reader = BusReader(cfg.buses["RS"])
    try:
        reader.read(m)
        meters.delay = 1.2
        line.wait_idle()
        with pytest.raises(MeterReadError, match=r"answers after 1\d\d\d ms; timeout 500 ms"):
            reader.read(m)
        assert reader.line.counts["late"] == 1
    finally:
        reader.close()


def test_an_adapter_that_echoes_its_own_requests(tmp_path):
    """An RS-485 adapter whose receiver stays on while it sends gives the agent its own request back
    before the answer: that echo is neither another master nor the answer."""
    line = Line(9600)
    agent, meters = line.attach("agent", echo=True), line.attach("meters", delay=0.02)
    bus = start_serial_meters(meters.path, [MeterSpec("CarloGavazzi.EM24", unit=1, energy_kwh=ENERGY, power_w=POWER_W)])
    cfg = _serial_cfg(tmp_path, agent.path, [meter("em24", 1, "RS", "CarloGavazzi.EM24", start=None)])
    reader = BusReader(cfg.buses["RS"])
    try:
        for _ in range(3):
            v = reader.read(cfg.meters[0])
            assert v.scaled["import_kwh"] == pytest.approx(ENERGY) and v.scaled["power_w"] == pytest.approx(POWER_W)
        assert reader.line.counts["voided"] == reader.line.counts["foreign_requests"] == 0
        assert reader.line.counts["sends"] == reader.line.counts["answers"] == 1 + 3 * 4  # the model code once
    finally:
        reader.close()
        bus.stop()
        line.close()


class Bms(threading.Thread):
    """Another master on the line: pymodbus's own client polling the EM24's power (fc3@40+2, the
    energy register's shape) at irregular intervals."""

    def __init__(self, device):
        super().__init__(daemon=True)
        self.client = ModbusSerialClient(device, baudrate=9600, timeout=0.3, retries=0)
        self.stop = threading.Event()
        self.answers = 0

    def run(self):
        self.client.connect()
        k = 0
        while not self.stop.is_set():
            try:
                rr = self.client.read_holding_registers(40, count=2, device_id=1)
                self.answers += not rr.isError()
            except Exception:  # noqa: BLE001 - a BMS on a busy line loses answers too
                pass
            k += 1
            self.stop.wait((0.03, 0.11, 0.07, 0.19, 0.05)[k % 5])

    def close(self):
        self.stop.set()
        self.join(5)
        self.client.close()


def test_another_master_reading_the_same_meter_never_lends_its_answers(em24_line, tmp_path):
    """A BMS polls the EM24's power on the same line while the agent polls energy: the BMS's answers have
    the energy request's shape. Every reading stored is the energy total; a read the BMS spoiled fails
    with a reason (another master, garbled, no answer)."""
    line, meters, bus, cfg = em24_line
    cfg = _serial_cfg(tmp_path, cfg.buses["RS"].device, [meter("em24", 1, "RS", "CarloGavazzi.EM24", start=None)],
                      timeout=0.2)
    bms_party = line.attach("bms")
    meters.delay = 0.02
    bms = Bms(bms_party.path)
    ob = Outbox(cfg.buffer)
    poller = Poller(cfg, ob)
    bms.start()
    try:
        errors = []
        for k in range(20):
            res = poller.poll(B + 300 * k, meters=cfg.meters)[0]
            if res.outcome != "stored":
                errors.append(res.error)
            assert res.outcome in ("stored", "failed"), res
    finally:
        bms.close()
        poller.close()
    values = [v for _, _, v, _ in ob.all_readings()]
    assert values and all(v == pytest.approx(ENERGY) for v in values)
    assert ob.status()["suspect_readings"] == 0
    for e in errors:
        assert re.search(r"another master|garbled|no answer|not sent", e), e
    line_counts = poller.readers["RS"].line.counts
    assert line_counts["foreign_requests"] > 0 and bms.answers > 0  # the two masters did share the line


def test_tcp_answers_are_matched_by_transaction_id(tmp_path):
    """A gateway that repeats each answer (the copy carries the earlier transaction id, and arrives while
    the next request waits): every value read is the register asked for."""
    port = free_port()
    bus = start_meters(port, [MeterSpec("CarloGavazzi.EM24", unit=1, energy_kwh=ENERGY, power_w=POWER_W)])
    proxy = GatewayProxy(port, mode="duplicate", dup_delay=0.0)
    cfg = load_config(write_config(tmp_path, [meter("em24", 1, "GW", "CarloGavazzi.EM24", start=None)],
                                   {"GW": {"type": "tcp", "host": "127.0.0.1", "port": proxy.port, "timeout": 0.5}}))
    reader = BusReader(cfg.buses["GW"])
    try:
        for _ in range(5):
            v = reader.read(cfg.meter("em24"))
            assert v.scaled["import_kwh"] == pytest.approx(ENERGY) and v.scaled["power_w"] == pytest.approx(POWER_W)
            assert v.scaled["v1"] == pytest.approx(230.0) and v.scaled["i1"] == pytest.approx(POWER_W / 230 / 3, abs=1e-3)
        assert proxy.duplicated >= 20 and reader.line.counts["stray_frames"] > 0
    finally:
        reader.close()
        proxy.close()
        bus.stop()


def test_a_meter_answering_late_behind_a_gateway_fails_with_its_lateness(tmp_path):
    """Over TCP the transaction id tells a late answer from the next one; the meter still fails, with the
    reason, and gives no value (its late answer is never used)."""
    port = free_port()
    bus = start_meters(port, [MeterSpec("CarloGavazzi.EM24", unit=1, energy_kwh=ENERGY, power_w=POWER_W)])
    proxy = GatewayProxy(port, mode="delay", delay=0.6)
    cfg = load_config(write_config(tmp_path, [meter("em24", 1, "GW", "CarloGavazzi.EM24", start=None)],
                                   {"GW": {"type": "tcp", "host": "127.0.0.1", "port": proxy.port, "timeout": 0.5}}))
    poller = Poller(cfg, Outbox(cfg.buffer))
    try:
        for k in range(2):
            res = poller.poll(B + 300 * k, meters=cfg.meters)[0]
            assert res.outcome == "failed" and re.search(r"answers after 6\d\d ms; timeout 500 ms", res.error), res
        assert Outbox(cfg.buffer).all_readings() == []
    finally:
        poller.close()
        proxy.close()
        bus.stop()


# ---- item 4: a gateway that drops idle connections ---------------------------------------------------------

GATEWAY_METERS = [("Eastron.SDM630", "sdm630", "3", 4_321.5), ("CarloGavazzi.EM24", "em24", "3", 98_765.4),
                  ("Schneider.iEM3000", "iem3000", "3", 12_345.678)]


def _until(cond, timeout=10.0):
    give_up = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < give_up, "the gateway never dropped the idle connection"
        time.sleep(0.02)


@pytest.mark.parametrize("mode", ["close", "reset", "blackhole"])
def test_a_gateway_that_drops_idle_connections_costs_no_reading(tmp_path, mode):
    """Between polls the gateway drops the idle connection: closes it (FIN), resets it when the next
    request comes (RST, the agent learns only after sending), or forgets it and drops what is sent on
    it without a word (an expired NAT entry). Every meter is read at every poll."""
    port = free_port()
    bus = start_meters(port, [MeterSpec(k, unit=i + 1, energy_kwh=e) for i, (k, _, _, e) in enumerate(GATEWAY_METERS)])
    proxy = GatewayProxy(port, mode=mode, idle=0.2)
    ms = [meter(name, i + 1, "GW", k, ph, k, start=None) for i, (k, name, ph, _) in enumerate(GATEWAY_METERS)]
    cfg = load_config(write_config(tmp_path, ms, {"GW": {"type": "tcp", "host": "127.0.0.1", "port": proxy.port,
                                                        "timeout": 0.5, "retries": 1}}))
    poller = Poller(cfg, Outbox(cfg.buffer))
    dropped = {"close": lambda: proxy.closed_idle, "reset": lambda: proxy.resets,
               "blackhole": lambda: proxy.blackholed}[mode]
    try:
        for k in range(4):
            if k and mode == "reset":
                time.sleep(0.3)  # idle for longer than the gateway keeps state (it tells nobody)
            res = poller.poll(B + 300 * k, meters=cfg.meters)
            assert [(r.meter, r.outcome) for r in res] == [(name, "stored") for _, name, _, _ in GATEWAY_METERS], res
            if mode != "reset":
                _until(lambda: dropped() > k)  # the connection went idle and the gateway dropped it
        assert dropped() == (3 if mode == "reset" else 4)
        assert proxy.connections == 4  # one new connection per poll, made by the agent
        got = {m: v for m, _, v, _ in Outbox(cfg.buffer).all_readings()}
        assert got == {"sdm630": pytest.approx(4_321.5, abs=1e-3), "em24": pytest.approx(98_765.4),
                       "iem3000": pytest.approx(12_345.678)}
        assert len(Outbox(cfg.buffer).all_readings()) == 12
    finally:
        poller.close()
        proxy.close()
        bus.stop()


# ---- item 6: timeouts that fit the line; smaller reads after timeouts --------------------------------------


def test_timeouts_fit_the_line_at_2400_baud(tmp_path):
    """An SDM630 whose 76-register answer (157 bytes) takes 654 ms on the wire at 2400 baud, over the
    0.5 s configured: the timeout grows to fit, the read is answered, and no retry collides with it."""
    line = Line(2400)
    agent, meters = line.attach("agent"), line.attach("meters", delay=0.05)
    bus = start_serial_meters(meters.path, [MeterSpec("Eastron.SDM630", unit=1, energy_kwh=4_321.5, faults={"lenient"})],
                              baudrate=2400)
    cfg = _serial_cfg(tmp_path, agent.path, [meter("sdm630", 1, "RS", "Eastron.SDM630", start=None)], baudrate=2400)
    reader = BusReader(cfg.buses["RS"])
    try:
        assert [(r.address, r.count) for r in cfg.meters[0].map.plan()] == [(0, 76), (0x156, 2)]
        for _ in range(2):
            v = reader.read(cfg.meters[0])
            assert v.plan == "merged" and v.scaled["import_kwh"] == pytest.approx(4_321.5, abs=1e-3)
            assert v.scaled["v1"] == pytest.approx(230.0) and v.scaled["power_w"] == pytest.approx(1500.0)
        counts = reader.line.counts
        assert counts["answers"] == 4 and counts["sends"] == 4 and counts["silent"] == counts["late"] == 0
        assert line.collisions == 0
    finally:
        reader.close()
        bus.stop()
        line.close()


def test_a_read_that_gets_no_answer_steps_down_to_smaller_reads(tmp_path):
    """A meter that ignores long requests (no answer, not exception 02): `read` steps down after the
    timeout as after an exception, keeps the plan that answered, and shows the values."""
    line = Line(19200)
    agent, meters = line.attach("agent"), line.attach("meters", delay=0.01)
    bus = start_serial_meters(meters.path, [MeterSpec("Eastron.SDM630", unit=1, energy_kwh=4_321.5,
                                                      faults={"lenient", "mute_large"})], baudrate=19200)
    cfg = _serial_cfg(tmp_path, agent.path, [meter("sdm630", 1, "RS", "Eastron.SDM630", start=None)], baudrate=19200,
                      timeout=0.2)
    reader = BusReader(cfg.buses["RS"])
    m = cfg.meters[0]
    try:
        v = reader.read(m)
        assert v.plan == "runs" and v.scaled["import_kwh"] == pytest.approx(4_321.5, abs=1e-3)
        assert v.scaled["v1"] == pytest.approx(230.0)
        before = len(bus.requests)
        assert reader.read(m).plan == "runs"  # kept: no second silent merged read
        assert [c for *_, c in bus.requests[before:]] == [r.count for r in m.map.plans()["runs"]]
        assert all(c <= 16 for *_, c in bus.requests)  # the meter never answered the 76-register read
    finally:
        reader.close()
        bus.stop()
        line.close()


# ---- item 9: `cannot open bus` keeps the OS's reason -------------------------------------------------------


def test_cannot_open_bus_says_the_adapter_is_missing(tmp_path, capsys, no_stale_log_handler):
    path = write_config(tmp_path, [meter("m1", 1, "RS", "Eastron.SDM120", "1", start=None)],
                        {"RS": {"type": "serial", "device": str(tmp_path / "ttyUSB7")}})
    assert cli.main(["read", "-c", str(path)]) == 1
    out = capsys.readouterr().out
    assert re.search(r"cannot open bus RS \(.*ttyUSB7\): no such device \(ENOENT\): is the RS-485 adapter plugged in",
                     out), out


def test_cannot_open_bus_names_the_group_to_join(tmp_path):
    """A port of group dialout, mode 0660, opened by a user outside the group (the test forks a child
    that drops to nobody, as the unit's user would be without SupplementaryGroups)."""
    master, slave = os.openpty()
    device = os.ttyname(slave)
    os.chown(device, 0, 20)
    os.chmod(device, 0o660)
    cfg = _serial_cfg(tmp_path, device, [meter("m1", 1, "RS", "Eastron.SDM120", "1", start=None)])
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: nobody, no supplementary groups
        try:
            os.close(rfd)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                BusReader(cfg.buses["RS"]).read(cfg.meters[0])
                msg = "opened"
            except MeterReadError as exc:
                msg = str(exc)
            os.write(wfd, msg.encode())
        finally:
            os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd) as f:
        msg = f.read()
    os.waitpid(pid, 0)
    os.close(master)
    os.close(slave)
    assert "permission denied (EACCES)" in msg and "group dialout, mode 0660" in msg, msg
    assert "usermod -aG dialout nobody" in msg, msg


def test_cannot_open_bus_when_another_process_holds_it(tmp_path):
    """Another process (a running agent) holds the port: `read` says so and names it."""
    line = Line(9600)
    agent = line.attach("agent")
    holder = subprocess.Popen([sys.executable, "-c", "import serial, sys, time\n"
                               "s = serial.Serial(sys.argv[1], exclusive=True)\nprint('ready', flush=True)\n"
                               "time.sleep(60)", agent.path], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        cfg = _serial_cfg(tmp_path, agent.path, [meter("m1", 1, "RS", "Eastron.SDM120", "1", start=None)])
        with pytest.raises(MeterReadError) as exc:
            BusReader(cfg.buses["RS"]).read(cfg.meters[0])
        msg = str(exc.value)
        assert f"in use by pid {holder.pid} (python" in msg and "is the service running?" in msg, msg
    finally:
        holder.kill()
        holder.wait()
        line.close()


def test_check_prints_what_run_reads_and_what_a_poll_costs_the_bus(tmp_path, capsys, no_stale_log_handler):
    """`check` shows the one request `run` sends per meter and the bus's budget: 28 meters at 9600 baud,
    each answer 9 bytes after a 8-byte request (17.7 ms on the wire) and a 100 ms turnaround."""
    ms = [meter(f"m{i}", i + 1, "RS", "Eastron.SDM630", start=None) for i in range(28)]
    path = write_config(tmp_path, ms, {"RS": {"type": "serial", "device": "/dev/ttyUSB0", "baudrate": 9600}})
    assert cli.main(["check", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "m0: bus RS id 1 map Eastron.SDM630: energy at wire address 72" in out and "run reads fc4@72+2;" in out
    assert "bus RS: 28 meters at 9600 baud: a poll takes about 3.4 s on the line (with turnaround_ms 100)" in out
    assert "each meter that does not answer adds 2.0 s" in out

"""The line layer against meters and lines the project did not write (issue 19, items 1, 4, 6, 9).

Meters are pymodbus's own ``ModbusSerialServer`` and ``ModbusTcpServer`` with the makers' register
layouts (``maker_meters.py``); serial lines are ``rs485_line.Line``: pseudo-terminals joined by a
model of a 2-wire bus that paces bytes at the baud, delays a meter's answers and lets two masters
collide; gateways are ``modbus_gateway.GatewayProxy`` in front of a ``ModbusTcpServer``. No timing
is asserted: values, counts and reasons are.
"""

import re
import threading

import pytest
from maker_meters import MeterSpec, start_meters, start_serial_meters
from modbus_gateway import GatewayProxy
from pymodbus.client import ModbusSerialClient
from rs485_line import Line

from conftest import meter, write_config
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
        for _ in range(2):
            line.wait_idle()
            with pytest.raises(MeterReadError, match=r"answers after 1\d\d\d ms; timeout 500 ms"):
                reader.read(m)
    finally:
        reader.close()


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

"""Meters laid out from their makers' documentation, served by pymodbus's own server.

Independent of the agent's maps and of its simulator (nothing here imports
``edge_agent``): each meter is a pymodbus ``SimDevice`` with SEPARATE holding and
input register blocks (``simdata=(coils, discrete, holding, input)``) holding only
the registers its maker documents. A read that touches an undocumented register,
or the wrong register space, is answered with exception 02 (illegal data address),
as real meters do.

API (reused by other tests, e.g. the soak):

    bus = start_meters(port, [MeterSpec("Eastron.SDM630", unit=1, energy_kwh=1234.5, faults={"nan"}), ...])
    bus = start_meter(kind, port, unit=1, energy_kwh=1000.0, faults=())   # one meter
    bus = start_serial_meters(device, specs, baudrate=9600)   # the same on a serial line (a pty)
    bus.meters[unit].energy_kwh = 1300.0       # the next read answers the new total
    bus.set_faults(unit, {"silent"})           # change faults while serving
    bus.requests                               # [(unit, function, address, count), ...] as received
    bus.stop()

Kinds (``KINDS``): ``Priority.ici`` (i-meter 45, block at startAddress 1100),
``Eastron.SDM630``, ``Eastron.SDM120``, ``CarloGavazzi.EM24`` (current EM24 DIN,
id code 1648, kWh(+) TOT at 0x0034), ``CarloGavazzi.EM24.IS`` (older "IS" unit, id
code 71, power factors at 0x0032-0x0035, kWh(+) TOT at 0x003E), ``Schneider.iEM3000``.

Faults (a set, per meter, changeable while serving):

* ``nan``      - the total-energy register holds a float NaN (``7FC0 0000``; float meters only).
* ``nan_volts``- the voltage registers hold NaN, the total is fine (Eastron meters).
* ``silent``   - the unit never answers (absent from the RS-485 line / gateway).
* ``busy``     - every read is answered with exception 06 (device busy).
* ``lenient``  - undocumented registers read as 0 instead of exception 02 (some firmware does).
* ``mute_large`` - reads of more than 16 registers get no answer at all (firmware, or a gateway
                 in front of it, that drops long requests instead of answering exception 02).
"""

from __future__ import annotations

import asyncio
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simcore import SimCore

FAULTS = {"nan", "nan_volts", "silent", "busy", "lenient", "mute_large"}
MUTE_ABOVE = 16  # ``mute_large``: reads of more registers get no answer


def _words(kind: str, value: float, word_order: str = "big") -> list[int]:
    data = struct.pack(">" + kind, value if kind in "fd" else int(round(value)))
    words = [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]
    return words[::-1] if word_order == "little" else words


@dataclass
class Layout:
    """One meter type as its maker documents it: the space the values live in, the
    documented ranges of each space, and how to fill the registers from a meter state."""

    space: str  # "h" (holding, function 3) or "i" (input, function 4)
    documented: dict[str, list[tuple[int, int]]]  # space -> [(first wire address, count)]
    fill: Callable[..., dict[int, int]]  # (MakerMeter) -> {wire address: word} in ``space``
    energy: tuple[int, int]  # (wire address, count) of the total-energy register
    float_energy: bool = False


def _eastron_fill(m: "MakerMeter", three_phase: bool) -> dict[int, int]:
    """Eastron SDM630/SDM120 input registers: IEEE 754 float32, high word first."""
    out: dict[int, int] = {}

    def put(addr, v):
        for i, w in enumerate(_words("f", v)):
            out[addr + i] = w

    phases = 3 if three_phase else 1
    for p in range(phases):
        put(0x0000 + 2 * p, float("nan") if "nan_volts" in m.faults else 230.0 + p)  # phase L-N volts
        put(0x0006 + 2 * p, m.power_w / 230.0 / phases)  # phase current
        put(0x000C + 2 * p, m.power_w / phases)  # phase power W
    if three_phase:
        put(0x0034, m.power_w)                   # total system power
    put(0x0046, 50.0)                            # frequency
    put(0x0048, float("nan") if "nan" in m.faults else m.energy_kwh)  # import active energy kWh
    put(0x004A, 0.0)                             # export active energy kWh
    put(0x0156, float("nan") if "nan" in m.faults else m.energy_kwh)  # total active energy kWh
    return out


# Eastron SDM630 Modbus protocol V2, input registers ("30001" parameters, 2 registers each):
# documented from 0x0000 to 0x002A, 0x002E-0x0030, 0x0034, 0x0038, 0x003C-0x003E, 0x0042,
# 0x0046-0x0056, 0x0064-0x006A, 0x00C8-0x00CE, 0x00E0, 0x00EA-0x00FE, 0x0102-0x010C,
# 0x0156-0x0180; 0x002C, 0x0032, 0x0036, 0x003A, 0x0040, 0x0044 are NOT documented.
# Holding registers are configuration only (demand period 0x0002, system type 0x000A,
# pulse width 0x000C, password lock 0x000E, parity/stop 0x0012, node address 0x0014,
# pulse divisor 0x0016, password 0x0018, baud rate 0x001C, pulse energy type 0x0056).
SDM630_INPUT = [(0x0000, 0x2C), (0x002E, 4), (0x0034, 2), (0x0038, 2), (0x003C, 4), (0x0042, 2),
                (0x0046, 0x12), (0x0064, 8), (0x00C8, 8), (0x00E0, 2), (0x00EA, 0x16), (0x0102, 0x0C),
                (0x0156, 0x2C)]
SDM_HOLDING = [(0x0002, 2), (0x000A, 2), (0x000C, 2), (0x000E, 2), (0x0012, 2), (0x0014, 2), (0x0016, 2),
               (0x0018, 2), (0x001C, 2), (0x0056, 2)]
# Eastron SDM120 Modbus protocol, input registers: volts 0x0000, current 0x0006, power 0x000C,
# VA 0x0012, var 0x0018, PF 0x001E, phase angle 0x0024, Hz 0x0046, import/export kWh
# 0x0048/0x004A, import/export kvarh 0x004C/0x004E, demands 0x0054-0x005E, current demand
# 0x0102, max 0x0108, total kWh 0x0156, total kvarh 0x0158. Everything between is undocumented.
SDM120_INPUT = [(0x0000, 2), (0x0006, 2), (0x000C, 2), (0x0012, 2), (0x0018, 2), (0x001E, 2), (0x0024, 2),
                (0x0046, 0x0A), (0x0054, 0x0C), (0x0102, 2), (0x0108, 2), (0x0156, 4)]


def _imeter_fill(m: "MakerMeter") -> dict[int, int]:
    """Intellimeter i-meter 45 / MF (the contract): 41100 active phases, 41101.. volts and
    amps UINT32 thousandths, 41143 total kWh UINT32 thousandths, high word first."""
    base = 1099  # 41100 at startAddress 1100
    out = {base: 3}
    for p in range(3):
        for i, w in enumerate(_words("I", 230_000 + p * 1000)):
            out[base + 1 + 2 * p + i] = w
        for i, w in enumerate(_words("I", round(m.power_w / 230.0 / 3 * 1000))):
            out[base + 7 + 2 * p + i] = w
    raw = round(m.energy_kwh * 1000) % (1 << 32)
    for i, w in enumerate(_words("I", raw)):
        out[1142 + i] = w
    return out


def _em24_fill(m: "MakerMeter", older: bool) -> dict[int, int]:
    """Carlo Gavazzi EM24: INT32 with the least significant word first, INT16 single words."""
    out: dict[int, int] = {}

    def put32(addr, raw):
        for i, w in enumerate(_words("i", raw, "little")):
            out[addr + i] = w

    def put16(addr, raw):
        out[addr] = int(raw) & 0xFFFF

    for p in range(3):
        put32(0x0000 + 2 * p, 2300 + 10 * p)                  # V Lx-N, 0.1 V
        put32(0x000C + 2 * p, round(m.power_w / 230.0 / 3 * 1000))  # A Lx, 0.001 A
        put32(0x0012 + 2 * p, round(m.power_w / 3 * 10))      # W Lx, 0.1 W
    put16(0x000B, 71 if older else 1648)                      # Carlo Gavazzi Controls identification code
    put32(0x0028, round(m.power_w * 10))                      # W sys, 0.1 W
    total = round(m.energy_kwh * 10)                          # kWh(+) TOT in 0.1 kWh
    if older:  # "IS" protocol: PF L1, L2, L3, sys (INT16 thousandths) at 0x0032-0x0035, sequence, Hz
        for i, pf in enumerate((975, 982, 980, 991)):
            put16(0x0032 + i, pf)
        put16(0x0036, 0)
        put16(0x0037, 500)
        put32(0x003E, total)
        put32(0x0042, total // 3)                             # a partial counter, not the total
    else:      # current protocol: phase sequence, Hz, kWh(+) TOT, per-phase kWh
        put16(0x0032, 0)
        put16(0x0033, 500)
        put32(0x0034, total)
        for p in range(3):
            put32(0x0040 + 2 * p, total // 3)
    return out


# EM24 DIN, holding registers (as read by Carlo Gavazzi's tools and Victron's dbus-modbus-client):
# V L-N 0x0000-0x0005, identification code 0x000B, A 0x000C-0x0011, W/VA/var per phase
# 0x0012-0x0023, system values 0x0024-0x002D, then the generation's own layout.
EM24_HOLDING = [(0x0000, 6), (0x000B, 1), (0x000C, 0x22), (0x002E, 0x24)]  # 0x002E-0x0051
EM24_IS_HOLDING = [(0x0000, 6), (0x000B, 1), (0x000C, 0x22), (0x002E, 0x30)]  # 0x002E-0x005D


def _iem_fill(m: "MakerMeter") -> dict[int, int]:
    """Schneider iEM3000: FLOAT32 instantaneous values, INT64 energies in Wh, high word first;
    the maker numbers registers from 1 (register 3204 is wire address 3203)."""
    out: dict[int, int] = {}

    def put(addr, kind, v):
        for i, w in enumerate(_words(kind, v)):
            out[addr + i] = w

    for p in range(3):
        put(2999 + 2 * p, "f", m.power_w / 230.0 / 3)  # I1..I3 (registers 3000-3005)
        put(3027 + 2 * p, "f", 230.0 + p)               # V L-N (3028-3033)
        put(3053 + 2 * p, "f", m.power_w / 3000.0)      # P phase kW (3054-3059)
    put(3059, "f", m.power_w / 1000.0)                  # total active power kW (3060)
    put(3109, "f", 50.0)                                # frequency (3110)
    put(3203, "q", round(m.energy_kwh * 1000))          # total active energy import Wh (3204)
    put(3207, "q", 0)                                   # export (3208)
    return out


# iEM3000 register list (wire addresses): currents 2999-3004, current avg 3009-3010, voltages
# 3019-3026 (L-L, avg) and 3027-3032 (L-N), 3035-3036 (L-N avg), powers 3053-3060, reactive
# 3067-3068, apparent 3075-3076, PF 3083-3084, frequency 3109-3110, energies 3203-3210.
IEM_HOLDING = [(2999, 6), (3009, 2), (3019, 14), (3035, 2), (3053, 8), (3067, 2), (3075, 2), (3083, 2),
               (3109, 2), (3203, 8)]

LAYOUTS: dict[str, Layout] = {
    "Priority.ici": Layout("h", {"h": [(1099, 13), (1142, 2)]}, _imeter_fill, (1142, 2)),
    "Eastron.SDM630": Layout("i", {"i": SDM630_INPUT, "h": SDM_HOLDING}, lambda m: _eastron_fill(m, True),
                             (0x0048, 2), float_energy=True),
    "Eastron.SDM120": Layout("i", {"i": SDM120_INPUT, "h": SDM_HOLDING}, lambda m: _eastron_fill(m, False),
                             (0x0048, 2), float_energy=True),
    "CarloGavazzi.EM24": Layout("h", {"h": EM24_HOLDING}, lambda m: _em24_fill(m, False), (0x0034, 2)),
    "CarloGavazzi.EM24.IS": Layout("h", {"h": EM24_IS_HOLDING}, lambda m: _em24_fill(m, True), (0x003E, 2)),
    "Schneider.iEM3000": Layout("h", {"h": IEM_HOLDING}, _iem_fill, (3203, 4)),
}
KINDS = tuple(LAYOUTS)


@dataclass
class MeterSpec:
    kind: str
    unit: int = 1
    energy_kwh: float = 12_345.6
    faults: set = field(default_factory=set)
    power_w: float = 1500.0


@dataclass
class MakerMeter:
    """One meter's state; its registers are recomputed from it on every read."""

    kind: str
    unit: int
    energy_kwh: float
    faults: set
    power_w: float
    reads: int = 0

    @property
    def layout(self) -> Layout:
        return LAYOUTS[self.kind]

    def words(self) -> dict[int, int]:
        return self.layout.fill(self)

    def device(self) -> SimDevice:
        lay = self.layout
        lenient = "lenient" in self.faults
        blocks = {}
        for space in ("h", "i"):
            ranges = lay.documented.get(space)
            if not ranges:  # nothing documented in this space: every address is illegal
                blocks[space] = [SimData(address=0, count=1, datatype=DataType.INVALID)]
                continue
            if lenient:
                lo, hi = min(a for a, _ in ranges), max(a + n for a, n in ranges)
                ranges = [(lo, hi - lo)]
            blocks[space] = [SimData(address=a, values=[0] * n, datatype=DataType.REGISTERS) for a, n in ranges]
        bits = [SimData(address=0, values=False, datatype=DataType.BITS)]
        return SimDevice(id=self.unit, simdata=(bits, list(bits), blocks["h"], blocks["i"]), action=self._action)

    async def _action(self, function_code, start_address, address, count, registers, set_values):
        self.reads += 1
        if "busy" in self.faults:
            return ExcCodes.DEVICE_BUSY
        if (function_code == 3) != (self.layout.space == "h"):
            return None  # the other space holds configuration, never the values
        for a, w in self.words().items():
            i = a - start_address
            if 0 <= i < len(registers):
                registers[i] = w
        return None


class _Core(SimCore):
    """A unit that is absent or ``silent`` gets no answer at all (the server drops the request)."""

    def __init__(self, devices, bus: "MakerBus"):
        super().__init__(devices)
        self.bus = bus

    async def async_getValues(self, device_id, func_code, address, count=1):
        m = self.bus.meters.get(device_id)
        if m is None or "silent" in m.faults or ("mute_large" in m.faults and count > MUTE_ABOVE):
            raise NoSuchIdException(f"{device_id}")
        self.bus.requests.append((device_id, func_code, address, count))
        return await super().async_getValues(device_id, func_code, address, count)

    async def async_setValues(self, device_id, func_code, address, values):
        raise NoSuchIdException(f"{device_id}")  # these meters are read only here


class MakerBus:
    """A Modbus TCP gateway on 127.0.0.1:port with maker-layout meters behind it; or, with
    ``serial`` (keyword arguments of pymodbus's ``ModbusSerialServer``: port, baudrate, ...),
    the same meters on an RS-485 line (``port`` is then only a name)."""

    def __init__(self, port: int | str, specs: list[MeterSpec], host: str = "127.0.0.1", serial: dict | None = None):
        for s in specs:
            if s.kind not in LAYOUTS:
                raise ValueError(f"unknown kind {s.kind!r}: one of {', '.join(KINDS)}")
            if not set(s.faults) <= FAULTS:
                raise ValueError(f"unknown fault(s) {set(s.faults) - FAULTS}: one of {sorted(FAULTS)}")
            if {"nan", "nan_volts"} & set(s.faults) and not LAYOUTS[s.kind].float_energy:
                raise ValueError(f"{s.kind} keeps its total as an integer: it cannot hold NaN")
        self.port = port
        self.meters = {s.unit: MakerMeter(s.kind, s.unit, s.energy_kwh, set(s.faults), s.power_w) for s in specs}
        self.requests: list[tuple[int, int, int, int]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"maker-meters-{port}", daemon=True)
        self._thread.start()
        self.server = asyncio.run_coroutine_threadsafe(self._start(host, serial), self._loop).result(10)

    async def _start(self, host, serial):
        devices = [m.device() for m in self.meters.values()]
        server: ModbusSerialServer | ModbusTcpServer
        if serial:
            server = ModbusSerialServer(devices, ignore_missing_devices=True, **serial)
        else:
            server = ModbusTcpServer(devices, address=(host, int(self.port)), ignore_missing_devices=True)
        server.context = _Core(devices, self)
        await server.serve_forever(background=True)
        return server

    def set_faults(self, unit: int, faults: set) -> None:
        """Change a meter's faults while serving (``lenient`` only applies at start)."""
        self.meters[unit].faults = set(faults)

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.server.shutdown(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start_meters(port: int, specs: list[MeterSpec], host: str = "127.0.0.1") -> MakerBus:
    """Serve these meters (one unit id each) on one TCP port."""
    return MakerBus(port, specs, host)


def start_serial_meters(device: str, specs: list[MeterSpec], baudrate: int = 9600, parity: str = "N") -> MakerBus:
    """Serve these meters (one unit id each) on a serial port (one end of a pty pair or an ``rs485_line``)."""
    return MakerBus(device, specs, serial={"port": device, "baudrate": baudrate, "parity": parity})


def start_meter(kind: str, port: int, unit: int = 1, energy_kwh: float = 12_345.6, faults=()) -> MakerBus:
    """Serve one meter of this kind as ``unit`` on ``port``."""
    return MakerBus(port, [MeterSpec(kind, unit, energy_kwh, set(faults))])

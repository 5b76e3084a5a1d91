"""Simulated meters: the site of a config, served by pymodbus, without hardware.

Each simulated meter is a pymodbus ``SimDevice`` with the register layout of its
map (the spans the agent reads, at the meter's startAddress) in the register space
its map's function code names: holding (3) and input (4) registers are separate
blocks, so a map reading the wrong space gets exception 02, as from a real meter.
A map with an identification register (EM24) also holds its model code; it holds plausible
volts, amps and power, and an energy register that rises like a real load (a
daily profile plus noise, integrated over the simulator's clock). A ``LoadProfile`` gives a meter
a building's load instead (a base, a daytime hump on local weekdays, noise): the local stack's demo
meters draw it live and its loaded history comes from the same function, so the two agree. Word orders,
scales and the i-meter 45's UINT32 rollover are encoded exactly as a real meter
would. A ModbusId that no simulated meter has gets no answer at all, as on a real
RS-485 line.

``SiteSimulator`` serves every TCP bus of a config (``simulate`` command);
``serve_serial`` serves meters on a serial port (tests use a pseudo-terminal).
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simcore import SimCore

from .clock import Clock
from .config import Config, Meter
from .regmap import RegisterMap


@dataclass(frozen=True)
class LoadProfile:
    """A building's load in kW: base_kw always, plus up to peak_kw in a daytime hump (06:00 to 20:00
    local time, its top at 13:00) on weekdays, 40% of it at weekends, and noise of 5% of the base."""

    base_kw: float
    peak_kw: float
    zone: str = "UTC"

    @classmethod
    def parse(cls, text: str, zone: str = "UTC") -> "LoadProfile":
        """A profile from "BASE:PEAK" (kW), as the simulate command's --load takes it."""
        try:
            base, peak = (float(part) for part in text.split(":"))
        except ValueError:
            raise ValueError(f"a load is BASE:PEAK in kW (like 40:120), not {text!r}") from None
        if not (0 <= base < 1e6 and 0 <= peak < 1e6):
            raise ValueError(f"a load's kW are from 0 to 1,000,000, not {text!r}")
        ZoneInfo(zone)   # an unknown zone fails here, not at the first reading
        return cls(base, peak, zone)

    def kw(self, epoch: float, rng: random.Random) -> float:
        """The load at an instant (never below 0): the one definition the live meter and its history use."""
        local = datetime.fromtimestamp(epoch, timezone.utc).astimezone(ZoneInfo(self.zone))
        hour = local.hour + local.minute / 60
        daytime = max(0.0, math.sin((hour - 6) / 14 * math.pi)) if 6 <= hour <= 20 else 0.0
        weekday = 1.0 if local.weekday() < 5 else 0.4
        return max(0.0, self.base_kw + self.peak_kw * daytime * weekday + rng.gauss(0, self.base_kw * 0.05))


@dataclass
class SimMeter:
    """One simulated meter: its map, unit id, and an energy total that rises."""

    map: RegisterMap
    modbus_id: int
    start_address: int | None = None
    energy_kwh: float = 1000.0
    load_kw: float | None = None  # None: a realistic varying load; a number: constant (0 freezes)
    profile: LoadProfile | None = None   # a building's load (wins over the default varying one)
    phases: int = 3
    seed: int = 0
    clock: Clock = field(default_factory=Clock)
    reads: int = 0
    id_code: int | None = None  # model code for maps that identify (default: the map's own generation)
    _t: float | None = field(default=None, repr=False)

    def __post_init__(self):
        self._rng = random.Random(self.seed)
        self._base_kw = (6.0 if self.phases == 3 else 1.2) * (0.5 + self._rng.random())
        self._id_req = self.map.identify_request(self.start_address)
        layout = self.map
        if self.map.identify is not None:
            if self.id_code is None:  # the generation whose energy register the map names
                e = self.map.registers[self.map.energy].address
                gen = next(g for g in self.map.identify.generations if g.energy_address == e)
                self.id_code = next(iter(gen.codes))
            found = self.map.identify.generation(self.id_code)
            if found:
                layout = self.map.for_generation(found[0])
        self.layout = layout
        self._regs = layout.located(self.start_address)
        self._plan = layout.plan(self.start_address)

    def set_energy(self, kwh: float) -> None:
        self.advance()
        self.energy_kwh = kwh

    def power_kw(self, t: float) -> float:
        if self.load_kw is not None:
            return self.load_kw
        if self.profile is not None:
            return self.profile.kw(t, self._rng)
        hour = (t % 86400) / 3600.0
        daily = 0.55 + 0.45 * math.sin((hour - 6.0) / 24.0 * 2 * math.pi)  # peak mid-afternoon
        return max(0.0, self._base_kw * daily * (0.9 + 0.2 * self._rng.random()))

    def advance(self) -> None:
        """Integrate the load since the last access."""
        now = self.clock.now()
        if self._t is not None and now > self._t:
            self.energy_kwh += self.power_kw(now) * (now - self._t) / 3600.0
        self._t = now if self._t is None else max(self._t, now)

    def values(self) -> dict[str, float]:
        """Engineering values of every register of the map, energy included."""
        p = self.power_kw(self._t or 0.0)
        out = {}
        for name in self._regs:
            if name == self.map.energy or "kwh" in name:
                v = self.energy_kwh if name in (self.map.energy, "total_kwh") else 0.0
            elif name == "phases":
                v = self.phases
            elif name.startswith("v"):
                v = 230.0 + (sum(map(ord, name)) % 7) * 0.5
            elif name.startswith("i") or name == "current":
                v = p * 1000 / 230.0 / max(1, self.phases)
            elif name.startswith("power_kw"):
                v = p
            elif name.startswith("power"):
                v = p * 1000
            elif name.startswith("freq"):
                v = 50.0
            else:
                v = 0.0
            out[name] = v
        return out

    def words(self) -> dict[int, int]:
        """{wire address: word} of every register, encoded as the meter holds them."""
        out = {}
        for name, v in self.values().items():
            r = self._regs[name]
            for i, w in enumerate(r.encode_raw(r.raw_for(v))):
                out[r.address + i] = w
        if self._id_req is not None:
            out[self._id_req.address] = int(self.id_code) & 0xFFFF  # type: ignore[arg-type]  # set in __post_init__
        return out

    def device(self) -> SimDevice:
        """The pymodbus SimDevice: one block per span the agent's plan reads, in the
        register space of the map's function code (the other space answers exception 02)."""
        self.advance()
        words = self.words()
        spans = [(r.address, r.count) for r in self._plan]
        if self._id_req is not None and not any(a <= self._id_req.address < a + n for a, n in spans):
            spans.append((self._id_req.address, self._id_req.count))
        regs = [SimData(address=a, values=[words.get(x, 0) for x in range(a, a + n)], datatype=DataType.REGISTERS)
                for a, n in sorted(spans)]
        nothing = [SimData(address=0, count=1, datatype=DataType.INVALID)]
        bits = [SimData(address=0, values=False, datatype=DataType.BITS)]
        holding, inputs = (regs, nothing) if self.map.function == 3 else (nothing, regs)
        return SimDevice(id=self.modbus_id, simdata=(bits, list(bits), holding, inputs), action=self._action)

    async def _action(self, function_code, start_address, address, count, registers, set_values):
        """Before each read, refresh the registers from the rising energy."""
        self.reads += 1
        self.advance()
        for a, w in self.words().items():
            i = a - start_address
            if 0 <= i < len(registers):
                registers[i] = w
        return None


class _SilentCore(SimCore):
    """Unknown unit ids get no answer (a real RS-485 line stays silent)."""

    async def async_getValues(self, device_id, func_code, address, count=1):
        if device_id not in self.devices:
            raise NoSuchIdException(f"{device_id}")
        return await super().async_getValues(device_id, func_code, address, count)

    async def async_setValues(self, device_id, func_code, address, values):
        if device_id not in self.devices:
            raise NoSuchIdException(f"{device_id}")
        return await super().async_setValues(device_id, func_code, address, values)


def sim_meter_for(m: Meter, clock: Clock | None = None, seed: int | None = None,
                  energy_kwh: float | None = None, profile: LoadProfile | None = None) -> SimMeter:
    phases = 1 if str(m.NoPhases).strip() == "1" else 3
    seed = seed if seed is not None else sum(map(ord, m.MeterId))
    rng = random.Random(seed)
    return SimMeter(m.map, m.ModbusId, m.startAddress, phases=phases, seed=seed, clock=clock or Clock(),
                    energy_kwh=energy_kwh if energy_kwh is not None else round(rng.uniform(100_000, 900_000), 3),
                    profile=profile)


class _Loop:
    """An asyncio loop in a daemon thread, hosting pymodbus servers."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="modbus-sim", daemon=True)
        self.thread.start()

    def run(self, coro, timeout=10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class SimServer:
    """One running pymodbus server (TCP or serial) with its simulated meters."""

    def __init__(self, meters: list[SimMeter], *, tcp: tuple[str, int] | None = None, serial: dict | None = None):
        self.meters = {m.modbus_id: m for m in meters}
        self._loop = _Loop()
        self.server = self._loop.run(self._start(tcp, serial))

    async def _start(self, tcp, serial):
        devices = [m.device() for m in self.meters.values()]
        server: ModbusTcpServer | ModbusSerialServer
        if tcp:
            server = ModbusTcpServer(devices, address=tcp, ignore_missing_devices=True)
        else:
            server = ModbusSerialServer(devices, ignore_missing_devices=True, **serial)
        server.context = _SilentCore(devices)
        await server.serve_forever(background=True)
        return server

    def stop(self) -> None:
        try:
            self._loop.run(self.server.shutdown())
        finally:
            self._loop.close()


def serve_serial(meters: list[SimMeter], port: str, baudrate: int = 9600, parity: str = "N", stopbits: int = 1) -> SimServer:
    return SimServer(meters, serial={"port": port, "baudrate": baudrate, "parity": parity, "stopbits": stopbits})


class SiteSimulator:
    """Serves, on each TCP bus of a config, the simulated meters of that bus."""

    def __init__(self, cfg: Config, clock: Clock | None = None, bind_host: str | None = None,
                 silent: set[str] | None = None, loads: Mapping[str, LoadProfile] | None = None):
        self.cfg = cfg
        self.silent = set(silent or ())  # meters left out: nothing answers for them (a dead meter)
        loads = loads or {}
        self.meters: dict[str, SimMeter] = {m.MeterId: sim_meter_for(m, clock, profile=loads.get(m.MeterId))
                                            for m in cfg.meters if m.MeterId not in self.silent}
        self.servers: dict[str, SimServer] = {}
        self.bind_host = bind_host
        self.skipped: list[str] = []

    def start(self) -> "SiteSimulator":
        for name, bus in self.cfg.buses.items():
            ms = [self.meters[m.MeterId] for m in self.cfg.meters if m.Port == name and m.MeterId in self.meters]
            if bus.type != "tcp":
                self.skipped.append(name)
                continue
            self.servers[name] = SimServer(ms, tcp=(self.bind_host or bus.host, bus.port))
        return self

    def stop(self) -> None:
        for s in self.servers.values():
            s.stop()
        self.servers.clear()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

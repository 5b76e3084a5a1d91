"""Reading meters over Modbus: one BusReader per bus, one request at a time on it.

A BusReader owns the bus's pymodbus client (serial RTU or TCP) and a lock, reads a
meter's registers in the fewest requests its map allows (``RegisterMap.plan``) and
decodes them. Failures raise ``MeterReadError``; the caller decides what a failure
means for that meter. A read answered with a Modbus exception steps down to smaller
reads (one per contiguous run, then the energy register alone); a total that is
not finite (an Eastron's NaN ``7FC0 0000`` while it starts up) fails the meter. Timeouts and retries come from the bus config: short on
serial buses, so a dead meter costs only its own few hundred milliseconds.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field

from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ModbusException

from . import log
from .config import Bus, Meter
from .regmap import PLAN_LEVELS, Register, RegisterMap, Request, decode_registers

L = log.get("read")


class MeterReadError(Exception):
    """A meter did not answer, answered with a Modbus exception, or gave a value
    that cannot be a reading (not finite, undecodable, unknown model)."""


class _ExceptionAnswer(MeterReadError):
    """The meter answered one request with a Modbus exception (01, 02, 03, 04, ...)."""

    def __init__(self, msg: str, code):
        super().__init__(msg)
        self.code = code


# Exceptions that say "not this request" (illegal function, address, value; device failure on a
# register it lacks): a smaller read may succeed. Busy (05/06) and gateway (0A/0B) answers say
# "not now": the meter fails this poll and keeps its plan.
FALLBACK_CODES = {1, 2, 3, 4}


@dataclass
class MeterValues:
    """Raw and scaled values of one meter read; ``energy_raw`` is the map's total.

    ``plan`` is the read plan that answered (merged | runs | energy); ``model`` the
    identified model where the map has an identification register; ``not_finite``
    names auxiliary values that decoded to NaN/inf (left out of ``scaled``)."""

    raw: dict[str, int | float]
    scaled: dict[str, float]
    energy_raw: int | float
    requests: int
    plan: str = "merged"
    model: str | None = None
    not_finite: list[str] = field(default_factory=list)
    map: RegisterMap | None = None


def make_client(bus: Bus):
    """The pymodbus sync client for a bus."""
    if bus.type == "serial":
        return ModbusSerialClient(
            bus.device, baudrate=bus.baudrate, parity=bus.parity, stopbits=bus.stopbits,
            bytesize=bus.bytesize, timeout=bus.timeout, retries=bus.retries,
            reconnect_delay=0, name=f"bus-{bus.name}",
        )
    return ModbusTcpClient(
        bus.host, port=bus.port, timeout=bus.timeout, retries=bus.retries,
        reconnect_delay=0, name=f"bus-{bus.name}",
    )


class BusReader:
    """Serialises all requests of one bus and turns a meter's map into reads.

    Per meter it remembers, in memory only (a restart or config reload starts over; the
    poller writes the stepped-down plans to the outbox for ``status``):
    the read plan that answered last (merged -> one request per contiguous run ->
    the energy register alone, stepping down when a read is answered with a Modbus
    exception), and the model identified from the map's identification register.
    """

    def __init__(self, bus: Bus, client_factory=make_client):
        self.bus = bus
        self._factory = client_factory
        self._client = None
        self._lock = threading.Lock()
        self.requests = 0  # Modbus requests sent on this bus; a read's share is its MeterValues.requests
        self.plan_level: dict[str, str] = {}  # MeterId -> plan level that works
        self.identified: dict[str, tuple[RegisterMap, str]] = {}  # MeterId -> (generation's map, model)
        self._prepared: dict[tuple, tuple] = {}  # (MeterId, energy address) -> (plans, names per plan, located)

    def _connected(self):
        if self._client is None:
            self._client = self._factory(self.bus)
        if not self._client.connected and not self._client.connect():
            where = self.bus.device or f"{self.bus.host}:{self.bus.port}"
            raise MeterReadError(f"cannot open bus {self.bus.name} ({where})")
        return self._client

    def _request(self, client, req: Request, meter: Meter) -> list[int]:
        fn = client.read_holding_registers if req.function == 3 else client.read_input_registers
        self.requests += 1
        try:
            rr = fn(req.address, count=req.count, device_id=meter.ModbusId)
        except ModbusException as exc:
            if self.bus.type == "tcp":
                self._drop()
            raise MeterReadError(f"no answer reading {req.count} registers at {req.address}: {_short(exc)}") from None
        except OSError as exc:
            self._drop()
            raise MeterReadError(f"bus error: {exc}") from None
        if rr.isError():
            code = getattr(rr, "exception_code", "?")
            raise _ExceptionAnswer(f"modbus exception {code} reading {req.count} registers at {req.address} "
                                   f"(function {req.function})", code)
        regs = list(getattr(rr, "registers", None) or [])
        if len(regs) < req.count:
            raise MeterReadError(f"short answer: {len(regs)} of {req.count} registers at {req.address}")
        return regs[: req.count]

    def _identify(self, client, meter: Meter) -> tuple[RegisterMap, str | None]:
        """The map of this meter's generation (and its model) for maps that identify."""
        m = meter.map
        if m.identify is None:
            return m, None
        if meter.MeterId in self.identified:
            return self.identified[meter.MeterId]
        req = m.identify_request(meter.startAddress)
        assert req is not None  # the map identifies (m.identify is set)
        try:
            words = self._request(client, req, meter)
        except _ExceptionAnswer as exc:
            raise MeterReadError(f"cannot read the model code at {req.address:#06x}: {exc}") from None
        code = Register("id", req.address, m.identify.type).decode_raw(words)
        found = m.identify.generation(int(code))
        if found is None:
            raise MeterReadError(
                f"model code {code} at {req.address:#06x} is not a {m.name} generation this map knows: "
                f"cannot tell which register holds the total")
        gen, model = found
        out = (m.for_generation(gen), f"{model} (code {code}, {gen.name})")
        self.identified[meter.MeterId] = out
        log.event(L, logging.INFO, "meter_identified", meter=meter.MeterId, bus=meter.Port, code=code, model=model,
                  generation=gen.name, energy_address=gen.energy_address)
        return out

    def forget_model(self, meter_id: str) -> None:
        """Read the meter's identification code again at its next read (it may have been swapped)."""
        self.identified.pop(meter_id, None)

    def _prepare(self, meter: Meter, regmap: RegisterMap) -> tuple:
        """(plans, registers each plan covers, located registers) of a meter, computed once."""
        key = (meter.MeterId, regmap.registers[regmap.energy].address)  # one entry per generation
        if key not in self._prepared:
            plans = regmap.plans(meter.startAddress)
            names = {lvl: regmap.names_in(reqs, meter.startAddress) for lvl, reqs in plans.items()}
            self._prepared[key] = (plans, names, regmap.located(meter.startAddress))
        return self._prepared[key]

    def _read_words(self, client, meter: Meter, plans: dict[str, list[Request]]) -> tuple[dict[int, int], str]:
        """Words of the first plan level that answers: ({address: word}, level)."""
        start = self.plan_level.get(meter.MeterId, PLAN_LEVELS[0])
        tried, failed = None, None
        for level in PLAN_LEVELS[PLAN_LEVELS.index(start):]:
            if plans[level] == tried:
                continue  # the same requests as the level that just failed
            tried = plans[level]
            words: dict[int, int] = {}
            try:
                for req in plans[level]:
                    for i, w in enumerate(self._request(client, req, meter)):
                        words[req.address + i] = w
            except _ExceptionAnswer as exc:
                if exc.code not in FALLBACK_CODES:
                    raise
                failed = exc
                if level != PLAN_LEVELS[-1]:
                    log.event(L, logging.WARNING, "read_plan_fallback", meter=meter.MeterId, bus=meter.Port,
                              plan=level, error=str(exc), note="trying smaller reads")
                continue
            if start != level:
                log.event(L, logging.WARNING, "read_plan_kept", meter=meter.MeterId, bus=meter.Port, plan=level,
                          requests=len(plans[level]), note="remembered until the agent restarts")
            self.plan_level[meter.MeterId] = level
            return words, level
        assert failed is not None  # every plan level was tried, the last one failed
        raise failed

    def read(self, meter: Meter) -> MeterValues:
        """Read and decode one meter; any failure raises MeterReadError naming it."""
        with self._lock:
            try:
                client = self._connected()
                before = self.requests
                regmap, model = self._identify(client, meter)
                plans, names, regs = self._prepare(meter, regmap)
                words, level = self._read_words(client, meter, plans)
                sent = self.requests - before
            except MeterReadError:
                self.identified.pop(meter.MeterId, None)  # a swapped meter is identified again
                raise
        try:
            raw = decode_registers(regs, words, names[level])
        except Exception as exc:  # noqa: BLE001 - any decoding problem fails this meter alone
            raise MeterReadError(f"cannot decode the answer: {type(exc).__name__}: {exc}") from None
        e = regs[regmap.energy]
        energy_raw = raw.get(regmap.energy)
        if energy_raw is None:
            raise MeterReadError(f"energy register {regmap.energy} not in the answer")
        if isinstance(energy_raw, float) and not math.isfinite(energy_raw):
            hexw = " ".join(f"{words[a]:04X}" for a in range(e.address, e.address + e.size))
            raise MeterReadError(f"energy register {regmap.energy} at {e.address} is not finite: {energy_raw} ({hexw})")
        bad = [n for n, v in raw.items() if isinstance(v, float) and not math.isfinite(v)]
        raw = {n: v for n, v in raw.items() if n not in bad}
        scaled = {k: v * regs[k].scale for k, v in raw.items()}
        return MeterValues(raw, scaled, energy_raw, sent, plan=level, model=model, not_finite=bad, map=regmap)

    def _drop(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # noqa: BLE001 - closing a broken client must not raise
                pass
            self._client = None

    def close(self) -> None:
        with self._lock:
            self._drop()


def _short(exc: Exception) -> str:
    s = str(exc).replace("Modbus Error: ", "")
    return s[:200]

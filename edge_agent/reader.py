"""Reading meters over Modbus: one BusReader per bus, one request at a time on it.

A BusReader owns the bus's pymodbus client (serial RTU or TCP) and a lock, reads a
meter's registers in the fewest requests its map allows (``RegisterMap.plan``) and
decodes them. Failures raise ``MeterReadError``; the caller decides what a failure
means for that meter. Timeouts and retries come from the bus config: short on
serial buses, so a dead meter costs only its own few hundred milliseconds.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ModbusException

from .config import Bus, Meter


class MeterReadError(Exception):
    """A meter did not answer, or answered with a Modbus exception."""


@dataclass
class MeterValues:
    """Raw and scaled values of one meter read; ``energy_raw`` is the map's total."""

    raw: dict[str, int | float]
    scaled: dict[str, float]
    energy_raw: int | float
    requests: int


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
    """Serialises all requests of one bus and turns a meter's map into reads."""

    def __init__(self, bus: Bus, client_factory=make_client):
        self.bus = bus
        self._factory = client_factory
        self._client = None
        self._lock = threading.Lock()
        self.requests = 0  # requests sent (benchmarks)

    def _connected(self):
        if self._client is None:
            self._client = self._factory(self.bus)
        if not self._client.connected and not self._client.connect():
            where = self.bus.device or f"{self.bus.host}:{self.bus.port}"
            raise MeterReadError(f"cannot open bus {self.bus.name} ({where})")
        return self._client

    def read_words(self, meter: Meter) -> tuple[dict[int, int], int]:
        """All words the meter's map needs: {wire address: word}, requests used."""
        words: dict[int, int] = {}
        plan = meter.map.plan(meter.startAddress)
        with self._lock:
            client = self._connected()
            for req in plan:
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
                    raise MeterReadError(f"modbus exception {code} reading {req.count} registers at {req.address}")
                if len(rr.registers) < req.count:
                    raise MeterReadError(f"short answer: {len(rr.registers)} of {req.count} registers at {req.address}")
                for i, w in enumerate(rr.registers[: req.count]):
                    words[req.address + i] = w
        return words, len(plan)

    def read(self, meter: Meter) -> MeterValues:
        words, n = self.read_words(meter)
        raw = meter.map.decode(words, meter.startAddress)
        regs = meter.map.registers
        scaled = {k: v * regs[k].scale for k, v in raw.items()}
        return MeterValues(raw, scaled, raw[meter.map.energy], n)

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

"""Reading meters over Modbus: one BusReader per bus, one request at a time on it.

A BusReader owns the bus's line (``transport``: serial RTU or TCP, where each answer is
matched to its request) and a lock, and decodes a meter's registers. ``run`` reads only
what it delivers: the energy register (``energy_only``; and the model code on maps that
identify). ``read`` shows the map's other values too, in the fewest requests the map
allows (``RegisterMap.plan``); a read answered with a Modbus exception, or not answered
at all, steps down to smaller reads (one per contiguous run, then the energy register
alone). A total that is not finite (an Eastron's NaN ``7FC0 0000`` while it starts up)
fails the meter. Failures raise ``MeterReadError`` with the line's reason; the caller
decides what a failure means for that meter.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field

from . import log
from .config import Bus, Meter
from .regmap import PLAN_LEVELS, Register, RegisterMap, Request, decode_registers
from .transport import Line, LineError, NoAnswer, Refused, Unavailable, Unsettled, open_line

logger = log.get("read")


class MeterReadError(Exception):
    """A meter did not answer, answered with a Modbus exception, or gave a value
    that cannot be a reading (not finite, undecodable, unknown model)."""


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


class BusReader:
    """Serialises all requests of one bus and turns a meter's map into reads.

    Per meter it remembers, in memory only (a restart or config reload starts over):
    the read plan that answered last for ``read`` (merged -> one request per contiguous
    run -> the energy register alone, stepping down when a read is answered with a
    Modbus exception or not answered), and the model identified from the map's
    identification register.
    """

    def __init__(self, bus: Bus, line_factory=open_line):
        self.bus = bus
        self._factory = line_factory
        self._line: Line | None = None
        self._lock = threading.Lock()
        self.requests = 0  # Modbus requests sent on this bus; a read's share is its MeterValues.requests
        self.plan_level: dict[str, str] = {}  # MeterId -> plan level that works
        self.identified: dict[str, tuple[RegisterMap, str]] = {}  # MeterId -> (generation's map, model)
        self._prepared: dict[tuple, tuple] = {}  # (MeterId, energy address) -> (plans, names per plan, located)

    @property
    def line(self) -> Line:
        """The bus's line (its ``counts`` say what it saw: late answers, garbled bytes, other masters)."""
        if self._line is None:
            self._line = self._factory(self.bus)
        return self._line

    def _request(self, line: Line, req: Request, meter: Meter) -> list[int]:
        """The words of one request; a LineError says why there are none."""
        self.requests += 1
        return line.read(meter.ModbusId, req.function, req.address, req.count)

    def _identify(self, line: Line, meter: Meter) -> tuple[RegisterMap, str | None]:
        """The map of this meter's generation (and its model) for maps that identify."""
        m = meter.map
        if m.identify is None:
            return m, None
        if meter.MeterId in self.identified:
            return self.identified[meter.MeterId]
        req = m.identify_request(meter.startAddress)
        assert req is not None  # the map identifies (m.identify is set)
        try:
            words = self._request(line, req, meter)
        except Refused as exc:
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
        log.event(logger, logging.INFO, "meter_identified", meter=meter.MeterId, bus=meter.Port, code=code, model=model,
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

    def _read_words(self, line: Line, meter: Meter, plans: dict[str, list[Request]],
                    energy_only: bool) -> tuple[dict[int, int], str]:
        """Words of the first plan level that answers: ({address: word}, level). ``energy_only``
        reads the energy level alone and leaves the remembered plan as it is."""
        start = PLAN_LEVELS[-1] if energy_only else self.plan_level.get(meter.MeterId, PLAN_LEVELS[0])
        tried, first_failure = None, None
        for level in PLAN_LEVELS[PLAN_LEVELS.index(start):]:
            if plans[level] == tried:
                continue  # the same requests as the level that just failed
            tried = plans[level]
            words: dict[int, int] = {}
            try:
                for req in plans[level]:
                    for i, w in enumerate(self._request(line, req, meter)):
                        words[req.address + i] = w
            except (Refused, NoAnswer, Unsettled) as exc:
                if isinstance(exc, Refused) and exc.code not in FALLBACK_CODES:
                    raise
                first_failure = first_failure or exc
                if level != PLAN_LEVELS[-1]:
                    log.event(logger, logging.WARNING, "read_plan_fallback", meter=meter.MeterId, bus=meter.Port,
                              plan=level, error=str(exc), note="trying smaller reads")
                continue
            if energy_only:
                return words, level
            if start != level:
                log.event(logger, logging.WARNING, "read_plan_kept", meter=meter.MeterId, bus=meter.Port, plan=level,
                          requests=len(plans[level]), note="remembered until the agent restarts")
            self.plan_level[meter.MeterId] = level
            return words, level
        assert first_failure is not None  # every plan level was tried and failed
        raise first_failure

    def read(self, meter: Meter, energy_only: bool = False) -> MeterValues:
        """Read and decode one meter: the map's registers (``read``), or with ``energy_only`` the
        energy register alone (``run``: what is delivered); a failure raises MeterReadError naming it."""
        with self._lock:
            try:
                line = self.line
                line.open()
                before = self.requests
                regmap, model = self._identify(line, meter)
                plans, names, regs = self._prepare(meter, regmap)
                words, level = self._read_words(line, meter, plans, energy_only)
                sent = self.requests - before
            except Unavailable as exc:  # at the first request, or reconnecting to a gateway
                where = self.bus.device or f"{self.bus.host}:{self.bus.port}"
                raise MeterReadError(f"cannot open bus {self.bus.name} ({where}): {exc}") from None
            except LineError as exc:
                self.identified.pop(meter.MeterId, None)  # a swapped meter is identified again
                raise MeterReadError(str(exc)) from None
            except MeterReadError:
                self.identified.pop(meter.MeterId, None)
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

    def close(self) -> None:
        with self._lock:
            if self._line is not None:
                self._line.close()

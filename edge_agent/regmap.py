"""Register maps: which registers a meter type keeps, how to read and decode them.

A map is a YAML file named after the meter's ``ModbusMap`` (``Priority.ici`` ->
``Priority.ici.yaml``). Shipped maps live in ``edge_agent/maps/``; a site may add or
override maps in the folder named by ``maps_dir`` in its config.

Address notation (per map):

* ``wire``  - addresses are the 0-based protocol addresses sent on the wire.
* ``4xxxx`` - registers are numbered as in many vendor manuals: 1-based holding
  registers prefixed with 4, so wire address = number - 40001 (41143 -> 1142).

A map marked ``relocatable`` names a ``base`` register; the meter's ``startAddress``
is that base in the same numbering minus the 40000 prefix (``base: 41100`` <->
``startAddress: 1100``). A meter configured with another startAddress has every
register shifted by the difference. Non-relocatable maps ignore startAddress.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import yaml
from pymodbus.client.mixin import ModbusClientMixin

SHIPPED_DIR = Path(__file__).parent / "maps"

# type name -> (registers, struct code, pymodbus DATATYPE): pymodbus' own sizes and codes
_DT = ModbusClientMixin.DATATYPE
TYPES: dict[str, tuple[int, str, _DT]] = {
    dt.name.lower(): (dt.value[1], dt.value[0], dt)
    for dt in (_DT.UINT16, _DT.INT16, _DT.UINT32, _DT.INT32, _DT.UINT64, _DT.INT64, _DT.FLOAT32, _DT.FLOAT64)
}
MODBUS_MAX_REGISTERS = 125


class MapError(ValueError):
    """A register map file is missing or malformed."""


@dataclass(frozen=True)
class Register:
    """One value of a map: where it is and how to turn its registers into a number."""

    name: str
    address: int  # wire address for the map's default startAddress
    type: str
    word_order: Literal["big", "little"] = "big"
    scale: float = 1.0
    unit: str = ""
    rollover: bool = False  # a cumulative counter that wraps at its type's range

    @property
    def size(self) -> int:
        return TYPES[self.type][0]

    @property
    def modulus(self) -> int:
        """Number of raw steps before the counter wraps (for rollover registers)."""
        return 1 << (16 * self.size)

    def decode_raw(self, regs: list[int]) -> int | float:
        """Raw (unscaled) value of this register's words, via pymodbus' converter."""
        return ModbusClientMixin.convert_from_registers(  # type: ignore[return-value]  # a number for every type of TYPES
            regs, data_type=TYPES[self.type][2], word_order=self.word_order
        )

    def encode_raw(self, raw: int | float) -> list[int]:
        """Words a meter holds for a raw value (the simulator's side of decode_raw), via
        pymodbus' converter; an integer type takes an integral float (pymodbus would not)."""
        _, code, dt = TYPES[self.type]
        return ModbusClientMixin.convert_to_registers(
            float(raw) if code in "fd" else int(raw), data_type=dt, word_order=self.word_order
        )

    def raw_for(self, value: float) -> int | float:
        """Raw value for a value in engineering units (wrapping counters modulo range)."""
        if TYPES[self.type][1] in "fd":
            return value / self.scale
        raw = round(value / self.scale)
        if self.rollover or self.type.startswith("uint"):
            raw %= self.modulus
        return raw


@dataclass(frozen=True)
class Request:
    """One Modbus read: function code, first wire address, register count."""

    function: int
    address: int
    count: int


@dataclass(frozen=True)
class Generation:
    """One generation of a meter family: its model codes and its energy register."""

    name: str
    codes: dict[int, str]  # identification code -> model name
    energy_address: int  # wire address of the total energy register on this generation


@dataclass(frozen=True)
class Identify:
    """The model-code register of a family and the generations its codes name."""

    address: int
    type: str
    generations: tuple[Generation, ...]

    def generation(self, code: int) -> tuple[Generation, str] | None:
        """(generation, model name) for an identification code, None if unknown."""
        for g in self.generations:
            if code in g.codes:
                return g, g.codes[code]
        return None


PLAN_LEVELS = ("merged", "runs", "energy")  # fallback order of read plans


@dataclass(frozen=True)
class RegisterMap:
    """A meter type's register layout."""

    name: str
    description: str
    function: int
    max_registers: int
    max_gap: int
    energy: str
    registers: dict[str, Register]
    relocatable: bool = False
    default_start: int | None = None  # startAddress that leaves addresses as written
    source: str = ""
    max_power_kw: float | None = None  # plausibility bound for the meter type
    identify: Identify | None = None

    def for_generation(self, gen: Generation) -> "RegisterMap":
        """This map with the energy register where generation ``gen`` keeps it."""
        e = self.registers[self.energy]
        regs = dict(self.registers)
        regs[self.energy] = Register(e.name, gen.energy_address, e.type, e.word_order, e.scale, e.unit, e.rollover)
        return replace(self, registers=regs, identify=None, description=f"{self.description} ({gen.name})")

    def identify_request(self, start_address: int | None = None) -> Request | None:
        """The read of the model-code register (None for maps without one)."""
        if self.identify is None:
            return None
        return Request(self.function, self.identify.address + self.shift_for(start_address), TYPES[self.identify.type][0])

    def plans(self, start_address: int | None = None) -> dict[str, list[Request]]:
        """Read plans by fallback level: merged, one request per contiguous run, energy alone."""
        e = self.located(start_address)[self.energy]
        return {
            "merged": self.plan(start_address),
            "runs": self.plan(start_address, max_gap=0),
            "energy": [Request(self.function, e.address, e.size)],
        }

    def names_in(self, requests: list[Request], start_address: int | None = None) -> list[str]:
        """Registers entirely covered by these requests."""
        out = []
        for n, r in self.located(start_address).items():
            if any(q.address <= r.address and r.address + r.size <= q.address + q.count for q in requests):
                out.append(n)
        return out

    def shift_for(self, start_address: int | None) -> int:
        """Wire-address shift for a meter's startAddress (0 for fixed maps)."""
        if not self.relocatable or start_address is None or self.default_start is None:
            return 0
        return start_address - self.default_start

    def located(self, start_address: int | None) -> dict[str, Register]:
        """Registers at their wire addresses for a meter with this startAddress."""
        shift = self.shift_for(start_address)
        return {
            n: Register(r.name, r.address + shift, r.type, r.word_order, r.scale, r.unit, r.rollover)
            for n, r in self.registers.items()
        }

    def plan(self, start_address: int | None = None, max_gap: int | None = None) -> list[Request]:
        """Fewest reads covering every register: merge neighbours while the span
        stays within max_registers and the hole between them within max_gap."""
        max_gap = self.max_gap if max_gap is None else max_gap
        regs = sorted(self.located(start_address).values(), key=lambda r: r.address)
        out: list[Request] = []
        first: int | None = None  # span [first, last] inclusive
        last = 0
        for r in regs:
            end = r.address + r.size - 1
            if first is not None and (
                r.address - last - 1 <= max_gap and end - first + 1 <= self.max_registers
            ):
                last = max(last, end)
                continue
            if first is not None:
                out.append(Request(self.function, first, last - first + 1))
            first, last = r.address, end
        if first is not None:
            out.append(Request(self.function, first, last - first + 1))
        return out

    def decode(self, words: dict[int, int], start_address: int | None = None) -> dict[str, int | float]:
        """Raw values of every register from {wire address: word}."""
        return decode_registers(self.located(start_address), words)


def decode_registers(regs: dict[str, Register], words: dict[int, int], names=None) -> dict[str, int | float]:
    """Raw values of these located registers (all, or ``names``) from {wire address: word}."""
    return {n: r.decode_raw([words[a] for a in range(r.address, r.address + r.size)])
            for n, r in regs.items() if names is None or n in names}


def _as_int(v, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise MapError(f"{what}: expected an integer, got {v!r}")
    return v


def _wire(notation: str, addr: int, what: str) -> int:
    if notation == "wire":
        if not 0 <= addr <= 65535:
            raise MapError(f"{what}: wire address {addr} out of 0..65535")
        return addr
    if not 40001 <= addr <= 49999 and not 400001 <= addr <= 465536:
        raise MapError(f"{what}: {addr} is not a 4xxxx holding register number")
    return addr - (400001 if addr >= 400001 else 40001)


def parse_map(data: dict, source: str) -> RegisterMap:
    """Validate a map document and build a RegisterMap (errors name the file and key)."""
    if not isinstance(data, dict):
        raise MapError(f"{source}: a map must be a mapping")
    try:
        name = str(data["name"])
        notation = data.get("notation", "wire")
        if notation not in ("wire", "4xxxx"):
            raise MapError(f"{source}: notation must be 'wire' or '4xxxx'")
        function = _as_int(data.get("function", 3), f"{source}: function")
        if function not in (3, 4):
            raise MapError(f"{source}: function must be 3 (holding) or 4 (input)")
        if notation == "4xxxx" and function != 3:
            raise MapError(f"{source}: 4xxxx registers are holding registers (function 3)")
        max_regs = _as_int(data.get("max_registers", MODBUS_MAX_REGISTERS), f"{source}: max_registers")
        if not 1 <= max_regs <= MODBUS_MAX_REGISTERS:
            raise MapError(f"{source}: max_registers must be 1..125")
        max_gap = _as_int(data.get("max_gap", 0), f"{source}: max_gap")
        regs: dict[str, Register] = {}
        raw_regs = data["registers"]
        if not isinstance(raw_regs, dict) or not raw_regs:
            raise MapError(f"{source}: registers must be a non-empty mapping")
        for rname, spec in raw_regs.items():
            what = f"{source}: register {rname}"
            if not isinstance(spec, dict):
                raise MapError(f"{what}: must be a mapping")
            rtype = spec.get("type")
            if rtype not in TYPES:
                raise MapError(f"{what}: type must be one of {', '.join(TYPES)}")
            wo = spec.get("word_order", "big")
            if wo not in ("big", "little"):
                raise MapError(f"{what}: word_order must be big or little")
            scale = spec.get("scale", 1)
            if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale == 0:
                raise MapError(f"{what}: scale must be a non-zero number")
            addr = _wire(notation, _as_int(spec.get("address"), f"{what}: address"), what)
            reg = Register(str(rname), addr, rtype, wo, float(scale), str(spec.get("unit", "")), bool(spec.get("rollover", False)))
            if reg.size > max_regs:
                raise MapError(f"{what}: wider than max_registers")
            regs[str(rname)] = reg
        energy = data["energy"]
        if energy not in regs:
            raise MapError(f"{source}: energy names {energy!r}, not one of its registers")
        max_power_kw = data.get("max_power_kw")
        if max_power_kw is not None and (isinstance(max_power_kw, bool) or not isinstance(max_power_kw, (int, float))
                                         or not math.isfinite(max_power_kw) or max_power_kw <= 0):
            raise MapError(f"{source}: max_power_kw must be a positive number")
        identify = _parse_identify(data.get("identify"), notation, source)
        relocatable = bool(data.get("relocatable", False))
        default_start = None
        if relocatable:
            base = _as_int(data.get("base"), f"{source}: base")
            default_start = base - 40000 if notation == "4xxxx" else base
    except KeyError as exc:
        raise MapError(f"{source}: missing key {exc.args[0]!r}") from None
    return RegisterMap(
        name=name,
        description=str(data.get("description", "")),
        function=function,
        max_registers=max_regs,
        max_gap=max_gap,
        energy=energy,
        registers=regs,
        relocatable=relocatable,
        default_start=default_start,
        source=source,
        max_power_kw=float(max_power_kw) if max_power_kw is not None else None,
        identify=identify,
    )


def _parse_identify(spec, notation: str, source: str) -> Identify | None:
    if spec is None:
        return None
    what = f"{source}: identify"
    if not isinstance(spec, dict):
        raise MapError(f"{what}: must be a mapping")
    rtype = spec.get("type", "uint16")
    if rtype not in ("uint16", "uint32", "int16", "int32"):
        raise MapError(f"{what}: type must be an integer type")
    addr = _wire(notation, _as_int(spec.get("address"), f"{what}: address"), what)
    gens = spec.get("generations")
    if not isinstance(gens, list) or not gens:
        raise MapError(f"{what}: generations must be a non-empty list")
    out, seen = [], set()  # type: list, set[int]
    for i, g in enumerate(gens):
        w = f"{what}: generations[{i}]"
        if not isinstance(g, dict) or not isinstance(g.get("codes"), dict) or not g["codes"]:
            raise MapError(f"{w}: needs a name, codes (code: model) and energy_address")
        codes = {_as_int(c, f"{w}: code"): str(m) for c, m in g["codes"].items()}
        if seen & set(codes):
            raise MapError(f"{w}: code(s) {sorted(seen & set(codes))} already in another generation")
        seen |= set(codes)
        ea = _wire(notation, _as_int(g.get("energy_address"), f"{w}: energy_address"), w)
        out.append(Generation(str(g.get("name", f"generation {i + 1}")), codes, ea))
    return Identify(addr, rtype, tuple(out))


def load_map_file(path: Path) -> RegisterMap:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise MapError(f"{path}: cannot read map: {exc}") from None
    m = parse_map(data, str(path))
    expected = path.name[: -len(path.suffix)]
    if m.name != expected:
        raise MapError(f"{path}: name {m.name!r} differs from the file name {expected!r}")
    return m


def available_maps(maps_dir: str | Path | None = None) -> dict[str, Path]:
    """Map name -> file; a site's maps_dir overrides shipped maps of the same name."""
    found: dict[str, Path] = {}
    for d in [SHIPPED_DIR] + ([Path(maps_dir)] if maps_dir else []):
        if d.is_dir():
            for p in sorted(d.iterdir()):
                if p.suffix in (".yaml", ".yml"):
                    found[p.name[: -len(p.suffix)]] = p
    return found


def load_map(name: str, maps_dir: str | Path | None = None) -> RegisterMap:
    files = available_maps(maps_dir)
    if name not in files:
        raise MapError(f"unknown map {name!r} (known: {', '.join(sorted(files))})")
    return load_map_file(files[name])

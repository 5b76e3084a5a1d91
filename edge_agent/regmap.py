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
from typing import Any, Literal

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
    """A register map file is missing or malformed; one line per problem."""

    def __init__(self, *problems: str):
        super().__init__("\n".join(problems))
        self.problems = problems


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


NOTATIONS = ("wire", "4xxxx")
# The optional keys of a map document and their defaults; a register's are Register's own field defaults.
MAP_DEFAULTS = {"notation": "wire", "function": 3, "max_registers": MODBUS_MAX_REGISTERS, "max_gap": 0,
                "description": "", "relocatable": False}
REGISTER_DEFAULTS = {k: getattr(Register, k) for k in ("word_order", "scale", "unit", "rollover")}
IDENTIFY_DEFAULTS = {"type": "uint16"}
IDENTIFY_TYPES = ("uint16", "uint32", "int16", "int32")


def parse_map(data: Any, source: str) -> RegisterMap:
    """Check a map document, then build its RegisterMap; MapError names every problem (file and key)."""
    problems = check_map(data, source)
    if problems:
        raise MapError(*problems)
    return build_map(data, source)


def check_map(data: Any, source: str) -> list[str]:  # noqa: C901  # one check per key of a map, in the document's order: a list, not a flow
    """Every problem of a map document, each naming the file and the key (none: ``build_map`` may run)."""
    if not isinstance(data, dict):
        return [f"{source}: a map must be a mapping"]
    d = {**MAP_DEFAULTS, **data}
    out = [f"{source}: missing key {k!r}" for k in ("name", "registers", "energy") if k not in data]
    notation = d["notation"] if d["notation"] in NOTATIONS else None  # None: addresses checked as integers only
    if notation is None:
        out.append(f"{source}: notation must be 'wire' or '4xxxx'")
    function = d["function"]
    if problem := _int_problem(function, f"{source}: function"):
        out.append(problem)
    elif function not in (3, 4):
        out.append(f"{source}: function must be 3 (holding) or 4 (input)")
    elif notation == "4xxxx" and function != 3:
        out.append(f"{source}: 4xxxx registers are holding registers (function 3)")
    max_regs = d["max_registers"]
    if problem := _int_problem(max_regs, f"{source}: max_registers"):
        out.append(problem)
        max_regs = None
    elif not 1 <= max_regs <= MODBUS_MAX_REGISTERS:
        out.append(f"{source}: max_registers must be 1..{MODBUS_MAX_REGISTERS}")
        max_regs = None
    if problem := _int_problem(d["max_gap"], f"{source}: max_gap"):
        out.append(problem)
    regs = data.get("registers")
    if "registers" in data and (not isinstance(regs, dict) or not regs):
        out.append(f"{source}: registers must be a non-empty mapping")
    elif isinstance(regs, dict):
        for rname, spec in regs.items():
            out += _register_problems(f"{source}: register {rname}", spec, notation, max_regs)
        energy = data.get("energy")
        if "energy" in data and (not isinstance(energy, str) or energy not in {str(n) for n in regs}):
            out.append(f"{source}: energy names {energy!r}, not one of its registers")
    mpk = data.get("max_power_kw")
    if mpk is not None and (isinstance(mpk, bool) or not isinstance(mpk, (int, float))
                            or not math.isfinite(mpk) or mpk <= 0):
        out.append(f"{source}: max_power_kw must be a positive number")
    out += _identify_problems(data.get("identify"), notation, source)
    if d["relocatable"] and (problem := _int_problem(data.get("base"), f"{source}: base")):
        out.append(problem)
    return out


def _register_problems(what: str, spec: Any, notation: str | None, max_regs: int | None) -> list[str]:
    if not isinstance(spec, dict):
        return [f"{what}: must be a mapping"]
    s = {**REGISTER_DEFAULTS, **spec}
    out = []
    rtype = s.get("type")
    if not isinstance(rtype, str) or rtype not in TYPES:
        out.append(f"{what}: type must be one of {', '.join(TYPES)}")
    elif max_regs is not None and TYPES[rtype][0] > max_regs:
        out.append(f"{what}: wider than max_registers")
    if s["word_order"] not in ("big", "little"):
        out.append(f"{what}: word_order must be big or little")
    scale = s["scale"]
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale == 0:
        out.append(f"{what}: scale must be a non-zero number")
    if problem := _address_problem(notation, spec.get("address"), what):
        out.append(problem)
    return out


def _identify_problems(spec: Any, notation: str | None, source: str) -> list[str]:  # noqa: C901  # one check per field of a map's identify block, in order
    if spec is None:
        return []
    what = f"{source}: identify"
    if not isinstance(spec, dict):
        return [f"{what}: must be a mapping"]
    out = []
    if spec.get("type", IDENTIFY_DEFAULTS["type"]) not in IDENTIFY_TYPES:
        out.append(f"{what}: type must be an integer type")
    if problem := _address_problem(notation, spec.get("address"), what):
        out.append(problem)
    gens = spec.get("generations")
    if not isinstance(gens, list) or not gens:
        return out + [f"{what}: generations must be a non-empty list"]
    seen: set[int] = set()
    for i, g in enumerate(gens):
        w = f"{what}: generations[{i}]"
        if not isinstance(g, dict) or not isinstance(g.get("codes"), dict) or not g["codes"]:
            out.append(f"{w}: needs a name, codes (code: model) and energy_address")
            continue
        codes = set()
        for code in g["codes"]:
            if problem := _int_problem(code, f"{w}: code"):
                out.append(problem)
            else:
                codes.add(code)
        if seen & codes:
            out.append(f"{w}: code(s) {sorted(seen & codes)} already in another generation")
        seen |= codes
        if problem := _address_problem(notation, g.get("energy_address"), w, "energy_address"):
            out.append(problem)
    return out


def _int_problem(v: Any, what: str) -> str | None:
    if isinstance(v, bool) or not isinstance(v, int):
        return f"{what}: expected an integer, got {v!r}"
    return None


def _address_problem(notation: str | None, v: Any, what: str, key: str = "address") -> str | None:
    """Why ``v`` is not a register address in this notation (None: not known, integer only), or None."""
    if problem := _int_problem(v, f"{what}: {key}"):
        return problem
    if notation == "wire" and not 0 <= v <= 65535:
        return f"{what}: wire address {v} out of 0..65535"
    if notation == "4xxxx" and not 40001 <= v <= 49999 and not 400001 <= v <= 465536:
        return f"{what}: {v} is not a 4xxxx holding register number"
    return None


def build_map(data: dict, source: str) -> RegisterMap:
    """The RegisterMap of a document ``check_map`` found no problem in."""
    d = {**MAP_DEFAULTS, **data}
    notation = d["notation"]
    mpk = data.get("max_power_kw")
    return RegisterMap(
        name=str(data["name"]),
        description=str(d["description"]),
        function=d["function"],
        max_registers=d["max_registers"],
        max_gap=d["max_gap"],
        energy=data["energy"],
        registers={str(n): _build_register(str(n), spec, notation) for n, spec in data["registers"].items()},
        relocatable=bool(d["relocatable"]),
        default_start=_wire_base(notation, data["base"]) if d["relocatable"] else None,
        source=source,
        max_power_kw=None if mpk is None else float(mpk),
        identify=None if data.get("identify") is None else _build_identify(data["identify"], notation),
    )


def _build_register(name: str, spec: dict, notation: str) -> Register:
    s = {**REGISTER_DEFAULTS, **spec}
    return Register(name, _wire(notation, spec["address"]), s["type"], s["word_order"], float(s["scale"]),
                    str(s["unit"]), bool(s["rollover"]))


def _build_identify(spec: dict, notation: str) -> Identify:
    gens = tuple(
        Generation(str(g.get("name", f"generation {i + 1}")), {c: str(m) for c, m in g["codes"].items()},
                   _wire(notation, g["energy_address"]))
        for i, g in enumerate(spec["generations"])
    )
    return Identify(_wire(notation, spec["address"]), spec.get("type", IDENTIFY_DEFAULTS["type"]), gens)


def _wire(notation: str, addr: int) -> int:
    """The wire address of a checked register address."""
    if notation == "wire":
        return addr
    return addr - (400001 if addr >= 400001 else 40001)


def _wire_base(notation: str, base: int) -> int:
    """The startAddress that leaves a relocatable map's addresses as written."""
    return base - 40000 if notation == "4xxxx" else base


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

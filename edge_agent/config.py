"""Agent configuration: one YAML file, validated completely at start.

Loading is two steps, as in Telegraf's modbus input: ``check`` walks the whole
document and collects every problem, each naming the file, the section or meter and
the field, so a site engineer fixes them all in one go without reading code; ``build``
then constructs the Config from the checked document and validates nothing.
``SETTINGS`` is the one table of the optional values' defaults (and lowest values):
``build``, and the defaults of ``Sender`` and ``Outbox``, read them there. The API key
is held in a ``Secret`` whose repr never shows it, so dumping the config cannot leak it.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import json
import math
import os
import re
import stat
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from .regmap import MapError, RegisterMap, load_map

KEY_ENV = "INTELLIMETER_API_KEY"
MAX_BATCH = 1000  # readings per POST /data the cloud takes at most
POINT_FIELDS = ("MeterId", "ModbusId", "Port", "NoPhases", "MeterType", "ModbusMap", "SaveEvery", "startAddress")
# The API key's documented form (the cloud makes no other): four groups of ten lowercase hex digits.
KEY_FORM = re.compile(r"[0-9a-f]{10}(?:-[0-9a-f]{10}){3}")
NAME_MAX = 64  # the cloud refuses a longer MeterId; it trims and composes (NFC) names before comparing them


@dataclass(frozen=True)
class Setting:
    """An optional value of agent.yaml: its kind, its default, the lowest or the only values it may take."""

    kind: type  # int, float or str
    default: Any
    lo: float | None = None
    choices: tuple[str, ...] = ()


# The one table of defaults: section -> key -> Setting. A bus reads the section named by its type.
SETTINGS: dict[str, dict[str, Setting]] = {
    "cloud": {
        "batch_size": Setting(int, 500, 1),  # readings per POST /data (capped at MAX_BATCH)
        "timeout": Setting(float, 30.0, 0.01),  # seconds for one HTTP request
        "backoff_initial": Setting(float, 1.0, 0.001),  # first retry delay (s), doubling per failure
        "backoff_max": Setting(float, 300.0, 0.001),  # longest retry delay (s)
    },
    "agent": {
        "max_pending": Setting(int, 7_000_000, 1),  # > 1 year of 5-minute readings for 64 meters (6.73 M)
        "retention_days": Setting(int, 14, 1),  # delivered readings kept locally for audit
        "meter_backoff_max_minutes": Setting(int, 30, 0),  # a failing meter is tried at least this often
    },
    "serial": {
        "baudrate": Setting(int, 9600, 300),
        "parity": Setting(str, "N", choices=("N", "E", "O")),
        "stopbits": Setting(int, 1, 1),
        "bytesize": Setting(int, 8, 5),
        "timeout": Setting(float, 0.5, 0.01),  # the least a request waits (s); more where the line needs it
        "retries": Setting(int, 1, 0),
        "turnaround_ms": Setting(float, 100.0, 0),  # the slowest meter's time from a request to its answer
    },
    "tcp": {
        "port": Setting(int, 502, 1),
        "timeout": Setting(float, 1.0, 0.01),
        "retries": Setting(int, 1, 0),
    },
}
BUS_TYPES = ("serial", "tcp")


def default(section: str, key: str) -> Any:
    """The default of one optional value of SETTINGS (what Sender and Outbox use when not told)."""
    return SETTINGS[section][key].default


class ConfigError(ValueError):
    """The configuration cannot be used; one line per problem says where and why."""

    def __init__(self, *problems: str):
        super().__init__("\n".join(problems))
        self.problems = problems


class Secret(str):
    """A string that never shows itself in repr (logs, tracebacks, config dumps)."""

    def __repr__(self) -> str:
        return "'***'"


@dataclass(frozen=True)
class Bus:
    """One Modbus line; the fields of the other bus type keep their blanks."""

    name: str
    type: str  # serial | tcp
    timeout: float
    retries: int
    device: str = ""  # serial
    baudrate: int = 0
    parity: str = ""
    stopbits: int = 0
    bytesize: int = 0
    turnaround_ms: float = 0.0
    host: str = ""  # tcp
    port: int = 0


@dataclass(frozen=True)
class Meter:
    MeterId: str
    ModbusId: int
    Port: str
    NoPhases: str
    MeterType: str
    ModbusMap: str
    SaveEvery: int
    startAddress: int | None
    map: RegisterMap = field(repr=False, compare=False)
    max_power_kw: float | None = None  # plausibility bound; None: the map's max_power_kw

    def power_bound_kw(self) -> float | None:
        """The most power this meter can carry (kW): its own bound, else its map's."""
        return self.max_power_kw if self.max_power_kw is not None else self.map.max_power_kw

    def point(self) -> dict:
        """The fields of PUT /point for this meter."""
        return {k: getattr(self, k) for k in POINT_FIELDS if getattr(self, k) is not None}

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.point(), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Config:
    path: str
    url: str
    key: Secret | None
    buffer: str
    maps_dir: str | None
    buses: dict[str, Bus]
    meters: list[Meter]
    key_error: str | None  # why cloud.key_file could not be read (only `run` and `check` need the key)
    # the optional values: their defaults are in SETTINGS
    batch_size: int
    http_timeout: float
    backoff_initial: float
    backoff_max: float
    max_pending: int
    retention_days: int
    meter_backoff_max_minutes: int

    def require_key(self) -> Secret:
        if self.key_error:
            raise ConfigError(self.key_error)
        if not self.key:
            raise ConfigError(
                f"{self.path}: cloud: no API key: set cloud.key, cloud.key_file or the {KEY_ENV} environment variable"
            )
        return self.key

    def meter(self, name: str) -> Meter:
        for m in self.meters:
            if m.MeterId == name:
                return m
        raise ConfigError(f"{self.path}: no meter named {name!r}")


def url_problem(url: str) -> str | None:
    """Why the agent must not send its key to this URL, or None.

    https:// only; plain http:// only to this machine (loopback: a local test API or
    a TLS-terminating proxy on the box), since the key travels in a header."""
    try:
        u = urlsplit(url)
        u.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        return f"not a valid URL ({exc}): {url!r}"
    if u.scheme not in ("http", "https") or not u.hostname:
        return f"must be an https:// URL, got {url!r}"
    if u.username or u.password:
        return "must not carry credentials (the key goes in cloud.key or cloud.key_file)"
    if u.query or u.fragment:
        return f"must be the API's base URL, without ?query or #fragment, got {url!r}"
    if u.scheme == "http" and not _loopback(u.hostname):
        return (f"http:// is allowed only for a loopback host (localhost, 127.0.0.0/8, ::1): the API key would "
                f"cross the network in clear text; use https://, got {url!r}")
    return None


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read_key(cloud: dict, path: str) -> tuple[Secret | None, str | None]:
    """The API key (cloud.key, else cloud.key_file, else the environment), or why it cannot be used.

    Only ``run`` and ``check`` need the key, so a problem is kept for ``require_key`` rather than raised.
    The key file must hold the key alone on one line, in the documented form, and no user of the box
    but its owner and group may read it (mode 0640, root:intellimeter). No message shows the key."""
    if cloud.get("key"):
        return _key_in_form(str(cloud["key"]).strip(), f"{path}: cloud: field 'key'")
    if cloud.get("key_file"):
        kf = Path(str(cloud["key_file"]))
        if not kf.is_absolute():
            kf = Path(path).parent / kf
        where = f"{path}: cloud: field 'key_file'"
        try:
            raw = kf.read_bytes()
            mode = kf.stat().st_mode
        except OSError as exc:  # only `run` needs the key: it fails then; read/status work
            return None, f"{where}: cannot read {kf}: {exc.strerror}"
        if mode & stat.S_IROTH:
            return None, (f"{where}: {kf} may be read by every user of the box (mode {stat.S_IMODE(mode):04o}): "
                          f"chmod 0640, owner root, group intellimeter")
        if raw.startswith(b"\xef\xbb\xbf"):
            return None, f"{where}: {kf} starts with a byte-order mark (an editor's UTF-8 BOM): save it as plain text"
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            return None, f"{where}: {kf} holds characters that are not ASCII: the key is hex digits and '-'"
        lines = [line for line in text.splitlines() if line.strip()]
        if len(lines) > 1:
            return None, f"{where}: {kf} holds {len(lines)} lines: it must hold the key alone, on one line"
        return _key_in_form(text.strip(), f"{where}: {kf}")
    env = os.environ.get(KEY_ENV, "").strip()
    return _key_in_form(env, f"{path}: cloud: the {KEY_ENV} environment variable") if env else (None, None)


def _key_in_form(key: str, where: str) -> tuple[Secret | None, str | None]:
    if KEY_FORM.fullmatch(key):
        return Secret(key), None
    return None, (f"{where}: not an API key: the key is four groups of ten lowercase hex digits separated by '-' "
                  f"(xxxxxxxxxx-xxxxxxxxxx-xxxxxxxxxx-xxxxxxxxxx, as PUT /keys shows it)")


class LeadingZero(int):
    """An integer written with a leading zero (``010``): YAML 1.1 reads it as octal (8), which is
    never what a site engineer meant; ``check`` names it with the text as written."""

    text: str

    def __new__(cls, value: int, text: str):
        out = super().__new__(cls, value)
        out.text = text
        return out


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, keeping the text of integers written with a leading zero."""

    def construct_yaml_int(self, node):
        value = super().construct_yaml_int(node)
        text = str(node.value)
        if re.fullmatch(r"[-+]?0[0-7_]+", text) and value != 0:
            return LeadingZero(value, text)
        return value


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


def load_config(path: str | Path) -> Config:
    """Read agent.yaml, check it whole, then build the Config; ConfigError names every problem."""
    path = str(path)
    try:
        data = yaml.load(Path(path).read_text(), Loader=_Loader)  # noqa: S506 - a SafeLoader
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    problems, maps = check(data, path)
    if problems:
        raise ConfigError(*problems)
    return build(data, path, maps)


# -- check: every problem of a document, nothing built -----------------------------------------------

def check(data: Any, path: str) -> tuple[list[str], dict[str, RegisterMap]]:  # noqa: C901  # one check per field of the config, in the document's order: a list, not a flow
    """Every problem of a config document, each naming the file, the place and the field (none: ``build``
    may run), and the register maps its meters name (loaded to check them; ``build`` takes them)."""
    if not isinstance(data, dict):
        return [f"{path}: the config must be a mapping"], {}
    c = _Check(path)
    c.keys(data, "top level", TOP_KEYS)
    cloud = data.get("cloud")
    if not isinstance(cloud, dict):
        c.add("cloud", "cloud", "missing (needs url and key)")
    else:
        c.keys(cloud, "cloud", CLOUD_KEYS + tuple(SETTINGS["cloud"]))
        if c.text(cloud, "cloud", "url", required=True):
            problem = url_problem(str(cloud["url"]))
            if problem:
                c.add("cloud", "url", problem)
        c.settings(cloud, "cloud", "cloud")
    c.text(data, "top level", "buffer", required=True)
    maps_dir = None
    if c.text(data, "top level", "maps_dir"):
        maps_dir = _beside(path, str(data["maps_dir"]))
        if not Path(maps_dir).is_dir():
            c.add("top level", "maps_dir", f"{maps_dir} is not a folder")
    buses = data.get("buses")
    bus_names: list[str] | None = None  # None: meters' Port cannot be checked
    if not isinstance(buses, dict) or not buses:
        c.add("top level", "buses", "missing or empty")
    else:
        bus_names = [str(n) for n in buses]
        for name, bus in buses.items():
            _check_bus(c, str(name), bus)
        _check_shared_devices(c, buses)
    meters = data.get("meters")
    if not isinstance(meters, list) or not meters:
        c.add("top level", "meters", "missing or empty")
    else:
        for i, m in enumerate(meters):
            _check_meter(c, i, m, bus_names, maps_dir)
        _check_names(c, meters)
        _check_unit_ids(c, meters)
    agent = data.get("agent") or {}
    if not isinstance(agent, dict):
        c.problems.append(f"{path}: agent: must be a mapping")
    else:
        c.keys(agent, "agent", tuple(SETTINGS["agent"]))
        c.settings(agent, "agent", "agent")
    return c.problems, c.maps


TOP_KEYS = ("cloud", "buffer", "maps_dir", "agent", "buses", "meters")
CLOUD_KEYS = ("url", "key", "key_file")
METER_KEYS = POINT_FIELDS + ("max_power_kw",)


def _where(i: int, d: Any) -> str:
    name = d.get("MeterId") if isinstance(d, dict) else None
    return f"meter {name!r} (meters[{i}])" if name else f"meters[{i}]"


def _check_names(c: "_Check", meters: list) -> None:
    """MeterIds as the cloud sees them: it trims them and composes accents (NFC) before comparing, and
    refuses more than 64 characters or control characters. Two names it would take for one meter, or one
    it refuses, are found here rather than as readings of two meters merged (or refused) in the cloud."""
    seen: dict[str, tuple[int, str]] = {}
    for i, m in enumerate(meters):
        if not isinstance(m, dict) or not c.valid_text(m, "MeterId") or isinstance(m["MeterId"], LeadingZero):
            continue
        raw = str(m["MeterId"])
        name = unicodedata.normalize("NFC", raw.strip())
        if not name:
            c.add(_where(i, m), "MeterId", "blank")
            continue
        if len(name) > NAME_MAX:
            c.add(_where(i, m), "MeterId", f"{len(name)} characters: the cloud refuses names over {NAME_MAX}")
        if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") for ch in name):
            c.add(_where(i, m), "MeterId", "holds a control or invisible character: the cloud refuses it")
        if name in seen:
            j, other = seen[name]
            why = "duplicate" if other == raw else (
                f"the cloud takes {ascii(raw)} and {ascii(other)} for one meter (it trims spaces and composes "
                f"accents, NFC)")
            c.add(_where(i, m), "MeterId", f"{why}: also meters[{j}]")
            continue
        seen[name] = (i, raw)


def _check_unit_ids(c: "_Check", meters: list) -> None:
    """Every meter of a bus answers its own ModbusId: two with one id answer each other's requests."""
    seen: dict[tuple[str, int], int] = {}
    for i, m in enumerate(meters):
        if not isinstance(m, dict) or not c.valid_text(m, "Port"):
            continue
        uid = m.get("ModbusId")
        if not isinstance(uid, int) or isinstance(uid, (bool, LeadingZero)):
            continue
        key = (str(m["Port"]), uid)
        if key in seen:
            j = seen[key]
            c.add(_where(i, m), "ModbusId", f"{uid} is also the ModbusId of {_where(j, meters[j])} on bus {key[0]!r}: "
                                            f"every meter of a bus needs its own")
            continue
        seen[key] = i


def _check_shared_devices(c: "_Check", buses: dict) -> None:
    """Two serial buses on one port would send two masters' requests down one line."""
    seen: dict[str, str] = {}
    for name, d in buses.items():
        if not isinstance(d, dict) or d.get("type") != "serial" or not c.valid_text(d, "device"):
            continue
        dev = os.path.realpath(str(d["device"]))  # /dev/serial/by-id/... and /dev/ttyUSB0 may be one port
        if dev in seen:
            c.add(f"bus {str(name)!r}", "device", f"{d['device']} is the port of bus {seen[dev]!r} too: one port is "
                                                  f"one bus (put its meters on bus {seen[dev]!r})")
            continue
        seen[dev] = str(name)


class _Check:
    """The problems found in one config file so far, and the register maps loaded to check meters."""

    def __init__(self, path: str):
        self.path = path
        self.problems: list[str] = []
        self.maps: dict[str, RegisterMap] = {}
        self.map_problems: dict[str, tuple[str, ...]] = {}

    def add(self, where: str, fld: str, msg: str) -> None:
        self.problems.append(f"{self.path}: {where}: field '{fld}': {msg}")

    @staticmethod
    def valid_text(d: dict, fld: str) -> bool:
        v = d.get(fld)
        return v is not None and v != "" and not isinstance(v, bool) and isinstance(v, (str, int))

    def keys(self, d: dict, where: str, known: tuple[str, ...]) -> None:
        """Name each key this place does not have (a misspelled optional key would be ignored silently)."""
        lower = {k.lower(): k for k in known}
        for key in d:
            k = str(key)
            if k in known:
                continue
            close = difflib.get_close_matches(k.lower(), list(lower), n=1, cutoff=0.75)
            self.add(where, k, f"unknown key: did you mean {lower[close[0]]!r}?" if close else
                     f"unknown key (the keys here: {', '.join(known)})")

    def text(self, d: dict, where: str, fld: str, required: bool = False, choices: tuple[str, ...] = ()) -> bool:
        """Check a string field (a number is taken as its text); True when it is given and valid."""
        v = d.get(fld)
        if v is None or v == "":
            if required:
                self.add(where, fld, "missing")
            return False
        if isinstance(v, LeadingZero):
            self.add(where, fld, f"written {v.text}, which YAML reads as the number {int(v)} (octal): "
                                 f"quote it ('{v.text}') if that is the text you meant")
            return False
        if not self.valid_text(d, fld):
            self.add(where, fld, f"expected a string, got {v!r}")
            return False
        if choices and str(v) not in choices:
            self.add(where, fld, f"must be {', '.join(choices[:-1])} or {choices[-1]}, got {str(v)!r}")
            return False
        return True

    def number(self, d: dict, where: str, fld: str, kind: type, lo: float | None = None,
               required: bool = False) -> bool:
        """Check a number field (an integer where kind is int); True when it is given and valid."""
        v = d.get(fld)
        if v is None:
            if required:
                self.add(where, fld, "missing")
            return False
        if isinstance(v, LeadingZero):
            decimal = v.text.lstrip("+-0_") or "0"
            self.add(where, fld, f"written {v.text}: YAML reads a number with a leading 0 as octal, {int(v)}; write "
                                 + (decimal if decimal == str(int(v)) else f"{decimal} (or {int(v)} if octal was meant)"))
            return False
        if isinstance(v, str) and re.fullmatch(r"[-+]?0[0-9_]+", v):
            self.add(where, fld, f"written {v}: YAML reads a number with a leading 0 as text (not octal, it has "
                                 f"an 8 or 9); write {v.lstrip('+-0_') or '0'}")
            return False
        ok = isinstance(v, int) if kind is int else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok:
            self.add(where, fld, f"expected {'an integer' if kind is int else 'a number'}, got {v!r}")
            return False
        if lo is not None and v < lo:
            self.add(where, fld, f"must be >= {lo}, got {v!r}")
            return False
        return True

    def settings(self, d: dict, where: str, section: str) -> None:
        """Check the optional values of one SETTINGS section."""
        for key, s in SETTINGS[section].items():
            if s.kind is str:
                self.text(d, where, key, choices=s.choices)
            else:
                self.number(d, where, key, s.kind, s.lo)

    def map_problems_of(self, name: str, maps_dir: str | None) -> tuple[str, ...]:
        """Why the map of this name cannot be used (loaded once per name), or nothing."""
        if name not in self.maps and name not in self.map_problems:
            try:
                self.maps[name] = load_map(name, maps_dir)
            except MapError as exc:
                self.map_problems[name] = exc.problems
        return self.map_problems.get(name, ())


def _check_bus(c: _Check, name: str, d: Any) -> None:
    where = f"bus {name!r}"
    if not isinstance(d, dict):
        c.problems.append(f"{c.path}: {where}: must be a mapping")
        return
    if not c.text(d, where, "type", required=True, choices=BUS_TYPES):
        return
    btype = str(d["type"])
    line = "device" if btype == "serial" else "host"
    c.keys(d, where, ("type", line) + tuple(SETTINGS[btype]))
    c.text(d, where, line, required=True)
    c.settings(d, where, btype)


def _check_meter(c: _Check, i: int, d: Any, bus_names: list[str] | None, maps_dir: str | None) -> None:
    if not isinstance(d, dict):
        c.problems.append(f"{c.path}: meters[{i}]: must be a mapping")
        return
    where = _where(i, d)
    c.keys(d, where, METER_KEYS)
    c.text(d, where, "MeterId", required=True)
    if c.number(d, where, "ModbusId", int, lo=1, required=True) and d["ModbusId"] > 247:
        c.add(where, "ModbusId", f"must be 1..247, got {d['ModbusId']}")
    if c.text(d, where, "Port", required=True) and bus_names is not None and str(d["Port"]) not in bus_names:
        c.add(where, "Port", f"unknown bus {str(d['Port'])!r} (buses: {', '.join(bus_names) or 'none'})")
    if c.text(d, where, "ModbusMap", required=True):
        for problem in c.map_problems_of(str(d["ModbusMap"]), maps_dir):
            c.add(where, "ModbusMap", problem)
    if c.number(d, where, "SaveEvery", int, lo=1, required=True) and d["SaveEvery"] > 1440:
        c.add(where, "SaveEvery", "must be at most 1440 minutes (one day)")
    c.text(d, where, "NoPhases", required=True)
    c.text(d, where, "MeterType", required=True)
    c.number(d, where, "startAddress", int, lo=0)
    if c.number(d, where, "max_power_kw", float) and not 0 < d["max_power_kw"] < math.inf:
        c.add(where, "max_power_kw", f"must be a positive number of kW, got {float(d['max_power_kw'])!r}")


# -- build: the Config of a checked document ---------------------------------------------------------

def build(data: dict, path: str, maps: dict[str, RegisterMap]) -> Config:
    """The Config of a document ``check`` found no problem in (``maps``: the maps it loaded)."""
    cloud = data["cloud"]
    net = _settings(cloud, "cloud")
    agent = _settings(data.get("agent") or {}, "agent")
    key, key_error = _read_key(cloud, path)
    maps_dir = _text(data, "maps_dir")
    return Config(
        path=path,
        url=str(cloud["url"]).rstrip("/"),
        key=key,
        key_error=key_error,
        buffer=_beside(path, str(data["buffer"])),
        maps_dir=_beside(path, maps_dir) if maps_dir else None,
        buses={str(n): _build_bus(str(n), b) for n, b in data["buses"].items()},
        meters=[_build_meter(m, maps) for m in data["meters"]],
        batch_size=min(MAX_BATCH, net["batch_size"]),
        http_timeout=net["timeout"],
        backoff_initial=net["backoff_initial"],
        backoff_max=net["backoff_max"],
        max_pending=agent["max_pending"],
        retention_days=agent["retention_days"],
        meter_backoff_max_minutes=agent["meter_backoff_max_minutes"],
    )


def _build_bus(name: str, d: dict) -> Bus:
    btype = str(d["type"])
    line: dict[str, Any] = {"device": str(d["device"])} if btype == "serial" else {"host": str(d["host"])}
    return Bus(name, btype, **line, **_settings(d, btype))


def _build_meter(d: dict, maps: dict[str, RegisterMap]) -> Meter:
    mapname = str(d["ModbusMap"])
    return Meter(
        MeterId=str(d["MeterId"]),
        ModbusId=int(d["ModbusId"]),
        Port=str(d["Port"]),
        NoPhases=str(d["NoPhases"]),
        MeterType=str(d["MeterType"]),
        ModbusMap=mapname,
        SaveEvery=int(d["SaveEvery"]),
        startAddress=None if d.get("startAddress") is None else int(d["startAddress"]),
        map=maps[mapname],
        max_power_kw=None if d.get("max_power_kw") is None else float(d["max_power_kw"]),
    )


def _settings(d: dict, section: str) -> dict[str, Any]:
    """The optional values of one SETTINGS section: as given, else their defaults."""
    out = {}
    for key, s in SETTINGS[section].items():
        v = d.get(key)
        out[key] = s.default if v is None or v == "" else s.kind(v)
    return out


def _text(d: dict, fld: str) -> str | None:
    v = d.get(fld)
    return None if v is None or v == "" else str(v)


def _beside(config_path: str, p: str) -> str:
    """A path from the config: relative ones are relative to the config file's folder."""
    return p if Path(p).is_absolute() else str(Path(config_path).parent / p)

"""Agent configuration: one YAML file, validated completely at start.

Any error stops the agent with a message naming the file, the meter and the field,
so a site engineer can fix it without reading code. The API key is held in a
``Secret`` whose repr never shows it, so dumping the config cannot leak it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from .regmap import MapError, RegisterMap, load_map

KEY_ENV = "INTELLIMETER_API_KEY"
DEFAULT_MAX_PENDING = 7_000_000  # > 1 year of 5-minute readings for 64 meters (6.73 M)
POINT_FIELDS = ("MeterId", "ModbusId", "Port", "NoPhases", "MeterType", "ModbusMap", "SaveEvery", "startAddress")


class ConfigError(ValueError):
    """The configuration cannot be used; the message says where and why."""


class Secret(str):
    """A string that never shows itself in repr (logs, tracebacks, config dumps)."""

    def __repr__(self) -> str:
        return "'***'"


@dataclass(frozen=True)
class Bus:
    name: str
    type: str  # serial | tcp
    device: str = ""
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8
    host: str = ""
    port: int = 502
    timeout: float = 0.5
    retries: int = 1


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
    batch_size: int = 500
    http_timeout: float = 30.0
    backoff_initial: float = 1.0
    backoff_max: float = 300.0
    max_pending: int = DEFAULT_MAX_PENDING
    retention_days: int = 14
    meter_backoff_max_minutes: int = 30
    key_error: str | None = None

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


def _err(path, where, fld, msg) -> ConfigError:
    return ConfigError(f"{path}: {where}: field '{fld}': {msg}")


def _num(d, fld, path, where, kind, default=None, lo=None, required=False):
    if fld not in d or d[fld] is None:
        if required:
            raise _err(path, where, fld, "missing")
        return default
    v = d[fld]
    ok = isinstance(v, int) if kind is int else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok:
        raise _err(path, where, fld, f"expected {'an integer' if kind is int else 'a number'}, got {v!r}")
    if lo is not None and v < lo:
        raise _err(path, where, fld, f"must be >= {lo}, got {v!r}")
    return kind(v)


def _str(d, fld, path, where, default=None, required=False):
    if fld not in d or d[fld] is None or d[fld] == "":
        if required:
            raise _err(path, where, fld, "missing")
        return default
    v = d[fld]
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise _err(path, where, fld, f"expected a string, got {v!r}")
    return str(v)


def _parse_bus(name, d, path) -> Bus:
    where = f"bus {name!r}"
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: {where}: must be a mapping")
    btype = _str(d, "type", path, where, required=True)
    if btype == "serial":
        parity = _str(d, "parity", path, where, "N")
        if parity not in ("N", "E", "O"):
            raise _err(path, where, "parity", f"must be N, E or O, got {parity!r}")
        return Bus(
            name, "serial",
            device=_str(d, "device", path, where, required=True),
            baudrate=_num(d, "baudrate", path, where, int, 9600, 300),
            parity=parity,
            stopbits=_num(d, "stopbits", path, where, int, 1, 1),
            bytesize=_num(d, "bytesize", path, where, int, 8, 5),
            timeout=_num(d, "timeout", path, where, float, 0.5, 0.01),
            retries=_num(d, "retries", path, where, int, 1, 0),
        )
    if btype == "tcp":
        return Bus(
            name, "tcp",
            host=_str(d, "host", path, where, required=True),
            port=_num(d, "port", path, where, int, 502, 1),
            timeout=_num(d, "timeout", path, where, float, 1.0, 0.01),
            retries=_num(d, "retries", path, where, int, 1, 0),
        )
    raise _err(path, where, "type", f"must be serial or tcp, got {btype!r}")


def _parse_meter(i, d, path, buses, maps_dir, maps_cache) -> Meter:
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: meters[{i}]: must be a mapping")
    name = d.get("MeterId")
    where = f"meter {name!r} (meters[{i}])" if name else f"meters[{i}]"
    meter_id = _str(d, "MeterId", path, where, required=True)
    modbus_id = _num(d, "ModbusId", path, where, int, required=True, lo=1)
    if modbus_id > 247:
        raise _err(path, where, "ModbusId", f"must be 1..247, got {modbus_id}")
    port = _str(d, "Port", path, where, required=True)
    if port not in buses:
        raise _err(path, where, "Port", f"unknown bus {port!r} (buses: {', '.join(buses) or 'none'})")
    mapname = _str(d, "ModbusMap", path, where, required=True)
    if mapname not in maps_cache:
        try:
            maps_cache[mapname] = load_map(mapname, maps_dir)
        except MapError as exc:
            raise _err(path, where, "ModbusMap", str(exc)) from None
    save_every = _num(d, "SaveEvery", path, where, int, required=True, lo=1)
    if save_every > 1440:
        raise _err(path, where, "SaveEvery", "must be at most 1440 minutes (one day)")
    return Meter(
        MeterId=meter_id,
        ModbusId=modbus_id,
        Port=port,
        NoPhases=_str(d, "NoPhases", path, where, required=True),
        MeterType=_str(d, "MeterType", path, where, required=True),
        ModbusMap=mapname,
        SaveEvery=save_every,
        startAddress=_num(d, "startAddress", path, where, int, None, 0),
        map=maps_cache[mapname],
        max_power_kw=_positive(d, "max_power_kw", path, where),
    )


def _positive(d, fld, path, where) -> float | None:
    v = _num(d, fld, path, where, float)
    if v is not None and not 0 < v < float("inf"):
        raise _err(path, where, fld, f"must be a positive number of kW, got {v!r}")
    return v


def _read_key(cloud: dict, path: str) -> tuple[Secret | None, str | None]:
    if cloud.get("key"):
        return Secret(str(cloud["key"]).strip()), None
    if cloud.get("key_file"):
        kf = Path(str(cloud["key_file"]))
        if not kf.is_absolute():
            kf = Path(path).parent / kf
        try:
            return Secret(kf.read_text().strip()), None
        except OSError as exc:  # only `run` needs the key: it fails then; read/status/check work
            return None, str(_err(path, "cloud", "key_file", f"cannot read {kf}: {exc.strerror}"))
    env = os.environ.get(KEY_ENV, "").strip()
    return (Secret(env) if env else None), None


def load_config(path: str | Path) -> Config:
    """Read and validate the agent's YAML config; raise ConfigError on any problem."""
    path = str(path)
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a mapping")
    cloud = data.get("cloud")
    if not isinstance(cloud, dict):
        raise ConfigError(f"{path}: cloud: field 'cloud': missing (needs url and key)")
    url = _str(cloud, "url", path, "cloud", required=True)
    problem = url_problem(url)
    if problem:
        raise _err(path, "cloud", "url", problem)
    buffer = _str(data, "buffer", path, "top level", required=True)
    maps_dir = _str(data, "maps_dir", path, "top level")
    if maps_dir and not Path(maps_dir).is_absolute():
        maps_dir = str(Path(path).parent / maps_dir)
    if maps_dir and not Path(maps_dir).is_dir():
        raise _err(path, "top level", "maps_dir", f"{maps_dir} is not a folder")
    if not Path(buffer).is_absolute():
        buffer = str(Path(path).parent / buffer)
    raw_buses = data.get("buses")
    if not isinstance(raw_buses, dict) or not raw_buses:
        raise _err(path, "top level", "buses", "missing or empty")
    buses = {str(n): _parse_bus(str(n), b, path) for n, b in raw_buses.items()}
    raw_meters = data.get("meters")
    if not isinstance(raw_meters, list) or not raw_meters:
        raise _err(path, "top level", "meters", "missing or empty")
    maps_cache: dict[str, RegisterMap] = {}
    meters, seen = [], {}  # type: list[Meter], dict[str, int]
    for i, m in enumerate(raw_meters):
        meter = _parse_meter(i, m, path, buses, maps_dir, maps_cache)
        if meter.MeterId in seen:
            raise _err(path, f"meter {meter.MeterId!r} (meters[{i}])", "MeterId",
                       f"duplicate: also meters[{seen[meter.MeterId]}]")
        seen[meter.MeterId] = i
        meters.append(meter)
    key, key_error = _read_key(cloud, path)
    agent = data.get("agent") or {}
    if not isinstance(agent, dict):
        raise ConfigError(f"{path}: agent: must be a mapping")
    return Config(
        path=path,
        url=url.rstrip("/"),
        key=key,
        key_error=key_error,
        buffer=buffer,
        maps_dir=maps_dir,
        buses=buses,
        meters=meters,
        batch_size=min(1000, _num(cloud, "batch_size", path, "cloud", int, 500, 1)),
        http_timeout=_num(cloud, "timeout", path, "cloud", float, 30.0, 0.01),
        backoff_initial=_num(cloud, "backoff_initial", path, "cloud", float, 1.0, 0.001),
        backoff_max=_num(cloud, "backoff_max", path, "cloud", float, 300.0, 0.001),
        max_pending=_num(agent, "max_pending", path, "agent", int, DEFAULT_MAX_PENDING, 1),
        retention_days=_num(agent, "retention_days", path, "agent", int, 14, 1),
        meter_backoff_max_minutes=_num(agent, "meter_backoff_max_minutes", path, "agent", int, 30, 0),
    )

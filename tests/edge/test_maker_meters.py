"""The agent against meters laid out from the makers' documentation (tests/edge/maker_meters.py),
served by pymodbus's own server with separate holding and input spaces: each shipped map reads
its maker's total, a meter's fault (NaN, exception 02, wrong space, silence, busy, unknown model)
fails that meter alone with its reason in `status`, and merged reads fall back to smaller ones."""

import json
import logging
import struct

import pytest
from maker_meters import KINDS, LAYOUTS, MeterSpec, start_meters

from conftest import meter, write_config
from edge_agent import cli
from edge_agent.config import load_config
from edge_agent.outbox import Outbox, Reading, Take
from edge_agent.reader import BusReader, MeterReadError
from edge_agent.regmap import load_map
from edge_agent.scheduler import Poller
from edge_agent.simulator import SiteSimulator
from edge_support import free_port

# kind -> (MeterId, ModbusMap, NoPhases, startAddress)
SITE = {
    "Priority.ici": ("imeter45", "Priority.ici", "3", 1100),
    "Eastron.SDM630": ("sdm630", "Eastron.SDM630", "3", None),
    "Eastron.SDM120": ("sdm120", "Eastron.SDM120", "1", None),
    "CarloGavazzi.EM24": ("em24", "CarloGavazzi.EM24", "3", None),
    "CarloGavazzi.EM24.IS": ("em24is", "CarloGavazzi.EM24", "3", None),
    "Schneider.iEM3000": ("iem3000", "Schneider.iEM3000", "3", None),
}
BOUNDARY = 1_800_000_000  # 2027-01-15T08:00:00Z

pytestmark = pytest.mark.usefixtures("no_stale_log_handler")  # cli.main runs in these tests


def _site(tmp_path, port, kinds=KINDS, faults=None, energies=None, extra_meters=(), timeout=0.3):
    faults = faults or {}
    energies = energies or {}
    specs = [MeterSpec(k, unit=i + 1, energy_kwh=energies.get(k, 10_000.0 + 1111.1 * i), faults=set(faults.get(k, ())))
             for i, k in enumerate(kinds)]
    bus = start_meters(port, specs)
    ms = [meter(SITE[k][0], i + 1, "GW", SITE[k][1], SITE[k][2], k, start=SITE[k][3]) for i, k in enumerate(kinds)]
    ms += list(extra_meters)
    path = write_config(tmp_path, ms, {"GW": {"type": "tcp", "host": "127.0.0.1", "port": port, "timeout": timeout,
                                              "retries": 0}})
    return bus, path, load_config(path)


def _float32(v):
    return struct.unpack(">f", struct.pack(">f", v))[0]


@pytest.mark.parametrize("kind", KINDS)
def test_each_shipped_map_reads_its_makers_total(tmp_path, kind):
    """Strict meters answer exception 02 for undocumented registers: the merged read falls back to
    one read per contiguous run where it must, the plan is remembered, and the total is exact."""
    port = free_port()
    bus, path, cfg = _site(tmp_path, port, kinds=[kind], energies={kind: 28_540.2})
    reader = BusReader(cfg.buses["GW"])
    m = cfg.meters[0]
    try:
        first = reader.read(m)
        want = _float32(28_540.2) if LAYOUTS[kind].float_energy else 28_540.2
        assert first.scaled[m.map.energy] == pytest.approx(want, abs=1e-6)
        plans = m.map.plans(m.startAddress)
        second_requests = reader.requests
        again = reader.read(m)
        assert again.scaled[m.map.energy] == first.scaled[m.map.energy]
        assert again.plan == first.plan  # remembered: no second failed merged read
        assert reader.requests - second_requests == len(plans[again.plan])
        if kind == "CarloGavazzi.EM24.IS":
            assert "code 71" in again.model and "0x003E" in again.model
        elif kind == "CarloGavazzi.EM24":
            assert "code 1648" in again.model
        # every value read on the way to the total came from a documented register
        documented = LAYOUTS[kind].documented[LAYOUTS[kind].space]
        for _unit, _fn, addr, count in bus.requests[-len(plans[again.plan]):]:
            assert any(a <= addr and addr + count <= a + n for a, n in documented), (addr, count)
    finally:
        reader.close()
        bus.stop()


def test_merged_plans_that_cross_undocumented_registers_fall_back(tmp_path):
    port = free_port()
    bus, path, cfg = _site(tmp_path, port)
    reader = BusReader(cfg.buses["GW"])
    try:
        plans = {m.MeterId: reader.read(m).plan for m in cfg.meters}
    finally:
        reader.close()
        bus.stop()
    # The i-meter's 45-register read (41100-41144), the SDM's and the iEM's cross registers their makers do
    # not document; the EM24's merged reads stay inside documented ranges.
    assert plans == {"imeter45": "runs", "sdm630": "runs", "sdm120": "runs", "em24": "merged", "em24is": "merged",
                     "iem3000": "runs"}


def test_run_reads_only_the_energy_register_and_read_shows_the_rest(tmp_path, capsys):
    """`run` reads what it delivers: one request per meter for the energy register (and the model code
    once, on a map that identifies), never the volts and amps; `read` still shows them. Checked on the
    requests the makers' meters received."""
    port = free_port()
    bus, path, cfg = _site(tmp_path, port, energies={k: 20_000.0 for k in KINDS})
    energy_at = {}
    for m in cfg.meters:
        e = m.map.located(m.startAddress)[m.map.energy]
        energy_at[m.ModbusId] = (m.map.function, e.address, e.size)
    energy_at[5] = (3, 0x003E, 2)  # the older EM24: its generation keeps the total at 0x003E
    poller = Poller(cfg, Outbox(cfg.buffer))
    try:
        first = len(bus.requests)
        assert all(r.outcome == "stored" for r in poller.poll(BOUNDARY))
        sent = bus.requests[first:]
        id_reads = [r for r in sent if r[2] == 0x000B]
        assert sorted(u for u, *_ in id_reads) == [4, 5]  # the two EM24s are identified once
        assert sorted(r for r in sent if r[2] != 0x000B) == sorted((u, *energy_at[u]) for u in energy_at)
        for k in (1, 2):
            first = len(bus.requests)
            res = poller.poll(BOUNDARY + 300 * k)
            assert all(r.outcome == "stored" for r in res) and {r.value for r in res} == {20_000.0}  # exact in float32
            assert sorted(bus.requests[first:]) == sorted((u, *energy_at[u]) for u in energy_at)
    finally:
        poller.close()
    try:
        assert cli.main(["read", "-c", str(path), "--json", "--meter", "sdm630"]) == 0
        line = json.loads(capsys.readouterr().out)
        assert line["registers"]["v1"] == pytest.approx(230.0) and line["value"] == pytest.approx(_float32(20_000.0))
    finally:
        bus.stop()


def test_lenient_meters_keep_the_fewest_requests(tmp_path):
    """Where undocumented registers read as 0, the merged plan stays: requests per poll unchanged."""
    port = free_port()
    bus, path, cfg = _site(tmp_path, port, faults={k: {"lenient"} for k in KINDS})
    reader = BusReader(cfg.buses["GW"])
    try:
        for m in cfg.meters:
            reader.read(m)
        before = reader.requests
        for m in cfg.meters:
            assert reader.read(m).plan == "merged"
        assert reader.requests - before == sum(len(m.map.plan(m.startAddress)) for m in cfg.meters)
    finally:
        reader.close()
        bus.stop()


def test_one_nan_meter_fails_alone_and_shows_in_status(tmp_path, capsys, caplog):
    """The issue's site: an SDM630 answering NaN (7FC0 0000) must not cost the other meters their
    readings; it is counted, logged, and shown in status with the reason."""
    caplog.set_level(logging.WARNING)
    port = free_port()
    bus, path, cfg = _site(tmp_path, port, faults={"Eastron.SDM630": {"nan"}})
    ob = Outbox(cfg.buffer)
    poller = Poller(cfg, ob)
    try:
        res = {r.meter: r for r in poller.poll(BOUNDARY)}
        assert res["sdm630"].outcome == "failed" and "not finite" in res["sdm630"].error
        assert "7FC0 0000" in res["sdm630"].error
        assert {k for k, r in res.items() if r.outcome == "stored"} == {"imeter45", "sdm120", "em24", "em24is", "iem3000"}
        assert ob.status()["pending"] == 5
        failed = [r.kv for r in caplog.records if r.getMessage() == "read_failed"]
        assert [k["meter"] for k in failed] == ["sdm630"] and "not finite" in failed[0]["error"]
        assert cli.main(["status", "-c", str(path), "--json"]) == 0
        st = json.loads(capsys.readouterr().out)
        failing = {f["MeterId"]: f for f in st["failing_meters"]}
        assert list(failing) == ["sdm630"] and "not finite" in failing["sdm630"]["last_error"]
        assert failing["sdm630"]["failures"] == 1
        # the meter finishes starting up: its next reading is taken like the others
        bus.set_faults(1 + KINDS.index("Eastron.SDM630"), set())
        res = {r.meter: r for r in poller.poll(BOUNDARY + 300, meters=cfg.meters)}
        assert all(r.outcome == "stored" for r in res.values()), res
        assert ob.status()["failing_meters"] == []
    finally:
        poller.close()
        bus.stop()


def test_a_nan_volt_value_does_not_fail_the_reading(tmp_path, capsys):
    """Only the total decides: NaN volts are named under not_finite and left out, the reading is taken."""
    port = free_port()
    bus, path, cfg = _site(tmp_path, port, kinds=["Eastron.SDM630"], faults={"Eastron.SDM630": {"nan_volts"}},
                           energies={"Eastron.SDM630": 500.5})
    try:
        assert cli.main(["read", "-c", str(path), "--json"]) == 0
        line = json.loads(capsys.readouterr().out)
        assert line["value"] == pytest.approx(500.5) and line["not_finite"] == ["v1", "v2", "v3"]
        assert "v1" not in line["registers"] and line["plan"] == "runs"
        poller = Poller(cfg, Outbox(cfg.buffer))
        assert poller.poll(BOUNDARY, meters=cfg.meters)[0].outcome == "stored"
        poller.close()
    finally:
        bus.stop()


def test_silent_busy_and_nan_units_never_touch_the_others(tmp_path):
    port = free_port()
    kinds = ["Priority.ici", "Eastron.SDM630", "Eastron.SDM120", "Schneider.iEM3000"]
    bus, path, cfg = _site(tmp_path, port, kinds=kinds, faults={"Priority.ici": {"silent"}, "Schneider.iEM3000": {"busy"},
                                                                "Eastron.SDM120": {"nan"}})
    ob = Outbox(cfg.buffer)
    poller = Poller(cfg, ob)
    try:
        res = {r.meter: r for r in poller.poll(BOUNDARY)}
        assert res["sdm630"].outcome == "stored"
        assert res["imeter45"].outcome == "failed" and "no answer" in res["imeter45"].error
        assert res["iem3000"].outcome == "failed" and "modbus exception 6" in res["iem3000"].error
        assert [r for r in bus.requests if r[0] == 4] == [(4, 3, 3203, 4)]  # `run` reads the energy register alone
        assert res["sdm120"].outcome == "failed" and "not finite" in res["sdm120"].error
        assert [r[0] for r in ob.all_readings()] == ["sdm630"]
        assert {f["MeterId"] for f in ob.status()["failing_meters"]} == {"imeter45", "iem3000", "sdm120"}
        # `read`: the merged read crosses undocumented registers (02: fall back); the first smaller read is
        # answered busy (06: "not now", not "not this request"): the meter fails, no further fallback
        with pytest.raises(MeterReadError, match="modbus exception 6"):
            poller.readers["GW"].read(cfg.meter("iem3000"))
        assert [r for r in bus.requests if r[0] == 4][1:] == [(4, 3, 2999, 62), (4, 3, 2999, 6)]
    finally:
        poller.close()
        bus.stop()


def test_a_map_with_the_wrong_function_code_fails(tmp_path):
    """An SDM630 map reading holding registers (the maker uses input registers) must fail, against
    the maker-layout meter AND against the project's simulator."""
    maps = tmp_path / "maps"
    maps.mkdir()
    (maps / "Site.SDM630holding.yaml").write_text(
        "name: Site.SDM630holding\nfunction: 3\nenergy: e\nregisters:\n  e: {address: 0x0048, type: float32}\n")
    port = free_port()
    bus = start_meters(port, [MeterSpec("Eastron.SDM630", unit=1)])
    m = meter("wrongfc", 1, "GW", "Site.SDM630holding", start=None)
    cfg = load_config(write_config(tmp_path, [m], {"GW": {"type": "tcp", "host": "127.0.0.1", "port": port}},
                                   extra={"maps_dir": str(maps)}))
    try:
        with pytest.raises(Exception, match="modbus exception 2"):
            BusReader(cfg.buses["GW"]).read(cfg.meters[0])
    finally:
        bus.stop()
    # the project's simulator keeps the spaces apart too: a sim meter of the real SDM630 map
    port2 = free_port()
    sim_cfg = load_config(write_config(tmp_path, [meter("sdm", 1, "GW", "Eastron.SDM630", start=None)],
                                       {"GW": {"type": "tcp", "host": "127.0.0.1", "port": port2}}))
    wrong = load_config(write_config(tmp_path, [meter("sdm", 1, "GW", "Site.SDM630holding", start=None)],
                                     {"GW": {"type": "tcp", "host": "127.0.0.1", "port": port2}},
                                     extra={"maps_dir": str(maps)}))
    with SiteSimulator(sim_cfg):
        r = BusReader(sim_cfg.buses["GW"])
        assert r.read(sim_cfg.meters[0]).energy_raw > 0  # the right space answers
        r.close()
        r = BusReader(wrong.buses["GW"])
        with pytest.raises(Exception, match="modbus exception 2"):
            r.read(wrong.meters[0])
        r.close()


def test_em24_generations_and_an_unknown_model(tmp_path, capsys):
    """Both EM24 generations read their own kWh(+) TOT (an older unit's 0x0034 holds power factors,
    which read as ~6.5 million kWh); `read` shows the model; an unknown code fails the meter."""
    port = free_port()
    bus, path, cfg = _site(tmp_path, port, kinds=["CarloGavazzi.EM24", "CarloGavazzi.EM24.IS"],
                           energies={"CarloGavazzi.EM24": 28_540.2, "CarloGavazzi.EM24.IS": 28_540.2})
    try:
        assert cli.main(["read", "-c", str(path), "--json"]) == 0
        lines = {x["MeterId"]: x for x in map(json.loads, capsys.readouterr().out.splitlines())}
        assert lines["em24"]["value"] == pytest.approx(28_540.2) and "EM24DINAV23XE1X" in lines["em24"]["model"]
        assert lines["em24is"]["value"] == pytest.approx(28_540.2) and "EM24DIN AV9/AV2 rev" in lines["em24is"]["model"]
        assert cli.main(["read", "-c", str(path)]) == 0
        table = capsys.readouterr().out
        assert "model EM24DIN AV9/AV2 rev (code 71" in table
        # the map without identification would have read 0x0034 on the older unit: power factors
        unidentified = load_map("CarloGavazzi.EM24").registers["import_kwh"]
        words = bus.meters[2].words()
        wrong = unidentified.decode_raw([words[0x34], words[0x35]]) * unidentified.scale
        assert wrong > 6_000_000
    finally:
        bus.stop()
    # a code the map does not list: the meter fails with that reason, nothing is reported
    from edge_agent.simulator import SimMeter, SimServer
    port2 = free_port()
    regmap = load_map("CarloGavazzi.EM24")
    srv = SimServer([SimMeter(regmap, 1, id_code=1234, load_kw=0.0)], tcp=("127.0.0.1", port2))
    cfg2 = load_config(write_config(tmp_path, [meter("em24x", 1, "GW", "CarloGavazzi.EM24", start=None)],
                                    {"GW": {"type": "tcp", "host": "127.0.0.1", "port": port2}}))
    try:
        ob = Outbox(cfg2.buffer)
        poller = Poller(cfg2, ob)
        res = poller.poll(BOUNDARY, meters=cfg2.meters)[0]
        poller.close()
        assert res.outcome == "failed" and "model code 1234" in res.error and "cannot tell" in res.error
        assert ob.all_readings() == []
    finally:
        srv.stop()


def test_a_reading_the_database_refuses_fails_its_meter_alone(tmp_path):
    """The original failure: a NaN counter state (NOT NULL counters.last_raw) rolled back the whole
    poll. Each meter's take is now its own savepoint."""
    ob = Outbox(str(tmp_path / "o.sqlite"))
    ts = "2027-01-15T08:00:00Z"
    takes = [Take("a", "B", Reading("a", ts, 1.0), counter=(1, 0)),
             Take("b", "B", Reading("b", ts, 2.0), counter=(float("nan"), 0)),
             Take("c", "B", Reading("c", ts, float("inf")), counter=(3, 0)),
             Take("d", "B", Reading("d", ts, 4.0), counter=(4, 0))]
    errors: list = []
    assert ob.record_poll(takes, errors=errors) == ["stored", "failed", "failed", "stored"]
    assert errors[0] is None and "IntegrityError" in errors[1] and "not finite" in errors[2]
    assert [r[0] for r in ob.all_readings()] == ["a", "d"]
    assert {f["MeterId"] for f in ob.status()["failing_meters"]} == {"b", "c"}


def test_a_register_the_maker_never_documents_leaves_the_energy_alone(tmp_path, capsys):
    """A site map asking an SDM630 for 0x0032 (undocumented): merged and per-run reads answer exception 02,
    the energy register alone answers; that plan is kept (one request per read from then on)."""
    maps = tmp_path / "maps"
    maps.mkdir()
    (maps / "Site.SDM630extra.yaml").write_text(
        "name: Site.SDM630extra\nfunction: 4\nmax_gap: 0\nenergy: import_kwh\nregisters:\n"
        "  v1: {address: 0x0000, type: float32}\n  mystery: {address: 0x0032, type: float32}\n"
        "  import_kwh: {address: 0x0048, type: float32}\n")
    port = free_port()
    bus = start_meters(port, [MeterSpec("Eastron.SDM630", unit=1, energy_kwh=777.25)])
    path = write_config(tmp_path, [meter("odd", 1, "GW", "Site.SDM630extra", start=None)],
                        {"GW": {"type": "tcp", "host": "127.0.0.1", "port": port}}, extra={"maps_dir": str(maps)})
    cfg = load_config(path)
    reader = BusReader(cfg.buses["GW"])
    try:
        v = reader.read(cfg.meters[0])
        assert (v.plan, v.scaled) == ("energy", {"import_kwh": 777.25})
        assert v.requests == 2 + 1  # merged (= runs here): v1 answered, mystery refused; then the energy alone
        before = len(bus.requests)
        assert reader.read(cfg.meters[0]).plan == "energy"
        assert bus.requests[before:] == [(1, 4, 0x0048, 2)]
        assert cli.main(["read", "-c", str(path)]) == 0
        assert "plan energy" in capsys.readouterr().out
    finally:
        reader.close()
        bus.stop()

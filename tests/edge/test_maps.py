"""Every shipped map decodes what a simulated meter of that type holds."""

import struct

import pytest
from pymodbus.client import ModbusTcpClient
from pymodbus.simulator import DataType, SimData, SimDevice

from conftest import MAP_METERS, meter, write_config
from edge_agent.config import load_config
from edge_agent.reader import BusReader
from edge_agent.regmap import MapError, available_maps, load_map, parse_map
from edge_agent.simulator import SimMeter, SimServer, SiteSimulator

SHIPPED = ["Priority.ici", "Eastron.SDM630", "Eastron.SDM120", "CarloGavazzi.EM24", "Schneider.iEM3000"]


def test_all_required_maps_are_shipped_and_valid():
    maps = available_maps()
    for name in SHIPPED:
        assert name in maps
        m = load_map(name)
        for req in m.plan():
            assert req.count <= m.max_registers <= 125


@pytest.fixture
def site(tmp_path, tcp_port):
    ms = [meter(n, i + 1, "LAN1", mp, ph, mt, start=st) for i, (n, mp, ph, mt, st) in enumerate(MAP_METERS)]
    cfg = load_config(write_config(tmp_path, ms, {"LAN1": {"type": "tcp", "host": "127.0.0.1", "port": tcp_port}}))
    sim = SiteSimulator(cfg).start()
    for s in sim.meters.values():
        s.load_kw = 0.0  # frozen: the value read must be the value written
    yield cfg, sim
    sim.stop()


@pytest.mark.parametrize("value", [0.0, 1234.5, 98765.4])
def test_each_map_decodes_the_simulated_value(site, value):
    cfg, sim = site
    reader = BusReader(cfg.buses["LAN1"])
    try:
        for m in cfg.meters:
            sim.meters[m.MeterId].set_energy(value)
            got = reader.read(m)
            energy = got.scaled[m.map.energy]
            if m.map.registers[m.map.energy].type == "float32":
                expect = struct.unpack(">f", struct.pack(">f", value))[0]
                assert energy == pytest.approx(expect, rel=1e-9), m.MeterId
            else:
                assert energy == pytest.approx(value, abs=1e-6), m.MeterId
            # the first read of a meter whose map identifies the model also reads its model code, once
            assert got.requests == len(m.map.plan(m.startAddress)) + (m.map.identify is not None)
            assert reader.read(m).requests == len(m.map.plan(m.startAddress))
    finally:
        reader.close()


def test_word_orders_on_the_wire(site):
    """EM24 holds the low word first, the others the high word first."""
    cfg, sim = site
    sim.meters["em24"].set_energy(6553.7)  # 65537 tenths = 0x0001_0001 -> words [1, 1] either way
    sim.meters["em24"].set_energy(13107.2)  # 131072 tenths = 0x0002_0000
    c = ModbusTcpClient("127.0.0.1", port=cfg.buses["LAN1"].port)
    assert c.connect()
    try:
        rr = c.read_holding_registers(0x34, count=2, device_id=4)
        assert rr.registers == [0x0000, 0x0002]  # low word first
        sim.meters["imeter45"].set_energy(65.537)  # 65537 thousandths
        rr = c.read_holding_registers(1142, count=2, device_id=1)
        assert rr.registers == [0x0001, 0x0001]
        sim.meters["imeter45"].set_energy(131.072)  # 0x0002_0000
        rr = c.read_holding_registers(1142, count=2, device_id=1)
        assert rr.registers == [0x0002, 0x0000]  # high word first
    finally:
        c.close()


def test_4xxxx_convention_against_the_simulator(tmp_path, tcp_port):
    """Register 41143 is wire address 1142: a value the pymodbus simulator holds at
    (0-based) address 1142 is what the Priority.ici map reads as total kWh."""
    raw = 28540240  # 28540.240 kWh in 0.001 kWh
    words = [raw >> 16, raw & 0xFFFF]
    dev = SimDevice(id=1, simdata=[
        SimData(address=1099, values=[0] * 43, datatype=DataType.REGISTERS),
        SimData(address=1142, values=words, datatype=DataType.REGISTERS),
        SimData(address=1144, values=[0], datatype=DataType.REGISTERS),
    ])
    m = load_map("Priority.ici")
    assert m.located(1100)["total_kwh"].address == 1142
    assert m.located(1100)["phases"].address == 1099  # 41100
    assert m.located(1100)["v1"].address == 1100  # 41101
    assert m.located(2100)["total_kwh"].address == 2142  # relocated block
    server = SimServer([], tcp=("127.0.0.1", tcp_port))
    server.stop()
    from edge_agent import simulator as simmod

    class Raw(simmod.SimServer):
        async def _start(self, tcp, serial):
            from pymodbus.server import ModbusTcpServer
            s = ModbusTcpServer([dev], address=tcp)
            await s.serve_forever(background=True)
            return s

    srv = Raw([], tcp=("127.0.0.1", tcp_port))
    try:
        cfg = load_config(write_config(tmp_path, [meter("m1", 1, "LAN1")],
                                       {"LAN1": {"type": "tcp", "host": "127.0.0.1", "port": tcp_port}}))
        r = BusReader(cfg.buses["LAN1"])
        assert r.read(cfg.meters[0]).scaled["total_kwh"] == pytest.approx(28540.24)
        r.close()
    finally:
        srv.stop()


def test_imeter45_rollover_through_the_simulator(tmp_path, tcp_port):
    """The UINT32 register wraps at 4,294,967.295 kWh; the poller unwraps it."""
    from edge_agent.outbox import Outbox
    from edge_agent.scheduler import Poller

    cfg = load_config(write_config(tmp_path, [meter("m1", 1, "LAN1")],
                                   {"LAN1": {"type": "tcp", "host": "127.0.0.1", "port": tcp_port}}))
    sim = SiteSimulator(cfg).start()
    s = sim.meters["m1"]
    s.load_kw = 0.0
    poller = Poller(cfg, Outbox(cfg.buffer))
    try:
        values = []
        for i, kwh in enumerate([4294966.0, 4294967.2, 4294968.5, 4294999.0, 4295100.25]):
            s.set_energy(kwh)
            res = poller.poll(1_700_000_000 + 300 * i, meters=cfg.meters)
            values.append(res[0].value)
        assert values == pytest.approx([4294966.0, 4294967.2, 4294968.5, 4294999.0, 4295100.25], abs=1e-6)
    finally:
        poller.close()
        sim.stop()


def test_plan_merges_close_registers_and_respects_the_limit():
    m = parse_map({"name": "x", "function": 3, "max_registers": 10, "max_gap": 2, "energy": "e", "registers": {
        "a": {"address": 0, "type": "uint32"}, "b": {"address": 3, "type": "uint16"},
        "c": {"address": 8, "type": "uint16"}, "e": {"address": 9, "type": "uint32"},
        "f": {"address": 20, "type": "float64"}}}, "x.yaml")
    plan = m.plan()
    assert [(r.address, r.count) for r in plan] == [(0, 4), (8, 3), (20, 4)]
    assert [(r.address, r.count) for r in m.plan(max_gap=0)] == [(0, 2), (3, 1), (8, 3), (20, 4)]  # contiguous runs


@pytest.mark.parametrize("doc,msg", [
    ({"name": "x", "energy": "e", "registers": {"e": {"address": 1, "type": "uint33"}}}, "type must be"),
    ({"name": "x", "energy": "z", "registers": {"e": {"address": 1, "type": "uint32"}}}, "energy names"),
    ({"name": "x", "notation": "4xxxx", "energy": "e", "registers": {"e": {"address": 1143, "type": "uint32"}}}, "4xxxx"),
    ({"name": "x", "energy": "e", "max_registers": 200, "registers": {"e": {"address": 1, "type": "uint32"}}}, "1..125"),
    ({"name": "x", "registers": {"e": {"address": 1, "type": "uint32"}}}, "missing key 'energy'"),
])
def test_bad_maps_are_refused_with_the_reason(doc, msg):
    with pytest.raises(MapError, match=msg):
        parse_map(doc, "x.yaml")


def test_site_maps_dir_adds_and_overrides_maps(tmp_path):
    d = tmp_path / "maps"
    d.mkdir()
    (d / "Site.Meter.yaml").write_text(
        "name: Site.Meter\nfunction: 4\nenergy: e\nregisters:\n  e: {address: 10, type: uint64, word_order: little, scale: 0.01}\n")
    assert "Site.Meter" in available_maps(d)
    m = load_map("Site.Meter", d)
    reg = m.registers["e"]
    assert reg.decode_raw(reg.encode_raw(123456789)) == 123456789
    with pytest.raises(MapError, match="unknown map"):
        load_map("Site.Meter")


@pytest.mark.parametrize("mapname", SHIPPED)
def test_encode_decode_roundtrip_every_register(mapname):
    m = load_map(mapname)
    sm = SimMeter(m, 1, m.default_start, energy_kwh=4321.5, load_kw=0.0)
    sm.advance()
    words = sm.words()
    raw = m.decode(words, m.default_start)
    for name, v in sm.values().items():
        reg = m.registers[name]
        assert raw[name] * reg.scale == pytest.approx(v, rel=1e-6, abs=reg.scale), (mapname, name)


# The total-energy register of each shipped map as its maker documents it: (wire address, type, word
# order, kWh per count, function). A map edited to read another register (a per-phase energy, the
# export total) would send the wrong energy for every meter of that type, with every other test green.
DOCUMENTED_ENERGY = {
    # The contract: 41143-41144, UINT32 thousandths of a kWh, high word first, holding registers.
    "Priority.ici": (1142, "uint32", "big", 0.001, 3),
    # Eastron SDM630/SDM120 protocol: input register 30073 "Import active energy", float kWh.
    "Eastron.SDM630": (0x0048, "float32", "big", 1.0, 4),
    "Eastron.SDM120": (0x0048, "float32", "big", 1.0, 4),
    # Carlo Gavazzi EM24 protocol: 0x0034 "kWh (+) TOT", INT32 LSW first, 0.1 kWh (0x0040-0x0044 are per phase).
    "CarloGavazzi.EM24": (0x0034, "int32", "little", 0.1, 3),
    # Schneider iEM3000 register list: 3204 "Total active energy import", INT64 Wh.
    "Schneider.iEM3000": (3203, "int64", "big", 0.001, 3),
}


@pytest.mark.parametrize("mapname", SHIPPED)
def test_each_map_reads_the_documented_total_energy_register(mapname):
    regmap = load_map(mapname)
    energy = regmap.registers[regmap.energy]
    # (a relocatable map's addresses are those of its default startAddress, 1100 for the i-meter 45)
    assert (energy.address, energy.type, energy.word_order, energy.scale, regmap.function) == DOCUMENTED_ENERGY[mapname]


def test_every_problem_of_a_map_is_named_in_one_go():
    doc = {"name": "x", "function": 5, "energy": "e", "registers": {
        "e": {"address": 70000, "type": "uint32"}, "v": {"address": 3, "type": "uint32", "word_order": "middle"},
        "p": {"address": 5, "type": "float32", "scale": 0}}}
    with pytest.raises(MapError) as e:
        parse_map(doc, "x.yaml")
    assert list(e.value.problems) == [
        "x.yaml: function must be 3 (holding) or 4 (input)",
        "x.yaml: register e: wire address 70000 out of 0..65535",
        "x.yaml: register v: word_order must be big or little",
        "x.yaml: register p: scale must be a non-zero number",
    ]


def test_the_simulated_energy_follows_the_clock_it_is_given():
    from edge_agent.clock import FakeClock

    clock = FakeClock(1_700_000_000)
    sm = SimMeter(load_map("Eastron.SDM630"), 1, energy_kwh=100.0, load_kw=6.0, clock=clock)
    sm.advance()
    clock.advance(1800)
    sm.advance()
    assert sm.energy_kwh == pytest.approx(103.0)  # 6 kW for half an hour of the simulator's clock

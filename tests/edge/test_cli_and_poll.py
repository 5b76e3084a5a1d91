"""Command line, scheduling at wall-clock boundaries, the outbox and its bound."""

import json
import logging
import threading

import pytest

from conftest import KEY, MAP_METERS, meter, write_config
from edge_agent import cli, log
from edge_agent.clock import ClockCheck, FakeClock, iso
from edge_agent.config import load_config
from edge_agent.counters import energy_kwh
from edge_agent.outbox import Outbox, Reading
from edge_agent.regmap import load_map
from edge_agent.scheduler import Poller, Scheduler, next_boundary
from edge_agent.simulator import SiteSimulator


@pytest.fixture
def site(tmp_path, tcp_port):
    ms = [meter(n, i + 1, "LAN1", mp, ph, mt, start=st) for i, (n, mp, ph, mt, st) in enumerate(MAP_METERS)]
    ms.append(meter("ghost", 99, "LAN1"))  # nothing answers as unit 99
    path = write_config(tmp_path, ms, {"LAN1": {"type": "tcp", "host": "127.0.0.1", "port": tcp_port, "timeout": 0.2}})
    cfg = load_config(path)
    sim = SiteSimulator(cfg, silent={"ghost"}).start()
    yield path, cfg, sim
    sim.stop()


def test_read_json_one_object_per_meter(site, capsys):
    path, cfg, sim = site
    assert cli.main(["read", "-c", str(path), "--json"]) == 1  # one meter failed
    out = capsys.readouterr()
    lines = [json.loads(x) for x in out.out.splitlines()]
    assert [x["MeterId"] for x in lines] == [m.MeterId for m in cfg.meters]
    for x in lines[:-1]:
        assert x["value"] == pytest.approx(sim.meters[x["MeterId"]].energy_kwh, abs=0.2)
    assert "error" in lines[-1] and "value" not in lines[-1]
    assert KEY not in out.out + out.err
    assert cli.main(["read", "-c", str(path), "--meter", "sdm630"]) == 0
    table = capsys.readouterr().out
    assert "sdm630" in table and "Eastron.SDM630" in table and "imeter45" not in table


def test_status_json(site, capsys):
    path, cfg, sim = site
    ob = Outbox(cfg.buffer)
    poller = Poller(cfg, ob)
    poller.poll(1_700_000_100)
    poller.close()
    assert cli.main(["status", "-c", str(path), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    for k in ("pending", "oldest_pending", "last_delivery", "dead_letters", "failing_meters"):
        assert k in st
    assert st["pending"] == 5 and st["oldest_pending"] == "2023-11-14T22:15:00Z" and st["last_delivery"] is None
    assert [f["MeterId"] for f in st["failing_meters"]] == ["ghost"]
    assert cli.main(["status", "-c", str(path)]) == 0
    assert "ghost on LAN1" in capsys.readouterr().out


def test_bad_config_exits_2_naming_the_problem(tmp_path, capsys):
    p = write_config(tmp_path, [meter("m1", 1, "USB7")], {"USB0": {"type": "serial", "device": "/dev/null"}})
    assert cli.main(["check", "-c", str(p)]) == 2
    err = capsys.readouterr().err
    assert str(p) in err and "meter 'm1'" in err and "field 'Port'" in err


def test_check_prints_the_wire_addresses(site, capsys):
    path, cfg, sim = site
    assert cli.main(["check", "-c", str(path)]) == 0
    assert "imeter45: bus LAN1 id 1 map Priority.ici: energy at wire address 1142" in capsys.readouterr().out


def test_key_never_in_logs(tmp_path, caplog):
    """Even a message that embeds the key is scrubbed by the handler's filter."""
    import io
    buf = io.StringIO()
    log.setup("DEBUG", stream=buf)
    log.register_secret(KEY)
    log.event(log.get("x"), logging.ERROR, "oops", meter="m", error=f"header X-API-Key: {KEY}")
    logging.getLogger("urllib3").warning("sending %s", KEY)
    text = buf.getvalue()
    assert "event=oops meter=m" in text and "***" in text and KEY not in text


def test_boundaries_and_due_meters(tmp_path):
    cfg = load_config(write_config(tmp_path, [meter("five", 1, "B"), meter("quarter", 2, "B", save_every=15)],
                                   {"B": {"type": "tcp", "host": "127.0.0.1", "port": 1}}))
    t = 1_700_000_000  # 22:13:20 UTC
    assert iso(next_boundary(cfg.meters, t)) == "2023-11-14T22:15:00Z"
    p = Poller(cfg, Outbox(cfg.buffer))
    assert [m.MeterId for m in p.due(1_700_000_100)] == ["five", "quarter"]  # 22:15
    assert [m.MeterId for m in p.due(1_700_000_400)] == ["five"]  # 22:20
    p.close()


def test_scheduler_runs_on_virtual_time(tmp_path):
    cfg = load_config(write_config(tmp_path, [meter("five", 1, "B")], {"B": {"type": "tcp", "host": "127.0.0.1", "port": 1}}))
    clock = FakeClock(1_700_000_000)
    stop = threading.Event()
    seen = []

    class P:
        def __init__(self):
            self.cfg = cfg
            self.outbox = Outbox(cfg.buffer)

        def poll(self, b):
            seen.append(iso(b))
            if len(seen) == 3:
                stop.set()

    Scheduler(P(), clock, stop, check=ClockCheck(not_before=0, kernel_state=lambda: "synchronised")).run()
    assert seen == ["2023-11-14T22:15:00Z", "2023-11-14T22:20:00Z", "2023-11-14T22:25:00Z"]


def test_failing_meter_backs_off_and_recovers(site):
    path, cfg, sim = site
    poller = Poller(cfg, Outbox(cfg.buffer))
    b = 1_700_000_100
    tried = []
    for k in range(12):
        res = {r.meter: r for r in poller.poll(b + 300 * k)}
        tried.append("ghost" in res)
    # tries at 0, 1, 3, 7 (skipping 0, 1, 3 boundaries), then capped at 30 minutes
    assert tried == [True, True, False, True, False, False, False, True, False, False, False, False]
    poller.close()


def test_outbox_is_wal_full_sync_and_keyed(tmp_path):
    ob = Outbox(str(tmp_path / "o.sqlite"))
    db = ob._db()
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert ob.add(Reading("m", "2023-11-14T22:15:00Z", 1.0)) == "stored"
    assert ob.add(Reading("m", "2023-11-14T22:15:00Z", 2.0)) == "exists"  # never doubled
    assert ob.all_readings() == [("m", "2023-11-14T22:15:00Z", 1.0, 0)]
    ob.mark_delivered(ob.pending(10))
    assert ob.status()["pending"] == 0 and ob.status()["last_delivery"]


def test_outbox_bound_drops_new_readings_and_counts_them(tmp_path, caplog):
    ob = Outbox(str(tmp_path / "o.sqlite"), max_pending=3)
    out = [ob.add(Reading("m", iso(1_700_000_100 + 300 * k), float(k)), counter=(k, 0)) for k in range(5)]
    assert out == ["stored"] * 3 + ["dropped"] * 2
    st = ob.status()
    assert st["pending"] == 3 and st["dropped_at_bound"] == 2
    assert st["dropped_by_meter"]["m"]["first"] == iso(1_700_000_100 + 900)
    assert ob.counter("m") == (4, 0)  # the rollover state follows the meter even when dropped
    ob.mark_delivered(ob.pending(10))
    assert ob.add(Reading("m", iso(1_700_000_100 + 1500), 5.0)) == "stored"  # room again


def test_unwrap_rules():
    reg = load_map("Priority.ici").registers["total_kwh"]
    v, st, note = energy_kwh(reg, 4294967000, None)
    assert v == 4294967.0 and note == ""
    v, st, note = energy_kwh(reg, 500, st)
    assert note == "rollover" and v == pytest.approx(4294967.796)
    v, st, note = energy_kwh(reg, 1500, st)
    assert v == pytest.approx(4294968.796) and note == ""
    v, st, note = energy_kwh(reg, 1000, st)  # a real decrease: passed on as read
    assert note == "decrease" and v == pytest.approx(1.0)
    em = load_map("CarloGavazzi.EM24").registers["import_kwh"]
    assert energy_kwh(em, 100, (200, 0))[2] == "decrease"


def test_delivered_readings_are_kept_retention_days_on_the_outbox_clock(tmp_path):
    clock = FakeClock(1_700_000_000)
    ob = Outbox(str(tmp_path / "o.sqlite"), clock=clock)
    ob.add(Reading("m", "2023-11-14T22:15:00Z", 1.0))
    ob.add(Reading("m", "2023-11-14T22:20:00Z", 2.0))
    ob.mark_delivered(ob.pending(1))
    clock.advance(13 * 86400)
    assert ob.prune(14) == 0
    clock.advance(2 * 86400)
    assert ob.prune(14) == 1  # the delivered one, 15 days on; the pending one stays
    assert ob.all_readings() == [("m", "2023-11-14T22:20:00Z", 2.0, 0)]

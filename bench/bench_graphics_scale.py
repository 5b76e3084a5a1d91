"""GET /graphics at building scale: line and pie for 300 meters over a year and 1,233 meters over 7 days.

In-process moto (bench_layout.stack). 5-minute readings are written straight as the day items ingest
writes (chalicelib.metering.readings.day_item, BatchWriteItem), and each meter's consumption rollups are then
computed by chalicelib.metering.rollups.rebuild (the code ingest runs, over the whole history at once), so a
300-meter year loads in minutes rather than hours; a sample of meters is checked against
consumption.from_readings (computed from the stored readings). Each chart is made by
chalicelib.outputs.charts.chart (what the route calls: read, reduce, draw, upload to S3) and timed; then made again under tracemalloc for its peak of Python allocations
(numpy's included; moto's own response building included too, which overstates). DynamoDB items
read are counted per call.

The baseline is the raw-readings path (charts.py and chart_render.py of commit BASELINE, main before
charts read the rollups, loaded from git), run on the same data in the same process where that is
feasible: for the year it runs on a project of --sample meters with the same history (its time grows
linearly with meters: ~7.7 s a meter-year), extrapolated in the table.
The week's meters report one day past it (as a live building's do: the day after the range gives
the hourly chart its right-hand neighbours without a Query per meter).
Usage: .venv/bin/python bench/bench_graphics_scale.py [--year-meters 300] [--week-meters 1233]
"""
import argparse
import platform
import subprocess
import sys
import time
import tracemalloc
import types
from datetime import datetime, timedelta, timezone

from bench_layout import ROOT, DynamoCounter, MotoTimer, stack

BASELINE = "f7751be"          # main with charts reading raw readings (before charts2)
STEP = 300
PER_DAY = 86400 // STEP
YEAR = ("2025-01-01", "2025-12-31")
WEEK = ("2025-12-25", "2025-12-31")


def _baseline_charts():
    """chalicelib.outputs.charts as it was at BASELINE, drawing with chart_render as it was."""
    def source(path):
        return subprocess.run(["git", "show", f"{BASELINE}:{path}"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout

    render = types.ModuleType("baseline_chart_render")
    sys.modules["baseline_chart_render"] = render      # before exec: its dataclass looks itself up
    exec(compile(source("chalicelib/chart_render.py"), "baseline_chart_render", "exec"), render.__dict__)
    text = source("chalicelib/charts.py").replace("from chalicelib import chart_render",
                                                  "import baseline_chart_render as chart_render")
    text = text.replace("exports.day_range(", "days.day_range(").replace("exports.parse_day(", "days.parse_day(")
    text = text.replace(  # the baseline's modules, where they are now (days.day_range was exports' then)
        "from chalicelib import accounts, clock, downloads, exports, meters, readings, validation",
        "from chalicelib.identity import accounts\nfrom chalicelib.metering import days, meters, readings\n"
        "from chalicelib.outputs import downloads\nfrom chalicelib.platform import clock, validation")
    text = text.replace("from chalicelib.errors import", "from chalicelib.platform.errors import")
    module = types.ModuleType("baseline_charts")
    exec(compile(text, "baseline_charts", "exec"), module.__dict__)
    return module


def _project(name: str, meter_count: int, parent_every: int = 0) -> tuple[int, list[dict]]:
    """(project id, its meters): meter_count meters; meter 0 feeds the next parent_every ones.

    The first meter is registered through chalicelib.metering.meters.register; the others are written as the
    same items in batches (moto copies every table on each transaction, so registering 1,233 meters
    one by one takes minutes and gigabytes), checked against the first one's.
    """
    from chalicelib.identity import accounts
    from chalicelib.metering import meters
    from chalicelib.platform import aws, db
    from chalicelib.tables import accounts_table, meters_table

    project = accounts.create_project(name, "UTC")["project_id"]
    first = meters.register(project, {"MeterId": "suite-0000", "SaveEvery": 5})
    stored = {item["sk"].split("#")[0]: item for item in db.query(meters_table.NAME, "pk = :p", {":p": f"PROJECT#{project}"})}
    chosen, batch = [first], []
    client, table = aws.dynamodb(), db.table(meters_table.NAME)
    for i in range(1, meter_count):
        meter_id, site = accounts_table.next_id("meter"), f"suite-{i:04d}"
        items = [{**stored["SITE"], "sk": f"SITE#{site}", "meter_id": meter_id},
                 {**stored["NAME"], "sk": f"NAME#{site}", "meter_id": meter_id},
                 {**stored["METER"], "sk": f"METER#{meter_id:010d}", "meter_id": meter_id, "site_name": site,
                  "name": site}]
        batch += [{"PutRequest": {"Item": db.to_ddb(item)}} for item in items]
        chosen.append({"id": meter_id, "MeterId": site})
        if len(batch) >= 24:
            _write(client, table, batch)
            batch = []
    if batch:
        _write(client, table, batch)
    assert meters.view(meters.find(project, name=chosen[-1]["MeterId"]))["id"] == chosen[-1]["id"]
    for child in chosen[1:parent_every + 1]:
        meters.change(project, meter_id=child["id"], parent=first["MeterId"])
    return project, chosen


def _history(project, chosen, first_day, days, parent_every=0):
    """`days` days of 5-minute readings of each meter from first_day, written as ingest lays them out.

    Written after every project and meter exists: moto copies every table on each transaction
    (registration uses them), which with a year of items would take minutes per meter.
    """
    from chalicelib.metering import readings, rollups
    from chalicelib.platform import aws, clock, db
    from chalicelib.tables import readings_table

    meter_count = len(chosen)
    client, table = aws.dynamodb(), db.table(readings_table.NAME)
    start = int(datetime.fromisoformat(first_day).replace(tzinfo=timezone.utc).timestamp())
    batch = []
    for index, meter in enumerate(chosen):
        series = readings_table.series_key(project, meter["id"])
        rate = 0.05 + 0.4 * index / max(1, meter_count)         # kWh per 5 minutes: meters differ
        if index == 0 and parent_every:
            rate = 0.5 * parent_every
        for d in range(days):
            day = (datetime.fromtimestamp(start, timezone.utc) + timedelta(days=d)).strftime("%Y-%m-%d")
            base = 1000.0 + rate * d * PER_DAY
            values = {s * STEP: round(base + rate * s, 3) for s in range(PER_DAY)}
            item = readings.day_item(series, day, values)
            batch.append({"PutRequest": {"Item": db.to_ddb(item)}})
            if len(batch) == 25:
                _write(client, table, batch)
                batch = []
    if batch:
        _write(client, table, batch)
    zone = clock.zone("UTC")
    for meter in chosen:   # the rollups ingest keeps, from the stored readings
        rollups.rebuild(project, zone, meter["id"])


def _check(project, chosen, first_day, days):
    """The rollups written equal consumption's reference from the stored raw readings (a few meters)."""
    from chalicelib.metering import consumption, meters
    from chalicelib.platform import clock

    zone = clock.zone("UTC")
    first = datetime.fromisoformat(first_day).date()
    last = first + timedelta(days=days - 1)
    sample = list({m["id"]: m for m in (chosen[0], chosen[len(chosen) // 2], chosen[-1])}.values())   # distinct
    items = [meters.view(meters.find(project, name=m["MeterId"])) for m in sample]
    rows = consumption.summaries(project, [{"meter_id": m["id"]} for m in items], zone, first, last, "day")
    for meter in items:
        raw = consumption.from_readings(project, [meter["id"]], zone, first, last, "day")
        assert rows[meter["id"]] == raw[meter["id"]], meter


def _write(client, table, batch):
    request: dict | None = {table: batch}
    while request:
        request = client.batch_write_item(RequestItems=request).get("UnprocessedItems") or None


def _measure(make):
    """(seconds, seconds outside moto, items read) of one call, then its peak MB under tracemalloc
    (a second call)."""
    with DynamoCounter() as counter, MotoTimer() as in_moto:
        began = time.perf_counter()
        make()
        seconds = time.perf_counter() - began
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        make()
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    return seconds, seconds - in_moto.seconds, counter.items, peak / 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--year-meters", type=int, default=300)
    parser.add_argument("--week-meters", type=int, default=1233)
    parser.add_argument("--sample", type=int, default=10, help="meters of the baseline's year line chart")
    parser.add_argument("--cases", default="year,week", help="year, week or both (comma-separated)")
    args = parser.parse_args()
    from chalicelib.outputs import charts

    old = _baseline_charts()
    print(f"python {platform.python_version()}, moto in-process, 5-minute readings, 1600x900 PNG; "
          f"baseline = charts at {BASELINE}\n")
    rows = []
    with stack():
        cases = args.cases.split(",")
        plan = {"year": (args.year_meters, YEAR[0], 365), "week": (args.week_meters, WEEK[0], 8),
                "sample": (args.sample, YEAR[0], 365)}
        plan = {k: v for k, v in plan.items() if k in cases or (k == "sample" and "year" in cases)}
        began = time.perf_counter()
        made = {label: _project(f"bench-{label}", count, min(20, count - 1)) for label, (count, _f, _d) in plan.items()}
        print(f"setup: {sum(p[0] for p in plan.values())} meters registered in {time.perf_counter() - began:.0f} s",
              flush=True)
        for label, (count, first_day, days) in plan.items():
            began = time.perf_counter()
            _history(*made[label], first_day, days, min(20, count - 1))
            _check(*made[label], first_day, days)
            print(f"setup {label}: {count} meters x {days} days in {time.perf_counter() - began:.0f} s", flush=True)
        setups = {label: project for label, (project, _chosen) in made.items()}
        sample = setups.get("sample")
        for label, meters_, (first, last) in (("year", args.year_meters, YEAR), ("week", args.week_meters, WEEK)):
            if label not in cases:
                continue
            project = setups[label]
            for kind in ("line", "pie"):
                for name, module in (("new", charts), ("baseline", old)):
                    on: int | None = project
                    count = meters_
                    if name == "baseline" and label == "year":
                        on, count = sample, args.sample     # the baseline's line holds every point: ~4 GB
                    seconds, client, items, peak = _measure(lambda: module.chart(on, kind=kind, start=first, end=last))
                    rows.append((f"{meters_} meters, {label}", kind, name, count, seconds, client, items, peak))
                    print(f"  {label} {kind} {name}: {count} meters {seconds:.1f} s ({client:.1f} s outside moto), "
                          f"{items} items, peak {peak:.0f} MB", flush=True)
    print("\n| case | chart | implementation | meters drawn | wall (s) | outside moto (s) | items read "
          "| peak traced (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    for case, kind, name, count, seconds, client, items, peak in rows:
        print(f"| {case} | {kind} | {name} | {count:,} | {seconds:.1f} | {client:.1f} | {items:,} | {peak:.0f} |")


if __name__ == "__main__":
    main()

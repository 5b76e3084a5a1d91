"""GET /consumption from the rollups against computing from the raw readings, and what the rollups add
to POST /data.

In-process moto (the stack of bench_layout). A project in America/Toronto with --meters meters:
  - --raw-meters of them get a year (2025) of 5-minute readings written as ingest lays them out (day
    items, chalicelib.metering.readings.day_item) and their rollups computed by chalicelib.metering.rollups.rebuild
    (the code ingest runs); the others get one reading a day over the year (written by BatchWriteItem)
    and their rollups from rollups.rebuild too: the same 12-13 month items per meter the month query
    reads, at a fraction of the setup (300 meter-years of 5-minute day items would take most of an
    hour in moto). Every meter also gets raw readings of the day the hour query asks about.
  - period=month, all meters, the year: through the route (Chalice test client), median of
    --repeats; DynamoDB items read counted by botocore hooks. The raw computation
    (consumption.from_readings) is timed for the raw meters and scaled to all meters; both must
    give the same values (checked for the raw meters).
  - period=day, one meter, the year: route vs raw.
  - period=hour, all meters, one day: the route (which reads the raw day items of the day, as
    fine-grained rollups would read as many items) vs period=day of the same day (the rollups).
  - POST /data write cost, with rollups against today's ingest without them (the refresh swapped for
    a no-op in this process only): steady state, one reading per meter per request for --meters-live
    meters; and a 1,000-reading backfill of one meter into a 3.5-day outage. Write units by
    DynamoDB's sizing rules (each PutItem's item size, rounded up to 1 KB; each UpdateItem of a meter
    item 1 WCU), calls and wall time.
Usage: .venv/bin/python bench/bench_consumption.py [--meters 300] [--raw-meters 5] [--repeats 3]
"""
import argparse
import json
import platform
import random
import statistics
import sys
import time
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from bench_layout import DynamoCounter, item_size, median_time, new_project, stack, wcu

ZONE = ZoneInfo("America/Toronto")
YEAR = 2025
STEP = 300


def history(seed, start, end):
    """{UTC day: {seconds into the day: value}} of 5-minute readings from start to end (epochs)."""
    rng = random.Random(seed)
    value = rng.uniform(1e5, 9e5)
    days: dict[str, dict[int, float]] = {}
    for epoch in range(start - start % STEP, end + 1, STEP):
        value += rng.uniform(0.0, 2.0) if rng.random() > 0.0005 else -value * 0.9   # a rare reset
        day = datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d")
        days.setdefault(day, {})[epoch % 86400] = round(value, 6)
    return days


def daily(seed, start, end):
    """{UTC day: {seconds into the day: value}} of one reading a day (at noon UTC) from start to end."""
    rng = random.Random(seed)
    value = rng.uniform(1e5, 9e5)
    days: dict[str, dict[int, float]] = {}
    for midnight in range(start - start % 86400, end + 1, 86400):
        value += rng.uniform(0.0, 576.0)
        days[datetime.fromtimestamp(midnight, timezone.utc).strftime("%Y-%m-%d")] = {43200: round(value, 6)}
    return days


def write_days(project_id, meter_id, days):
    from chalicelib.metering import readings
    from chalicelib.platform import db
    from chalicelib.tables import readings_table

    series = readings_table.series_key(project_id, meter_id)
    for day, by_slot in days.items():
        db.put(readings_table.NAME, readings.day_item(series, day, by_slot))


def write_days_batched(project_id, meter_id, days):
    """write_days by BatchWriteItem, 25 day items a call (the setup of many meters)."""
    from chalicelib.metering import readings
    from chalicelib.platform import aws, db
    from chalicelib.tables import readings_table

    client, table, series = aws.dynamodb(), db.table(readings_table.NAME), readings_table.series_key(project_id, meter_id)
    items = [{"PutRequest": {"Item": db.to_ddb(readings.day_item(series, day, by_slot))}}
             for day, by_slot in days.items()]
    for at in range(0, len(items), 25):
        request: dict | None = {table: items[at:at + 25]}
        while request:
            request = client.batch_write_item(RequestItems=request).get("UnprocessedItems") or None


class WriteCost:
    """PutItem/UpdateItem calls and their write units by item size, while the block runs."""

    def __init__(self):
        self.units: Counter = Counter()
        self.calls: Counter = Counter()

    def hook(self, params, event_name, **_kwargs):
        from chalicelib.platform import db

        operation = event_name.rsplit(".", 1)[-1]
        if operation == "PutItem":
            item = db.from_ddb(params["Item"])
            kind = "rollup" if str(item.get("meter", "")).startswith("ROLLUP#") else "day"
            self.units[kind] += wcu(item_size({k: (bytes(v.value) if hasattr(v, "value") else v)
                                               for k, v in item.items()}))
            self.calls[f"PutItem {kind}"] += 1
        elif operation == "UpdateItem":
            self.units["meter"] += 1
            self.calls["UpdateItem meter"] += 1

    def __enter__(self):
        from chalicelib.platform import aws

        aws.dynamodb().meta.events.register("before-parameter-build.dynamodb.*", self.hook)
        return self

    def __exit__(self, *_exc):
        from chalicelib.platform import aws

        aws.dynamodb().meta.events.unregister("before-parameter-build.dynamodb.*", self.hook)


def local_midnight(day):
    return int(datetime(day.year, day.month, day.day, tzinfo=ZONE).timestamp())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=300)
    parser.add_argument("--raw-meters", type=int, default=5)
    parser.add_argument("--meters-live", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from chalice.test import Client

    from app import app
    from chalicelib.metering import consumption, meters, rollups

    failed = False
    with stack(), Client(app, stage_name="local") as client:
        started = time.perf_counter()
        project_id, key = new_project("consumption", "America/Toronto")
        headers = {"X-API-Key": key}
        chosen = [meters.register(project_id, {"MeterId": f"m{i + 1:03d}", "SaveEvery": 5})
                  for i in range(args.meters)]
        year_start, year_end = local_midnight(date(YEAR, 1, 1)), local_midnight(date(YEAR + 1, 1, 1))
        hour_day = date(YEAR, 6, 15)
        for i, meter in enumerate(chosen[:args.raw_meters]):
            write_days(project_id, meter["id"], history(i, year_start - 86400, year_end + 86400))
            rollups.rebuild(project_id, ZONE, meter["id"])
        for i, meter in enumerate(chosen[args.raw_meters:], start=args.raw_meters):
            days = daily(i, year_start - 86400, year_end + 86400)
            hours = history(i, local_midnight(hour_day) - 3600, local_midnight(hour_day + timedelta(days=1)) + 3600)
            first_day = min(hours)
            before = days[(date.fromisoformat(first_day) - timedelta(days=1)).isoformat()][43200]
            start = hours[first_day][min(hours[first_day])]
            for day, by_slot in hours.items():   # 5-minute readings there instead of the daily one, continuing it
                days[day] = {slot: round(before + value - start, 6) for slot, value in by_slot.items()}
            write_days_batched(project_id, meter["id"], days)
            rollups.rebuild(project_id, ZONE, meter["id"])
        print(f"python {platform.python_version()}, moto in-process, {args.meters} meters "
              f"({args.raw_meters} with a raw year), setup {time.perf_counter() - started:.0f} s, "
              f"median of {args.repeats}\n")

        def route(**params):
            query = "&".join(f"{k}={v}" for k, v in params.items())
            answer = client.http.get(f"/consumption?{query}", headers=headers)
            assert answer.status_code == 200, answer.body
            return json.loads(answer.body)

        print("| query | rollups (s) | items read | items / meter-year | raw (s) | raw / rollups | same values |")
        print("|---|---|---|---|---|---|---|")
        # period=month, every meter, the year
        month = dict(start=f"{YEAR}-01-01", end=f"{YEAR}-12-31", period="month")
        with DynamoCounter() as counter:
            rows = route(**month)
        seconds, rows = median_time(lambda: route(**month), args.repeats)
        raw_meters = [{**m, "meter_id": m["id"], "name": m["MeterId"]} for m in chosen[:args.raw_meters]]
        raw_seconds, raw = median_time(lambda: {m["meter_id"]: consumption.from_readings(
            project_id, [m["meter_id"]], ZONE, date(YEAR, 1, 1), date(YEAR, 12, 31), "month")[m["meter_id"]]
            for m in raw_meters}, 1)
        scaled = raw_seconds / args.raw_meters * args.meters
        same = all(_values(rows, m["name"]) == [None if e is None else e / 1e6 for e, _c, _p in raw[m["meter_id"]]]
                   for m in raw_meters)
        per_meter_year = counter.items / args.meters
        failed |= not same or per_meter_year > 24
        print(f"| period=month, {args.meters} meters, 12 months | {seconds:.2f} | {counter.items} "
              f"| {per_meter_year:.1f} | {scaled:.1f} (scaled from {args.raw_meters} meters: {raw_seconds:.1f}) "
              f"| {scaled / seconds:.0f}x | {'yes' if same else 'NO'} |")
        # period=day, one meter, the year
        day = dict(start=f"{YEAR}-01-01", end=f"{YEAR}-12-31", period="day", meter="m001")
        with DynamoCounter() as counter:
            rows = route(**day)
        seconds, rows = median_time(lambda: route(**day), args.repeats)
        raw_seconds, raw = median_time(lambda: consumption.from_readings(
            project_id, [chosen[0]["id"]], ZONE, date(YEAR, 1, 1), date(YEAR, 12, 31), "day")[chosen[0]["id"]],
            args.repeats)
        same = _values(rows, "m001") == [None if e is None else e / 1e6 for e, _c, _p in raw]
        failed |= not same
        print(f"| period=day, 1 meter, 365 days | {seconds:.3f} | {counter.items} | {counter.items:.0f} "
              f"| {raw_seconds:.3f} | {raw_seconds / seconds:.0f}x | {'yes' if same else 'NO'} |")
        # period=hour, every meter, one day (raw day items), against period=day of that day (rollups)
        hour = dict(start=hour_day.isoformat(), end=hour_day.isoformat(), period="hour")
        with DynamoCounter() as counter:
            rows = route(**hour)
        seconds, rows = median_time(lambda: route(**hour), args.repeats)
        one_day = dict(start=hour_day.isoformat(), end=hour_day.isoformat(), period="day")
        with DynamoCounter() as day_counter:
            route(**one_day)
        day_seconds, _rows = median_time(lambda: route(**one_day), args.repeats)
        print(f"| period=hour, {args.meters} meters, 1 day ({len(rows)} rows; reads the raw day items) "
              f"| {seconds:.2f} | {counter.items} | | period=day of that day from rollups: {day_seconds:.2f} s, "
              f"{day_counter.items} items | | |")

        print("\n## POST /data: what the rollups add\n")
        print("| request | with rollups: calls | write units (day / rollup / meter) | wall (ms) "
              "| without: calls | write units | wall (ms) | added WCU | time ratio |")
        print("|---|---|---|---|---|---|---|---|---|")
        for label, run in (("steady state: 1 reading each of %d meters" % args.meters_live, "live"),
                           ("backfill: 1,000 readings of 1 meter into an outage", "backfill")):
            results = {}
            for mode in ("with", "without"):
                results[mode] = _ingest_cost(mode, run, args)
            w, wo = results["with"], results["without"]
            print(f"| {label} | {w['calls']} | {w['units']} | {w['ms']:.0f} | {wo['calls']} | {wo['units']} "
                  f"| {wo['ms']:.0f} | {w['total'] - wo['total']:+d} ({w['total']} vs {wo['total']}) "
                  f"| {w['ms'] / wo['ms']:.2f}x |")
    sys.exit(1 if failed else 0)


def _values(rows, name):
    return [r["value"] for r in rows if r["MeterParam"] == name]


def _ingest_cost(mode, run, args):
    """Calls, write units and median wall time of POST /data requests (rollups refreshed or not)."""
    from chalicelib.metering import ingest, meters

    project_id, _key = new_project(f"ingest-{mode}-{run}", "America/Toronto")
    names = [f"live{i}" for i in range(args.meters_live if run == "live" else 1)]
    for name in names:
        meters.register(project_id, {"MeterId": name, "SaveEvery": 5})
    original = ingest._refresh_rollups
    if mode == "without":
        ingest._refresh_rollups = lambda batch: None
    try:
        now = int(time.time()) // STEP * STEP

        def batch(epochs):
            return [{"MeterId": n, "TimeStamping": datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "value": round(1000 + (t - now + 10 ** 6) * 0.001, 6)} for t in epochs for n in names]

        if run == "live":
            base = now - (576 + args.repeats * 3) * STEP     # the requests end now: live readings
            for chunk in range(0, 576, 50):      # two days of history first (each meter)
                ingest.ingest(project_id, batch(range(base + chunk * STEP, base + min(chunk + 50, 576) * STEP, STEP)))
            requests = [batch([base + (576 + i) * STEP]) for i in range(args.repeats * 3)]
        else:
            base = now - 86400 * 10
            ingest.ingest(project_id, batch(range(base, base + 288 * STEP, STEP)))                 # a day before
            ingest.ingest(project_id, batch(range(base + 1288 * STEP, base + 1576 * STEP, STEP)))  # a day after
            requests = [batch(range(base + 288 * STEP, base + 1288 * STEP, STEP))]                   # the outage
        times, costs = [], []
        for request in requests:
            with WriteCost() as cost, DynamoCounter() as counter:
                started = time.perf_counter()
                receipt = ingest.ingest(project_id, request)
                times.append(time.perf_counter() - started)
            assert receipt["accepted"] == len(request), receipt
            costs.append((cost, counter))
        cost, counter = costs[-1]
        units = dict(cost.units)
        return {"calls": dict(sorted(counter.calls.items())), "ms": statistics.median(times) * 1000,
                "units": f"{units.get('day', 0)} / {units.get('rollup', 0)} / {units.get('meter', 0)}",
                "total": sum(units.values())}
    finally:
        ingest._refresh_rollups = original


if __name__ == "__main__":
    main()

"""GET /bill at building scale: a month's bill of every meter, and a year's bill of one meter, against the
same meters' energy per hour (GET /consumption?period=hour: the hours a bill is priced from) measured
in the same run.

In-process moto (the stack of bench_layout). A project in America/Toronto with --meters meters of
5-minute readings over --month (written as ingest lays them out: day items, one per meter and UTC day,
by BatchWriteItem, then each meter's rollups built as ingest keeps them: rollups.rebuild), and one more
meter with a whole year of them. "hours from the raw readings" is the path bills took before the rollups
kept hours (consumption.from_readings of every meter), timed in the same run. The project's default tariff is the
demo's Ontario RPP time of use (tools/demo_tariff.py) with TOU and flat demand charges added, so every
part of the pricing runs. Figures are medians of --repeats; DynamoDB calls and the items they answered
are counted by botocore hooks (bench_layout.DynamoCounter). "pricing" is the pure part (schedule and
price of every meter-month from hours already read), timed alone.

Usage: .venv/bin/python bench/bench_bill.py [--meters 300] [--month 2025-11] [--year 2025] [--repeats 3]
"""
import argparse
import json
import platform
import random
import time
from datetime import date, datetime, timedelta, timezone
from fractions import Fraction

from bench_layout import DynamoCounter, MotoTimer, median_time, new_project, stack

STEP = 300


def day_items(project_id, meter_id, start, end, rng, register):
    """The day items of 5-minute readings of one meter from start to end (epochs), and the last register."""
    from chalicelib.metering import readings
    from chalicelib.tables import readings_table

    series = readings_table.series_key(project_id, meter_id)
    days: dict[str, dict] = {}
    for epoch in range(start - start % STEP, end + STEP, STEP):
        register += rng.uniform(0.0, 1.5)
        day = datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d")
        days.setdefault(day, {})[epoch % 86400] = round(register, 6)
    return [readings.day_item(series, day, by_slot) for day, by_slot in days.items()], register


def write(items):
    from chalicelib.platform import aws, db
    from chalicelib.tables import readings_table

    client, table = aws.dynamodb(), db.table(readings_table.NAME)
    requests = [{"PutRequest": {"Item": db.to_ddb(item)}} for item in items]
    for at in range(0, len(requests), 25):
        pending: dict | None = {table: requests[at:at + 25]}
        while pending:
            pending = client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or None


def month_bounds(month):
    first = date.fromisoformat(f"{month}-01")
    last = date(first.year + first.month // 12, first.month % 12 + 1, 1) - timedelta(days=1)
    return first, last


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=300)
    parser.add_argument("--month", default="2025-11")
    parser.add_argument("--year", type=int, default=2025)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from chalice.test import Client

    from app import app
    from chalicelib.billing import bills, tariffs
    from chalicelib.metering import consumption, meters, rollups
    from chalicelib.platform import clock
    from tools import demo_tariff

    zone = clock.zone("America/Toronto")
    first, last = month_bounds(args.month)
    with stack(), Client(app, stage_name="local") as client:
        started = time.perf_counter()
        project_id, key = new_project("bill", zone.key)
        body = demo_tariff.tariff([first.year])
        body.update(demandratestructure=[[{"rate": 0}], [{"rate": 6.25}]],
                    demandweekdayschedule=[[1 if 11 <= h < 17 else 0 for h in range(24)]] * 12,
                    demandweekendschedule=[[0] * 24] * 12,
                    flatdemandstructure=[[{"rate": 2.5, "max": 50}, {"rate": 4.0}]], flatdemandmonths=[0] * 12)
        tariffs.save(project_id, body)
        rng = random.Random(21)
        begin = int(datetime(first.year, first.month, first.day, tzinfo=zone).timestamp()) - 86400
        finish = int(datetime(last.year, last.month, last.day, tzinfo=zone).timestamp()) + 2 * 86400
        chosen = []
        for i in range(args.meters):
            meter = meters.register(project_id, {"MeterId": f"suite-{i + 1:03d}", "SaveEvery": 5})
            items, _register = day_items(project_id, meter["id"], begin, finish, rng, rng.uniform(1e4, 9e4))
            write(items)
            rollups.rebuild(project_id, zone, meter["id"])
            chosen.append(meter)
        year_meter = meters.register(project_id, {"MeterId": "zz-year", "SaveEvery": 5})
        year_begin = int(datetime(args.year, 1, 1, tzinfo=zone).timestamp()) - 86400
        year_end = int(datetime(args.year + 1, 1, 1, tzinfo=zone).timestamp()) + 86400
        write(day_items(project_id, year_meter["id"], year_begin, year_end, rng, 5e4)[0])
        rollups.rebuild(project_id, zone, year_meter["id"])
        print(f"python {platform.python_version()}, moto in-process, {args.meters} meters of 5-minute readings "
              f"({args.month}) + 1 meter-year ({args.year}), setup {time.perf_counter() - started:.0f} s, "
              f"median of {args.repeats}\n")
        headers = {"X-API-Key": key}

        def route(path, **params):
            query = "&".join(f"{k}={v}" for k, v in params.items())
            answer = client.http.get(f"{path}?{query}", headers=headers)
            assert answer.status_code == 200, answer.body[:300]
            return json.loads(answer.body)

        def measured(fn):
            """(median seconds, DynamoCounter and seconds inside moto of one more run, result)."""
            with DynamoCounter() as counter, MotoTimer() as moto:
                fn()
            seconds, result = median_time(fn, args.repeats)
            counter.moto = moto.seconds
            return seconds, counter, result

        month = dict(start=first.isoformat(), end=last.isoformat())
        print("| request | seconds | of which in moto | DynamoDB calls | items read | items / meter-month | vs. baseline |")
        print("|---|---|---|---|---|---|---|")
        every = meters.all_meters(project_id)
        # the hours GET /consumption?period=hour gives (300 meters' month is past its 413 bound as one answer)
        base_s, base_c, _hours = measured(lambda: consumption.hourly(project_id, every, zone, first, last))
        bill_s, bill_c, rows = measured(lambda: route("/bill", **month))
        assert len(rows) == args.meters + 1 and all(r["Total"] for r in rows[:args.meters])
        meter_months = args.meters + 1
        every_id = [m["meter_id"] for m in every]
        raw_s, raw_c, _raw = measured(lambda: consumption.from_readings(project_id, every_id, zone, first, last,
                                                                         "hour"))
        for label, seconds, counter, ratio in (
                (f"the hours of {meter_months} meters, {args.month} (consumption.hourly: baseline)", base_s, base_c, ""),
                (f"GET /bill, {meter_months} meters, {args.month}", bill_s, bill_c, f"{bill_s / base_s:.2f}x"),
                (f"hours from the raw readings (before hour rollups), {meter_months} meters", raw_s, raw_c,
                 f"{raw_s / base_s:.2f}x")):
            print(f"| {label} | {seconds:.2f} | {_moto(counter)} | {sum(counter.calls.values())} ({_calls(counter)}) "
                  f"| {counter.items} | {counter.items / meter_months:.1f} | {ratio} |")
        # the pure part: pricing meter-months from hours already read
        tariff_of = tariffs.for_meters(project_id, every)
        starts, table = consumption.hourly(project_id, every, zone, first, last)
        slots = [bills.Slot(d.date(), d.hour) for d in (datetime.fromtimestamp(s, zone) for s in starts)]
        compiled = bills.rates(*next(iter(tariff_of.values())))

        def price_all():
            plan = bills.schedule(compiled, slots)
            return [bills.price(compiled, plan, [f.energy for f in figures], [f.peak for f in figures],
                                Fraction(1)) for figures in table.values()]

        price_s, priced = median_time(price_all, args.repeats)
        assert all(p is not None for p in priced[:args.meters])
        print(f"| pricing alone (schedule + price, hours in memory), {meter_months} meter-months | {price_s:.3f} | 0 "
              f"| 0 | 0 | 0 | {price_s / bill_s:.1%} of the bill |")
        # a year of one meter
        year = dict(start=f"{args.year}-01-01", end=f"{args.year}-12-31", meter="zz-year")

        def hours_by_month():
            return [route("/consumption", period="hour", meter="zz-year", start=a.isoformat(), end=b.isoformat())
                    for a, b in bills.months(date(args.year, 1, 1), date(args.year, 12, 31))]

        ybase_s, ybase_c, _hours = measured(hours_by_month)
        year_s, year_c, year_rows = measured(lambda: route("/bill", **year))
        assert len(year_rows) == 12 and all(r["Total"] for r in year_rows)
        print(f"| GET /consumption?period=hour, 1 meter, 12 months (12 requests: baseline) | {ybase_s:.2f} "
              f"| {_moto(ybase_c)} | {sum(ybase_c.calls.values())} ({_calls(ybase_c)}) | {ybase_c.items} "
              f"| {ybase_c.items / 12:.1f} | |")
        print(f"| GET /bill, 1 meter, {args.year} | {year_s:.2f} | {_moto(year_c)} | {sum(year_c.calls.values())} "
              f"({_calls(year_c)}) | {year_c.items} | {year_c.items / 12:.1f} | {year_s / ybase_s:.2f}x |")
        print(f"\ngoals: a month for {args.meters} meters < 3 s: {bill_s:.2f} s; a year of one meter < 0.5 s: "
              f"{year_s:.2f} s")


def _moto(counter):
    return f"{counter.moto:.2f}"


def _calls(counter):
    return ", ".join(f"{name} {count}" for name, count in counter.calls.most_common())


if __name__ == "__main__":
    main()

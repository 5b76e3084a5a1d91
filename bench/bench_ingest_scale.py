"""POST /data at building scale, through the route (Chalice test client) over in-process moto, with a fixed
latency injected before every DynamoDB call (botocore's before-call event) to stand for the network.

In-process moto is not thread-safe: each call is carried out under a lock, taken after the injected
latency, so calls made at once (ingest's thread pool) wait their latency together, as over a network,
while moto's own work stays one call at a time (what moto costs is not what DynamoDB costs).

Parts (--parts):
  - push: a site's live push, one reading per meter (--meters, SaveEvery 1): a push in the middle of a
    UTC hour (the steady state) and the push at the hour (it starts a UTC hour: the hour's bookkeeping);
    and one POST /data of 1,000 readings of 1,000 meters. Wall time (with --latency-ms per call), calls.
  - wru: write and read units per reading of live readings, at 1-minute and 5-minute SaveEvery: --wru-meters
    meters pushed every SaveEvery through three windows of the UTC day (from 00:00, 12:00 and 22:50, each
    a little over an hour, so every hourly write and fold of the design falls in it), the day items seeded
    as they stand at that time; units by DynamoDB's sizing rules from the items written and read. No
    injected latency (units do not depend on it).
  - catchup: units per reading of a backlog sent in batches of 1,000 (readings older than the live hours),
    in time order (every meter's next readings) and meter order (one meter's, then the next), at 1-minute
    and 5-minute SaveEvery; a few batches sampled.
  - year: a meter-year of 5-minute readings stored as day items (how both layouts keep a past year), read
    whole by GET /file (csv) in-process, no injected latency: items read per reading, median seconds.
By default the run is before against after: the layout before (the code of commit --baseline, f813d8d:
a day item rewritten per reading, rollups per local month) extracted by `git archive` into a temporary
directory, and this tree's, each in a process of its own, printed side by side with their ratios.
--code DIR runs one checkout's app and chalicelib with this script; --compare DIR compares against DIR
instead of --baseline. --json prints the figures as JSON (what the comparison reads).
Usage:
  .venv/bin/python bench/bench_ingest_scale.py [--meters 300] [--latency-ms 10] [--parts push,wru,catchup,year]
"""
import argparse
import io
import json
import math
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))


def _code_path(argv):
    """The checkout whose app and chalicelib run (--code DIR), put first on sys.path before any import."""
    if "--code" in argv:
        return os.path.abspath(argv[argv.index("--code") + 1])
    return os.path.dirname(HERE)


CODE = _code_path(sys.argv)
sys.path.insert(0, CODE)
sys.path.insert(1, HERE)
os.chdir(CODE)          # the Chalice test client reads .chalice/config.json from the working directory

from bench_layout import fill_days, make_meter, new_project, number_size, stack  # noqa: E402

sys.path.insert(0, CODE)   # bench_layout puts this tree first: the code measured goes first again

DAY0 = int(datetime(2026, 3, 2, tzinfo=timezone.utc).timestamp())   # a Monday, UTC


def typed_size(item):
    """DynamoDB's size of a typed item (names + values)."""
    total = 0
    for name, value in item.items():
        (kind, raw), = value.items()
        total += len(name.encode())
        if kind == "S":
            total += len(raw.encode())
        elif kind == "N":
            total += number_size(raw)
        elif kind == "B":
            total += len(raw)
        elif kind == "M":
            total += 3 + typed_size(raw)
        else:
            total += 1
    return total


class Units:
    """DynamoDB calls and the capacity units their items cost, from the request and answer sizes: a write
    1 WRU per KB of the item written (rounded up; an UpdateItem or a delete of a meter or hot item, under
    1 KB: 1), a read 1 RRU per 4 KB read strongly consistent, half that eventually consistent."""

    def __init__(self):
        self.calls, self.wcu, self.rcu, self.items_written, self.items_read = {}, 0, 0.0, 0, 0
        self.lock = threading.Lock()

    def before(self, params, model, **_):
        with self.lock:
            self.calls[model.name] = self.calls.get(model.name, 0) + 1
            if model.name == "PutItem":
                self.wcu += max(1, math.ceil(typed_size(params["Item"]) / 1024))
                self.items_written += 1
            elif model.name in ("UpdateItem", "DeleteItem"):
                self.wcu += 1
            elif model.name == "BatchWriteItem":
                for requests in params["RequestItems"].values():
                    for request in requests:
                        put = request.get("PutRequest")
                        self.wcu += max(1, math.ceil(typed_size(put["Item"]) / 1024)) if put else 1
                        self.items_written += 1 if put else 0
            elif model.name == "TransactWriteItems":
                self.wcu += 2 * len(params["TransactItems"])

    def after(self, parsed=None, model=None, params=None, **_):
        if model is None or not parsed:
            return
        if model.name == "BatchGetItem":
            consistent = all(t.get("ConsistentRead") for t in (params or {}).get("RequestItems", {}).values()) \
                if params else True
            items = [i for found in parsed.get("Responses", {}).values() for i in found]
        elif model.name in ("Query", "GetItem"):
            consistent = bool((params or {}).get("ConsistentRead"))
            items = parsed.get("Items", []) + ([parsed["Item"]] if "Item" in parsed else [])
        else:
            return
        size = sum(typed_size(i) for i in items) if model.name == "Query" else None
        with self.lock:
            self.items_read += len(items)
            if size is not None:
                self.rcu += max(1, math.ceil(size / 4096)) / (1 if consistent else 2)
            else:
                self.rcu += sum(max(1, math.ceil(typed_size(i) / 4096)) for i in items) / (1 if consistent else 2)

    def remember_params(self, params, context, **_):
        context["bench_params"] = params

    def after_with_params(self, parsed=None, model=None, context=None, **kwargs):
        self.after(parsed=parsed, model=model, params=(context or {}).get("bench_params"), **kwargs)

    def attach(self):
        from chalicelib.platform import aws

        events = aws.dynamodb().meta.events
        events.register("before-parameter-build.dynamodb.*", self.before)
        events.register("before-call.dynamodb.*", self.remember_params)
        events.register("after-call.dynamodb.*", self.after_with_params)
        return self

    def detach(self):
        from chalicelib.platform import aws

        events = aws.dynamodb().meta.events
        events.unregister("before-parameter-build.dynamodb.*", self.before)
        events.unregister("before-call.dynamodb.*", self.remember_params)
        events.unregister("after-call.dynamodb.*", self.after_with_params)


class Network:
    """A fixed latency before every DynamoDB call (the network), then moto's work one call at a time."""

    def __init__(self, latency_ms):
        self.latency = latency_ms / 1000
        self.lock = threading.Lock()

    def before(self, context, **_):
        if self.latency:
            time.sleep(self.latency)
        self.lock.acquire()
        context["bench_locked"] = True

    def after(self, context, **_):
        if context.pop("bench_locked", False):
            self.lock.release()

    def attach(self):
        from chalicelib.platform import aws

        for client in (aws.dynamodb(), aws.s3(), aws.kms()):
            client.meta.events.register("before-call", self.before)
            client.meta.events.register("after-call", self.after)
            client.meta.events.register("after-call-error", self.after)
        return self


def stamp(epoch):
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def post(client, key, batch):
    answer = client.http.post("/data", headers={"X-API-Key": key, "Content-Type": "application/json"},
                              body=json.dumps({"readings": batch}))
    assert answer.status_code == 200, answer.body
    receipt = json.loads(answer.body)
    assert receipt["accepted"] + receipt["duplicates"] == len(batch) and not receipt["rejected"], receipt
    return receipt


def project_with_meters(label, count, save_every):
    from chalicelib.metering import meters

    project_id, key = new_project(label)
    names = [f"suite-{i:04d}" for i in range(count)]
    for n in names:
        meters.register(project_id, {"MeterId": n, "SaveEvery": save_every})
    return project_id, key, names


def seed_day(project_id, names, day_start, upto, step):
    """Readings of a UTC day before `upto`, as a day item per meter (the layout both codes read)."""
    from chalicelib.metering import meters, readings
    from chalicelib.platform import db
    from chalicelib.tables import readings_table

    day = datetime.fromtimestamp(day_start, timezone.utc).strftime("%Y-%m-%d")
    for name in names:
        meter = meters.find(project_id, name=name)
        series = readings_table.series_key(project_id, meter["meter_id"])
        slots = {s: value(day_start + s) for s in range(0, upto - day_start, step)}
        if slots:
            db.put(readings_table.NAME, readings.day_item(series, day, slots))


def value(epoch):
    return round(1000.0 + (epoch - DAY0) / 3600 * 2.5, 6)


class Clock:
    """The cloud's clock, moved to each push's time (time-machine)."""

    def __init__(self):
        import time_machine

        self.traveller = time_machine.travel(DAY0, tick=False)
        self.traveller.start()

    def at(self, epoch):
        self.traveller.stop()
        import time_machine

        self.traveller = time_machine.travel(epoch, tick=False)
        self.traveller.start()


def measure(client, key, batch, latency_network=None):
    units = Units().attach()
    started = time.perf_counter()
    post(client, key, batch)
    seconds = time.perf_counter() - started
    units.detach()
    return {"seconds": seconds, "calls": sum(units.calls.values()), "by_call": dict(sorted(units.calls.items())),
            "wcu": units.wcu, "rcu": round(units.rcu, 1)}


def _push_at(client, key, names, epoch, clock):
    clock.at(epoch + 2)
    return [{"MeterId": n, "TimeStamping": stamp(epoch), "value": value(epoch)} for n in names]


def part_push(client, clock, args, network, projects):
    """A live push of --meters meters (one reading each, SaveEvery 1): mid-hour (the steady state), the
    pushes that fold the hour before last (FOLDS_PER_REQUEST meters each), and at the hour (the hour's
    rollups and meter items); 1,000 readings of 1,000 meters, their first push and mid-hour."""
    project_id, key, names = projects["push"]
    latency = args.latency_ms / 1000
    out = {}
    seed_day(project_id, names, DAY0, DAY0 + 9 * 3600 + 59 * 60, 60)
    network.latency = 0
    for minute in (9 * 60 + 59, 10 * 60):   # the meters' first live pushes (their 10:00 hour marked ahead)
        post(client, key, _push_at(client, key, names, DAY0 + 60 * minute, clock))
    network.latency = latency
    mids = [measure(client, key, _push_at(client, key, names, DAY0 + 60 * minute, clock))
            for minute in (10 * 60 + 30, 10 * 60 + 31, 10 * 60 + 32)]
    out["mid-hour"] = sorted(mids, key=lambda m: m["seconds"])[1]      # the median push
    out["folding 09:00 (10:55)"] = measure(client, key, _push_at(client, key, names, DAY0 + 10 * 3600 + 55 * 60, clock))
    network.latency = 0
    for minute in (56, 57, 58, 59):
        post(client, key, _push_at(client, key, names, DAY0 + 10 * 3600 + minute * 60, clock))
    network.latency = latency
    out["at the hour (11:00)"] = measure(client, key, _push_at(client, key, names, DAY0 + 11 * 3600, clock))
    project_id, key, names = projects["thousand"]
    out["1000 new meters, first push"] = measure(client, key, _push_at(client, key, names, DAY0 + 11 * 3600 + 59 * 60,
                                                                       clock))
    network.latency = 0
    post(client, key, _push_at(client, key, names, DAY0 + 12 * 3600, clock))
    network.latency = latency
    out["1000 meters, mid-hour"] = measure(client, key, _push_at(client, key, names, DAY0 + 12 * 3600 + 30 * 60, clock))
    return out


WINDOWS = (("00:00", 0), ("12:00", 12 * 3600), ("22:50", 22 * 3600 + 50 * 60))


def part_wru(client, clock, args, network, projects):
    """Units per reading of live pushes (one reading per meter every SaveEvery) through three windows."""
    network.latency = 0
    out = {}
    for save_every in (1, 5):
        step = 60 * save_every
        per_window = {}
        for label, offset in WINDOWS:
            project_id, key, names = projects[f"wru{save_every}-{label}"]
            start = DAY0 + offset
            seed_day(project_id, names, DAY0, start - 3900, step)
            minutes = 125 if save_every == 5 else 70
            warm = 3900   # 65 minutes pushed before the window: the meters' state as a live meter's
            units, readings = Units(), 0
            for epoch in range(start - warm, start + minutes * 60, step):
                clock.at(epoch + 2)
                if epoch == start:
                    units.attach()
                post(client, key, [{"MeterId": n, "TimeStamping": stamp(epoch), "value": value(epoch)} for n in names])
                readings += len(names) if epoch >= start else 0
            units.detach()
            per_window[label] = {"wcu_per_reading": units.wcu / readings, "rcu_per_reading": units.rcu / readings,
                                 "calls_per_push": sum(units.calls.values()) / (readings / len(names))}
        out[f"{save_every}-minute"] = per_window | {
            "mean": {k: statistics.mean(w[k] for w in per_window.values()) for k in next(iter(per_window.values()))}}
    return out


def part_catchup(client, clock, args, network, projects):
    """Units per reading of a week's backlog in batches of 1000, in time order and in meter order."""
    network.latency = 0
    out = {}
    clock.at(DAY0 + 30 * 86400)
    for save_every in (1, 5):
        step = 60 * save_every
        for order in ("time", "meter"):
            project_id, key, names = projects[f"catchup{save_every}-{order}"]
            span = range(DAY0 + 43200, DAY0 + 7 * 86400, step)
            if order == "time":
                seed_day(project_id, names, DAY0, DAY0 + 43200, step)
                sequence = [(t, n) for t in span for n in names]
            else:
                sequence = [(t, n) for n in names for t in span]
            sequence = sequence[:args.sample_batches * 1000]
            units = Units().attach()
            started = time.perf_counter()
            for at in range(0, len(sequence), 1000):
                post(client, key, [{"MeterId": n, "TimeStamping": stamp(t), "value": value(t)}
                                   for t, n in sequence[at:at + 1000]])
            seconds = time.perf_counter() - started
            units.detach()
            out[f"{save_every}-minute {order}-major"] = {
                "wcu_per_reading": units.wcu / len(sequence), "rcu_per_reading": units.rcu / len(sequence),
                "calls_per_batch": sum(units.calls.values()) / math.ceil(len(sequence) / 1000),
                "seconds_per_batch": seconds / math.ceil(len(sequence) / 1000)}
    return out


YEAR = ("2025-01-01", "2025-12-31")   # 365 days of 5-minute readings: 105,120


def part_year(client, clock, args, network, projects):
    """GET /file (csv) of a meter-year stored as day items, in-process: median seconds, items read per reading."""
    network.latency = 0
    project_id, key = projects["year"]
    clock.at(int(datetime(2026, 1, 2, tzinfo=timezone.utc).timestamp()))
    fill_days(project_id, "meter1", 365)
    times, units = [], Units()
    for _ in range(args.repeats):
        units = Units().attach()
        started = time.perf_counter()
        answer = client.http.get(f"/file?start={YEAR[0]}&end={YEAR[1]}&type=csv", headers={"X-API-Key": key})
        times.append(time.perf_counter() - started)
        units.detach()
        assert answer.status_code == 303, answer.body
    readings = 365 * 288
    return {"seconds": statistics.median(times), "items_read": units.items_read, "readings": readings,
            "items_read_per_reading": units.items_read / readings, "rcu": round(units.rcu, 1),
            "calls": sum(units.calls.values())}


def baseline_tree(commit):
    """The files of `commit` (app.py, chalicelib, .chalice, tools, infra) in a new temporary directory."""
    where = tempfile.mkdtemp(prefix="bench-baseline-")
    archive = subprocess.run(["git", "-C", os.path.dirname(HERE), "archive", "--format=tar", commit, "app.py",
                              "chalicelib", ".chalice", "tools", "infra"], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(where, filter="data")
    return where


def make_projects(args, parts):
    """Every project and meter of the parts, made first: moto copies its tables for each transaction."""
    projects = {}
    if "push" in parts:
        projects["push"] = project_with_meters("push", args.meters, 1)
        projects["thousand"] = project_with_meters("thousand", 1000, 1)
    if "wru" in parts:
        for save_every in (1, 5):
            for label, _offset in WINDOWS:
                projects[f"wru{save_every}-{label}"] = project_with_meters(
                    f"wru{save_every}-{label}", args.wru_meters, save_every)
    if "catchup" in parts:
        for save_every in (1, 5):
            for order in ("time", "meter"):
                projects[f"catchup{save_every}-{order}"] = project_with_meters(
                    f"catchup{save_every}-{order}", args.catchup_meters, save_every)
    if "year" in parts:
        projects["year"] = new_project("year")
        make_meter(projects["year"][0])
    return projects


def run(args):
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.pop("AWS_ENDPOINT_URL", None)
    from chalice.test import Client

    from app import app

    parts = args.parts.split(",")
    import chalicelib

    assert os.path.dirname(os.path.abspath(chalicelib.__file__)) == os.path.join(CODE, "chalicelib"), \
        f"measuring {chalicelib.__file__}, not {CODE}'s code"
    results = {"code": CODE, "meters": args.meters, "latency_ms": args.latency_ms}
    clock = Clock()
    try:
        with stack():
            network = Network(0).attach()
            projects = make_projects(args, parts)
            with Client(app, stage_name="local") as client:
                for name, part in (("push", part_push), ("wru", part_wru), ("catchup", part_catchup),
                                   ("year", part_year)):
                    if name in parts:
                        results[name] = part(client, clock, args, network, projects)
    finally:
        clock.traveller.stop()
    return results


def _ratio(labels, value):
    """' | after/before' of two columns' figures (value(label) → number), nothing for one column."""
    if len(labels) != 2:
        return ""
    first, last = value(labels[0]), value(labels[-1])
    return f" | {last / first:.3f}" if first else " | -"


def show(columns):
    """Print the figures of one or more runs ({label: results}) side by side, with after/before for two."""
    labels = list(columns)
    first = columns[labels[0]]
    ratio = " | after/before" if len(labels) == 2 else ""
    rule = "|---|" + "---|" * (len(labels) + (len(labels) == 2))
    print(f"{first['meters']} meters, {first['latency_ms']} ms injected per DynamoDB call (push part)")
    if "push" in first:
        show_push(columns, labels, ratio, rule)
    if "wru" in first:
        print("\n| live, WRU per reading (RRU; calls per push) | " + " | ".join(labels) + ratio + " |")
        print(rule)
        for kind in first["wru"]:
            for window in first["wru"][kind]:
                print(f"| {kind}, {window} | " + " | ".join(
                    f"{columns[lb]['wru'][kind][window]['wcu_per_reading']:.2f} "
                    f"({columns[lb]['wru'][kind][window]['rcu_per_reading']:.2f}; "
                    f"{columns[lb]['wru'][kind][window]['calls_per_push']:.1f})" for lb in labels)
                    + _ratio(labels, lambda lb: columns[lb]['wru'][kind][window]['wcu_per_reading']) + " |")
    if "catchup" in first:
        print("\n| catch-up, batches of 1000: WRU per reading (RRU; calls, s per batch) | " + " | ".join(labels)
              + ratio + " |")
        print(rule)
        for kind in first["catchup"]:
            print(f"| {kind} | " + " | ".join(
                f"{columns[lb]['catchup'][kind]['wcu_per_reading']:.3f} ({columns[lb]['catchup'][kind]['rcu_per_reading']:.3f}; "
                f"{columns[lb]['catchup'][kind]['calls_per_batch']:.0f}, "
                f"{columns[lb]['catchup'][kind]['seconds_per_batch']:.2f} s)" for lb in labels)
                + _ratio(labels, lambda lb: columns[lb]['catchup'][kind]['wcu_per_reading']) + " |")
    if "year" in first:
        show_year(columns, labels, ratio, rule)


def show_push(columns, labels, ratio, rule):
    """The push table: seconds with latency and calls, and each push's calls by operation."""
    first = columns[labels[0]]
    print("\n| POST /data, seconds with latency (calls) | " + " | ".join(labels) + ratio + " |")
    print(rule)
    for row in first["push"]:
        print(f"| {row} | " + " | ".join(f"{columns[lb]['push'][row]['seconds']:.2f} ({columns[lb]['push'][row]['calls']})"
                                        for lb in labels) + _ratio(labels, lambda lb: columns[lb]['push'][row]['seconds']) + " |")
    for lb in labels:
        for row, figures in columns[lb]["push"].items():
            print(f"  {lb} {row}: {figures['by_call']}, {figures['wcu']} WRU, {figures['rcu']} RRU")


def show_year(columns, labels, ratio, rule):
    """The /file table: median seconds and items read per reading."""
    print("\n| GET /file of a meter-year (105,120 readings), in-process | " + " | ".join(labels) + ratio + " |")
    print(rule)
    print("| median seconds | " + " | ".join(f"{columns[lb]['year']['seconds']:.2f}" for lb in labels)
          + _ratio(labels, lambda lb: columns[lb]['year']['seconds']) + " |")
    print("| items read per reading (items; calls) | " + " | ".join(
        f"{columns[lb]['year']['items_read_per_reading']:.4f} ({columns[lb]['year']['items_read']}; "
        f"{columns[lb]['year']['calls']})" for lb in labels)
        + _ratio(labels, lambda lb: columns[lb]['year']['items_read_per_reading']) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=300)
    parser.add_argument("--latency-ms", type=float, default=10.0)
    parser.add_argument("--wru-meters", type=int, default=20)
    parser.add_argument("--catchup-meters", type=int, default=30)
    parser.add_argument("--sample-batches", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="GET /file reads of the year (median)")
    parser.add_argument("--parts", default="push,wru,catchup,year")
    parser.add_argument("--baseline", default="f813d8d", help="the commit of the layout before (default f813d8d)")
    parser.add_argument("--code", help="the checkout whose app and chalicelib run (default: this one)")
    parser.add_argument("--compare", help="run this tree's code and the checkout at COMPARE, side by side")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not (args.code or args.json):
        before = args.compare or baseline_tree(args.baseline)
        name = os.path.basename(os.path.abspath(args.compare)) if args.compare else args.baseline
        columns = {}
        for label, code in ((f"before ({name})", before),
                            ("after (this tree)", os.path.dirname(HERE))):
            argv = [sys.executable, os.path.abspath(__file__), "--json", "--code", code] + \
                [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                 if k in ("meters", "latency_ms", "wru_meters", "catchup_meters", "sample_batches", "parts", "repeats")]
            started = time.perf_counter()
            answer = subprocess.run(argv, stdout=subprocess.PIPE, text=True, check=True)   # stderr: through
            columns[label] = json.loads(answer.stdout.strip().splitlines()[-1])
            print(f"{label}: ran in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        show(columns)
        return
    results = run(args)
    if args.json:
        print(json.dumps(results))
    else:
        show({os.path.basename(CODE): results})


if __name__ == "__main__":
    main()

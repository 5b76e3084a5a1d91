"""make run's stop with a year of a 300-meter building in its state: how long it takes, against the one-file
save every stop used to write.

The state is built in-process (moto, the stack of bench_layout): a project "building" with --meters
meters and --days days of 5-minute readings each, written as ingest lays them out
(bench_layout.fill_days: the first and last day through chalicelib.readings.ingest, the days between
as the day items readings.day_item builds, one PutItem each, checked equal to what ingest wrote), and
saved by tools/aws_state.py into .local/stack-PORT/aws-state/ on ports of its own. Then `make run`
starts over it as a user starts it (its own session, DEMO_HISTORY_DAYS=1), and once its banner is
out, SIGTERM goes to make; --repeats times each: when a periodic save of the moto server has just
passed (idle), and right after a day item more for every meter, written to the embedded AWS (every
partition of the building changed: the most a stop can have to write). Printed: the stop `make run` reports ("stopped in X s"),
the time from SIGTERM to make's exit, the moto server's own stop line (files and MB it wrote), and
its load time at start. Baseline, measured in this run on the same state: the one pickle of every
backend that tools/aws_server.py wrote at each stop before (pickle.dumps of the backends + write).
Usage: .venv/bin/python bench/bench_stack_stop.py [--meters 300] [--days 365] [--repeats 3] [--keep]
       .venv/bin/python bench/bench_stack_stop.py --build-only --state DIR [--meters 30] [--days 365]
         (writes the state only and prints {"project", "key"}: tests/system/test_stack_lifecycle.py uses it)
"""
import argparse
import json
import os
import pickle
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]


def build(state_dir, meters_count, days):
    """The building's state saved in state_dir (tools/aws_state.py's layout); (project id, key, its meters'
    partition keys, baseline s, MB)."""
    from bench_layout import fill_days, make_meter, new_project, stack

    from chalicelib.tables import readings_table
    from tools.aws_state import SERVICES, Store

    with stack():
        project, key = new_project("building")
        series = []
        for i in range(meters_count):
            make_meter(project, f"suite-{i:03d}")
            series.append(readings_table.series_key(project, fill_days(project, f"suite-{i:03d}", days)["meter_id"]))
        from moto.backends import get_backend

        Store(state_dir)                                   # registers the picklers moto's state needs
        os.makedirs(os.path.dirname(state_dir), exist_ok=True)
        started = time.perf_counter()
        data = pickle.dumps({name: dict(get_backend(name)) for name in SERVICES},  # type: ignore[call-overload]
                            protocol=pickle.HIGHEST_PROTOCOL)
        with open(os.path.join(os.path.dirname(state_dir), "baseline.pickle"), "wb") as handle:
            handle.write(data)
        baseline = time.perf_counter() - started
        os.remove(os.path.join(os.path.dirname(state_dir), "baseline.pickle"))
        Store(state_dir).save()
    return project, key, series, baseline, len(data) / 1e6


def run_and_stop(env, before_stop=None):
    """make run in its own session until its banner, then SIGTERM to make: (reported s, wall s, banner).

    before_stop: called just before the SIGTERM (after a periodic save of the moto server has passed)."""
    process = subprocess.Popen(["make", "--no-print-directory", "run"], cwd=ROOT, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    lines = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "Stop everything with Ctrl-C" in line:
                break
        else:
            raise RuntimeError("make run ended before its banner:\n" + "".join(lines[-30:]))
        time.sleep(6)                                       # one of the moto server's periodic saves passes
        if before_stop:
            before_stop()
        sent = time.perf_counter()
        process.send_signal(signal.SIGTERM)
        rest = process.communicate(timeout=300)[0]
    finally:
        if process.poll() is None:                          # a failure above: stop it as Ctrl-C would
            os.killpg(process.pid, signal.SIGINT)
            process.communicate(timeout=300)
    wall = time.perf_counter() - sent
    reported = re.search(r"stopped in ([0-9.]+) s", rest)
    if not reported:
        raise RuntimeError("no stop time in make run's output:\n" + rest[-3000:])
    return float(reported.group(1)), wall, "".join(lines)


def aws_log_lines(state, pattern):
    with open(os.path.join(state, "logs", "aws.log")) as handle:
        return [line.strip() for line in handle if re.search(pattern, line)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=300)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep .local/stack-PORT/ afterwards")
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--state", help="with --build-only: the aws-state directory to write")
    args = parser.parse_args()
    if args.build_only:
        project, key, _series, _baseline, _size = build(os.path.abspath(args.state), args.meters, args.days)
        print(json.dumps({"project": project, "key": key}))
        return 0
    from tools.ports import free_port

    base = free_port(5)
    state = ROOT / ".local" / f"stack-{base}"
    started = time.perf_counter()
    _project, _key, series, baseline, size = build(str(state / "aws-state"), args.meters, args.days)
    stored = sum(f.stat().st_size for f in (state / "aws-state").iterdir()) / 1e6
    print(f"state: {args.meters} meters x {args.days} days of 5-minute readings "
          f"({args.meters * args.days:,} day items), built in {time.perf_counter() - started:.0f} s; "
          f"{stored:.0f} MB on disk in {len(list((state / 'aws-state').iterdir()))} files")
    print(f"baseline (same run): the one-file save every stop wrote before: {baseline:.2f} s for {size:.0f} MB")
    env = {**os.environ, "API_PORT": str(base), "AWS_PORT": str(base + 1), "MODBUS_PORT": str(base + 2),
           "DEMO_HISTORY_DAYS": "1"}
    env.pop("FRESH", None)
    days_after = iter(range(args.days, 10 ** 6))

    def write_every_meter():
        """A day item more for every meter of the building, written straight to the embedded AWS (POST /data of
        300 meters takes minutes there, issue 20): every partition of its readings changed since the last
        save, the most a stop can have to write."""
        from bench_layout import YEAR_START

        from chalicelib.metering import readings
        from chalicelib.platform import aws, db
        from chalicelib.tables import readings_table
        from tools.provision import local_stage_environment

        os.environ.update({**local_stage_environment(), "AWS_ENDPOINT_URL": f"http://127.0.0.1:{base + 1}",
                           "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"})
        aws.reset_clients()
        day = time.strftime("%Y-%m-%d", time.gmtime(YEAR_START + next(days_after) * 86400))
        for key in series:
            db.put(readings_table.NAME, readings.day_item(key, day, {0: 1e6}))

    results = {}
    try:
        for scenario, before_stop in (("idle (a periodic save passed)", None),
                                      (f"right after a write to all {args.meters} meters", write_every_meter)):
            reported, walls = [], []
            for attempt in range(args.repeats):
                stop, wall, _banner = run_and_stop(env, before_stop)
                reported.append(stop)
                walls.append(wall)
                aws_stop = aws_log_lines(str(state), r"^stopped:")[-1]
                loaded = aws_log_lines(str(state), r"^state restored")[-1]
                print(f"{scenario}, run {attempt + 1}: make run reported 'stopped in {stop:.1f} s'; SIGTERM to "
                      f"make's exit {wall:.2f} s; moto: {aws_stop!r}; at start: {loaded!r}")
            results[scenario] = (statistics.median(reported), statistics.median(walls))
    finally:
        if not args.keep:
            shutil.rmtree(state, ignore_errors=True)
    print(f"\nstop, medians of {args.repeats} ({args.meters} meters x {args.days} days, {stored:.0f} MB):")
    print("| moment of the stop | make run reports | SIGTERM to make's exit | the one-file save alone (before) |")
    print("|---|---:|---:|---:|")
    for scenario, (reported_s, wall_s) in results.items():
        print(f"| {scenario} | {reported_s:.1f} s | {wall_s:.2f} s | {baseline:.2f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

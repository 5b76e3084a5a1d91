"""Benchmark chalicelib.outputs.export_writers.export_chunks against the reference writers.

One meter over a year at 5-minute steps (105,120 rows) by default. Times each of our writers
(median of --repeats runs) and each reference (the fast ones the same way, dicttoxml and
yaml.safe_dump once), checks the outputs agree, and measures the peak memory of a streamed
export for N/10, N and 10 N rows. Usage: .venv/bin/python bench/bench_formats.py [--rows N]
"""

import argparse
import csv
import datetime as dt
import io
import json
import logging
import platform
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chalicelib.outputs.export_writers import export_chunks  # noqa: E402

# ref/ours must reach this: XML 30x dicttoxml, YAML 10x safe_dump, JSON/CSV ours <= 1.5x ref.
TARGETS = {"xml": 30.0, "yaml": 10.0, "json": 1 / 1.5, "csv": 1 / 1.5}


def make_rows(n, seed=1):
    """(name, local naive datetime, cumulative kWh) every 5 minutes from 2019-01-01."""
    rng = random.Random(seed)
    t0, register = dt.datetime(2019, 1, 1), 28540.24
    rows = []
    for i in range(n):
        register = round(register + rng.uniform(0.0, 2.5), 2)
        rows.append(("meter1", t0 + dt.timedelta(minutes=5 * i), register))
    return rows


def lazy_rows(n, seed=1):
    """Same rows, generated one at a time (for the memory measure)."""
    rng = random.Random(seed)
    t0, register = dt.datetime(2019, 1, 1), 28540.24
    for i in range(n):
        register = round(register + rng.uniform(0.0, 2.5), 2)
        yield ("meter1", t0 + dt.timedelta(minutes=5 * i), register)


def timed(fn, repeats):
    """(median seconds, last result)."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def ours(fmt, rows):
    return b"".join(export_chunks(fmt, rows))


def ref_csv(rows):
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(("MeterParam", "TimeStamping", "value"))
    writer.writerows(rows)  # csv writes str(datetime): 'YYYY-MM-DD HH:MM:SS'
    return buf.getvalue()


def peak_memory(fmt, n):
    """Peak traced bytes while streaming an export of n lazily generated rows."""
    tracemalloc.start()
    try:
        for _chunk in export_chunks(fmt, lazy_rows(n)):
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=105120)
    parser.add_argument("--repeats", type=int, default=5, help="runs of the fast writers")
    args = parser.parse_args()
    n, rep = args.rows, args.repeats

    import yaml
    from dicttoxml import dicttoxml

    logging.getLogger("dicttoxml").setLevel(logging.WARNING)
    rows = make_rows(n)
    space = [{"MeterParam": m, "TimeStamping": t.strftime("%Y-%m-%d %H:%M:%S"), "value": v}
             for m, t, v in rows]
    tee = [{"MeterParam": m, "TimeStamping": t.strftime("%Y-%m-%dT%H:%M:%S"), "value": v}
           for m, t, v in rows]

    print("python %s on %s, %d rows, median of %d runs (dicttoxml, safe_dump: 1 run)\n"
          % (platform.python_version(), platform.machine(), n, rep))
    results = []

    t_ours, out = timed(lambda: ours("csv", rows), rep)
    t_ref, ref = timed(lambda: ref_csv(rows), rep)
    results.append(("csv", t_ours, "csv.writer", t_ref, out == ref.encode()))

    t_ours, out = timed(lambda: ours("json", rows), rep)
    t_ref, ref = timed(lambda: json.dumps(space), rep)
    results.append(("json", t_ours, "json.dumps", t_ref, out == ref.encode()))
    t_build, _ = timed(lambda: json.dumps([
        {"MeterParam": m, "TimeStamping": str(t), "value": v} for m, t, v in rows]), rep)

    t_ours, out = timed(lambda: ours("xml", rows), rep)
    t_ref, ref = timed(lambda: dicttoxml(tee, custom_root="Response", attr_type=True), 1)
    results.append(("xml", t_ours, "dicttoxml", t_ref, out == ref))

    t_ours, out = timed(lambda: ours("yaml", rows), rep)
    t_ref, ref = timed(lambda: yaml.safe_dump(space), 1)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    same = yaml.load(out, Loader=loader) == space
    results.append(("yaml", t_ours, "yaml.safe_dump", t_ref, same))
    t_cdump = None
    if hasattr(yaml, "CSafeDumper"):
        t_cdump, _ = timed(lambda: yaml.dump(space, Dumper=yaml.CSafeDumper), 1)

    print("| format | ours (s) | reference | ref (s) | ours rows/s | ref rows/s | ref/ours "
          "| target | pass | output checked |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    failed = False
    for fmt, t_o, ref_name, t_r, same in results:
        ratio, target = t_r / t_o, TARGETS[fmt]
        ok = ratio >= target
        failed |= not ok or not same
        goal = ">= %gx" % target if target >= 1 else "ours <= %gx ref" % round(1 / target, 2)
        check = "identical" if fmt != "yaml" else "loads equal"
        print("| %s | %.3f | %s | %.3f | %s | %s | %.2fx | %s | %s | %s |" % (
            fmt, t_o, ref_name, t_r, format(round(n / t_o), ","), format(round(n / t_r), ","),
            ratio, goal, "PASS" if ok else "FAIL", check if same else "DIFFERENT"))
    print("\nFor context: json.dumps including building the dicts from the rows: %.3f s; "
          "yaml with libyaml's CSafeDumper: %s." % (
              t_build, "%.3f s" % t_cdump if t_cdump is not None else "n/a"))

    sizes = [max(n // 10, 1), n, n * 10]
    print("\nPeak traced memory of a streamed export (1 MiB chunks, rows from a generator, "
          "chunks dropped as they come):\n")
    print("| format | " + " | ".join("%s rows" % format(k, ",") for k in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for fmt in ("csv", "json", "xml", "yaml"):
        print("| %s | " % fmt + " | ".join(
            "%.2f MiB" % (peak_memory(fmt, k) / 2**20) for k in sizes) + " |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

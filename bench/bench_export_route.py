"""GET /file of one meter-year (105,120 readings) through the route, per format, against in-process moto.

For each format: wall time of the whole request (DynamoDB reads, writing, S3 upload, presigning; the
median of --repeats) split into the time inside moto and the client's (what a Lambda spends too),
DynamoDB items read per exported reading, and the peak memory the request allocates (tracemalloc)
against a baseline of a tenth of the year (37 days) in the same run. The memory runs send the file
to a sink instead of moto's S3, which keeps its own copy of every object in memory and would hide
ours. moto's DynamoDB still answers in-process, deep-copies what it answers and keeps some of it, so
the peak of reading each range alone is printed too, and subtracted: what is left is the export's
own memory (writer, part buffer). Half a year is measured as well: once the file passes one multipart
part (8 MiB) it stops growing with rows. One slow run (--client-memory) samples the memory allocated
outside moto (see ClientMemory) for the year.
The downloaded file is checked to hold every row.
Usage: .venv/bin/python bench/bench_export_route.py [--repeats 1] [--formats csv,json,xml,yaml] [--client-memory xml|none]
"""
import argparse
import platform
import statistics
import sys
import time
import tracemalloc
import urllib.parse
from datetime import date
from typing import Any

from bench_layout import YEAR_START, DynamoCounter, MotoTimer, fill_days, make_meter, new_project, stack

YEAR = ("2025-01-01", "2025-12-31")        # 365 days: 105,120 readings
TENTH = ("2025-01-01", "2025-02-06")       # 37 days: 10,656 readings
HALF = ("2025-01-01", "2025-07-02")        # 183 days: 52,704 readings


class ClientMemory:
    """The client's own traced memory (moto's filtered out), sampled at its largest moments.

    moto answers in-process: it deep-copies the items of each Query and keeps some of what it
    allocates, so the process's tracemalloc peak grows with the range for reasons a Lambda does not
    have. This samples the traced memory whose allocation traceback has no moto frame: on entering
    every AWS call (a Query page is about to replace the last one) and whenever a part or the whole
    file is handed to S3 (the part buffer and its copy are both alive), and once at the end.
    """

    FRAMES = 10

    def __init__(self):
        self.peak = 0
        self.samples = 0

    def sample(self):
        snapshot = tracemalloc.take_snapshot().filter_traces([
            tracemalloc.Filter(False, "*/moto/*", all_frames=True),
            tracemalloc.Filter(False, tracemalloc.__file__)])
        self.peak = max(self.peak, sum(trace.size for trace in snapshot.traces))
        self.samples += 1

    def __enter__(self):
        from moto.core import botocore_stubber

        stubber_class: Any = botocore_stubber.BotocoreStubber   # its method is wrapped while the block runs
        self._cls = stubber_class
        self._original = original = self._cls.process_request
        meter = self

        def sampled(stubber, request):
            meter.sample()
            return original(stubber, request)

        self._cls.process_request = sampled
        tracemalloc.start(self.FRAMES)
        return self

    def __exit__(self, *_exc):
        self.sample()
        tracemalloc.stop()
        self._cls.process_request = self._original


class SinkS3:
    """Stands in for the S3 client during the memory runs: counts the bytes, keeps none."""

    def __init__(self, real, on_write=None):
        self.real = real
        self.bytes = 0
        self.on_write = on_write or (lambda: None)

    def create_multipart_upload(self, **_kwargs):
        return {"UploadId": "sink"}

    def upload_part(self, Body, PartNumber, **_kwargs):
        self.on_write()
        self.bytes += len(Body)
        return {"ETag": f'"{PartNumber}"'}

    def put_object(self, Body, **_kwargs):
        self.on_write()
        self.bytes += len(Body)
        return {}

    def complete_multipart_upload(self, **_kwargs):
        return {}

    def abort_multipart_upload(self, **_kwargs):
        return {}

    def generate_presigned_url(self, *args, **kwargs):
        return self.real.generate_presigned_url(*args, **kwargs)


def rows_in(fmt, body):
    text = body.decode()
    if fmt == "csv":
        return text.count("\r\n") - 1
    if fmt == "json":
        return text.count('{"MeterParam"')
    if fmt == "xml":
        return text.count('<item type="dict">')
    return text.count("- MeterParam:")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--formats", default="csv,json,xml,yaml")
    parser.add_argument("--client-memory", default="xml", help="format of the slow moto-filtered memory run, or none")
    args = parser.parse_args()
    from chalice.test import Client

    from app import app
    from chalicelib.metering import readings
    from chalicelib.outputs import downloads
    from chalicelib.platform import aws, config

    with stack(), Client(app, stage_name="local") as client:
        started = time.perf_counter()
        project_id, key = new_project("export")
        meter_id = make_meter(project_id)["id"]
        fill_days(project_id, "meter1", 365)
        print(f"python {platform.python_version()}, moto in-process, one meter, 5-minute readings "
              f"(setup {time.perf_counter() - started:.0f} s); wall: median of {args.repeats}\n")

        def export(fmt, days):
            answer = client.http.get(f"/file?start={days[0]}&end={days[1]}&type={fmt}", headers={"X-API-Key": key})
            assert answer.status_code == 303, answer.body
            return answer.headers["Location"]

        def whole_peak(action):
            tracemalloc.start()
            try:
                action()
                return tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()

        def with_sink(action, on_write=None):
            """Run action with S3 writes going to a sink; returns the bytes written."""
            real, original = aws.s3(), aws.s3
            sink = SinkS3(real, on_write)
            aws.s3 = lambda: sink
            try:
                action()
                return sink.bytes
            finally:
                aws.s3 = original

        ranges = {"37 d": TENTH, "183 d": HALF, "365 d": YEAR}
        first_epoch = YEAR_START
        reads = {}
        for label, (_first, last) in ranges.items():
            days = (date.fromisoformat(last) - date.fromisoformat(_first)).days + 1
            reads[label] = whole_peak(lambda: sum(1 for _ in readings.series(
                project_id, meter_id, first_epoch, first_epoch + days * 86400)))
        print("whole-process tracemalloc peak of reading the range alone (readings.series; moto's DynamoDB "
              "answers in-process): " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in reads.items()) + "\n")
        print("| format | rows | file (MB) | wall (s) | of which client (s) | rows/s | items read / row "
              "| DynamoDB calls | peak MB 37 d / 183 d / 365 d | minus the read alone: 37 d / 183 d / 365 d |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        sizes = {}
        for fmt in args.formats.split(","):
            times, clients = [], []
            for _ in range(args.repeats):
                with DynamoCounter() as counter, MotoTimer() as in_moto:
                    began = time.perf_counter()
                    url = export(fmt, YEAR)
                    times.append(time.perf_counter() - began)
                clients.append(times[-1] - in_moto.seconds)
            key_name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.lstrip("/"))
            body = aws.s3().get_object(Bucket=config.resource_name("FilesBucket"), Key=key_name)["Body"].read()
            rows = rows_in(fmt, body)
            assert rows == 105120, f"{fmt}: {rows} rows"
            sizes[fmt] = len(body)
            peaks: dict[str, float] = {}
            for label, span in ranges.items():
                sent = with_sink(lambda: peaks.__setitem__(label, whole_peak(lambda: export(fmt, span))))
            assert sent == len(body)
            wall = statistics.median(times)
            print(f"| {fmt} | {rows:,} | {len(body) / 1e6:.1f} | {wall:.1f} | {statistics.median(clients):.1f} "
                  f"| {rows / wall:,.0f} | {counter.items / rows:.4f} | {sum(counter.calls.values())} "
                  f"| {' / '.join(f'{peaks[k] / 1e6:.1f}' for k in ranges)} "
                  f"| {' / '.join(f'{(peaks[k] - reads[k]) / 1e6:.1f}' for k in ranges)} |")
            sys.stdout.flush()
        if args.client_memory != "none":
            fmt = args.client_memory
            with ClientMemory() as client_side:
                sent = with_sink(lambda: export(fmt, YEAR), on_write=client_side.sample)
            print(f"\n{fmt}, year, memory allocated outside moto ({client_side.samples} samples: at each AWS call "
                  f"and each S3 part): peak {client_side.peak / 1e6:.1f} MB for a {sent / 1e6:.1f} MB file "
                  f"(part size {downloads.PART_BYTES / 2 ** 20:.0f} MiB)")


if __name__ == "__main__":
    main()

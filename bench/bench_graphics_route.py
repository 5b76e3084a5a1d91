"""GET /graphics?type=line of one meter-year (105,120 readings) through the route, against in-process moto.

Wall time of the whole request (median of --repeats), split into the time inside moto and the
client's, with the time of the DynamoDB read alone (chalicelib.metering.readings.series of the same range)
and of drawing alone (chart_render.render_png of those points) for scale; a week (the default
period) for comparison. The PNG is fetched and its size checked.
Usage: .venv/bin/python bench/bench_graphics_route.py [--repeats 3]
"""
import argparse
import platform
import statistics
import struct
import time
import urllib.parse

from bench_layout import YEAR_START, DynamoCounter, MotoTimer, fill_days, make_meter, median_time, new_project, stack

RANGES = {"year": ("2025-01-01", "2025-12-31"), "week": ("2025-12-25", "2025-12-31")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from chalice.test import Client

    from app import app
    from chalicelib.metering import meters, readings
    from chalicelib.outputs import chart_render
    from chalicelib.platform import aws, config

    with stack(), Client(app, stage_name="local") as client:
        started = time.perf_counter()
        project_id, key = new_project("graphics")
        make_meter(project_id)
        fill_days(project_id, "meter1", 365)
        meter = meters.find(project_id, name="meter1")
        print(f"python {platform.python_version()}, moto in-process, one meter, 5-minute readings "
              f"(setup {time.perf_counter() - started:.0f} s), median of {args.repeats}\n")
        client.http.get("/graphics?type=line&width=2&height=2", headers={"X-API-Key": key})   # import matplotlib
        print("| range | readings | route wall (s) | of which client (s) | items read | read alone (s) "
              "| render alone (s) | PNG |")
        print("|---|---|---|---|---|---|---|---|")
        for label, (start, end) in RANGES.items():
            walls, clients = [], []
            for _ in range(args.repeats):
                with DynamoCounter() as counter, MotoTimer() as in_moto:
                    began = time.perf_counter()
                    answer = client.http.get(f"/graphics?type=line&start={start}&end={end}",
                                             headers={"X-API-Key": key})
                    walls.append(time.perf_counter() - began)
                clients.append(walls[-1] - in_moto.seconds)
                assert answer.status_code == 303, answer.body
            url = answer.headers["Location"]
            png = aws.s3().get_object(Bucket=config.resource_name("FilesBucket"),
                                      Key=urllib.parse.unquote(urllib.parse.urlsplit(url).path.lstrip("/")))["Body"].read()
            width, height = struct.unpack(">II", png[16:24])
            first = YEAR_START + (0 if label == "year" else 358 * 86400)
            read_seconds, points = median_time(
                lambda: list(readings.series(project_id, meter["meter_id"], first, YEAR_START + 365 * 86400)), 1)
            series = [chart_render.LineSeries("meter1", [p[0] for p in points], [p[1] for p in points])]
            render_seconds, _png = median_time(lambda: chart_render.render_png(
                "line", width_px=1600, height_px=900, title="meter1", tz_name="UTC", series=series), args.repeats)
            print(f"| {label} | {len(points):,} | {statistics.median(walls):.1f} | {statistics.median(clients):.1f} "
                  f"| {counter.items} | {read_seconds:.1f} | {render_seconds:.2f} | {width}x{height}, "
                  f"{len(png) / 1000:.0f} kB |")


if __name__ == "__main__":
    main()

"""Cold-start import time of the Lambda entry point (app.py) against an eager-import baseline.

`python -X importtime` of `import app` (what the runtime does before the first request) and of the
baseline: `import app` followed by what a naive app would import at the top (numpy, matplotlib's
Figure/Agg canvas/dates as chalicelib/outputs/chart_render.py uses them, PyYAML, dicttoxml). Runs alternate,
the figure is the median of --repeats runs of the sum of the top-level imports of the statement
(interpreter start-up excluded). Three settings:
  - checkout: the venv and the checkout, bytecode cached (a developer machine);
  - package as on Lambda: build/dev/deployment.zip unzipped into a read-only directory, run with -B
    (/var/task is read-only: nothing is written) and no cache prefix: only the zip's own bytecode
    (infra/package.py compiles it) can spare compiling;
  - package without its bytecode: the same with every __pycache__ removed, what each cold start
    paid before the package shipped bytecode (the baseline).
Needs `make package` first for the last two.
Usage: .venv/bin/python bench/bench_import.py [--repeats 7] [--zip build/dev/deployment.zip]
"""
import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAZY = "import app"
EAGER = ("import app\nimport numpy\nimport matplotlib\nfrom matplotlib.figure import Figure\n"
         "from matplotlib.backends.backend_agg import FigureCanvasAgg\nimport matplotlib.dates\n"
         "import yaml\nimport dicttoxml")
LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)\s*$")


def top_level(stderr):
    """{module: cumulative µs} of the top-level imports in -X importtime output."""
    found: dict[str, int] = {}
    for line in stderr.splitlines():
        match = LINE.match(line)
        if match and not match.group(3):
            found[match.group(4)] = found.get(match.group(4), 0) + int(match.group(2))
    return found


def run(code, path, no_bytecode):
    """(import µs of code beyond start-up, wall seconds) in a fresh interpreter with path first on sys.path."""
    flags = ["-X", "importtime"] + (["-B"] if no_bytecode else [])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "AWS_"))}
    env["AWS_DEFAULT_REGION"] = "us-east-1"
    prologue = f"import sys; sys.path.insert(0, {path!r})\n"
    started = time.perf_counter()
    process = subprocess.run([sys.executable, *flags, "-c", prologue + code], cwd=path, env=env,
                             capture_output=True, text=True)
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"failed: {code!r} in {path}\n{process.stderr[-2000:]}")
    return top_level(process.stderr), wall


def measure(path, repeats, no_bytecode):
    """{'lazy'|'eager': (median ms, median wall s, heavy modules seen)}."""
    startup, _ = run("pass", path, no_bytecode)
    results: dict[str, tuple[list, list]] = {"lazy": ([], []), "eager": ([], [])}
    for _ in range(repeats):
        for name, code in (("lazy", LAZY), ("eager", EAGER)):
            imports, wall = run(code, path, no_bytecode)
            total = sum(us for module, us in imports.items() if module not in startup)
            results[name][0].append(total / 1000)
            results[name][1].append(wall)
    return {name: (statistics.median(ms), statistics.median(walls), min(ms), max(ms))
            for name, (ms, walls) in results.items()}


def read_only(path):
    """Remove every write permission under path (as /var/task; root still could, -B makes sure it won't)."""
    for folder, _dirs, files in os.walk(path):
        for name in files:
            os.chmod(os.path.join(folder, name), 0o444)
        os.chmod(folder, 0o555)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--zip", default=os.path.join(ROOT, "build", "dev", "deployment.zip"))
    args = parser.parse_args(argv)
    print(f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
          f"median of {args.repeats} runs each, lazy and eager alternating")
    settings = [("checkout, bytecode cached", ROOT, False)]
    tmp = None
    if os.path.exists(args.zip):
        tmp = tempfile.TemporaryDirectory(prefix="bench-import-")
        shipped, bare = os.path.join(tmp.name, "with"), os.path.join(tmp.name, "without")
        with zipfile.ZipFile(args.zip) as archive:
            archive.extractall(shipped)
            archive.extractall(bare, [n for n in archive.namelist() if "__pycache__/" not in n])
        for path in (shipped, bare):
            read_only(path)
        zip_name = os.path.relpath(args.zip, ROOT)
        settings.append((f"{zip_name} unzipped read-only, its bytecode (as on Lambda)", shipped, True))
        settings.append((f"{zip_name} unzipped read-only, bytecode removed (baseline)", bare, True))
    else:
        print(f"({os.path.relpath(args.zip, ROOT)} not found: run `make package` to measure the package too)")
    print("\n| setting | import app (lazy) | eager baseline | saved | wall, lazy / eager |")
    print("|---|---|---|---|---|")
    try:
        for label, path, no_bytecode in settings:
            figures = measure(path, args.repeats, no_bytecode)
            lazy, eager = figures["lazy"], figures["eager"]
            print(f"| {label} | {lazy[0]:.0f} ms ({lazy[2]:.0f}–{lazy[3]:.0f}) | {eager[0]:.0f} ms "
                  f"({eager[2]:.0f}–{eager[3]:.0f}) | {eager[0] - lazy[0]:.0f} ms ({eager[0] / lazy[0]:.1f}×) | "
                  f"{lazy[1]:.2f} s / {eager[1]:.2f} s |")
    finally:
        if tmp:
            for folder, _dirs, _files in os.walk(tmp.name):
                os.chmod(folder, 0o755)
            tmp.cleanup()
    print(f"\nimport time = sum of the top-level `-X importtime` cumulative times of the statement "
          f"(start-up excluded); wall = the whole interpreter run.\nlazy: {LAZY!r}; eager: {EAGER!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

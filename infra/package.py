"""Build the deployable artifact of a stage and check it: what `make package` runs.

Runs `chalice package --stage STAGE --merge-template infra/resources.yaml OUT` (OUT is build/STAGE
by default: deployment.zip and sam.yaml), then fails when
  - this is not Python 3.12 (chalice builds the dependencies for the Python running it, and the
    template pins the python3.12 runtime: another version would ship wheels the runtime can't load);
  - chalice reports a dependency it could not install for the Lambda platform (it only warns, and
    caches the incomplete zip: the cached zip is deleted so the next run tries again);
  - a pinned requirement (requirements.txt) is not in the zip at its pinned version, or a compiled
    extension in it is not for CPython 3.12 on Linux x86_64, or a module of the app is missing;
  - the unzipped package exceeds MAX_UNZIPPED_BYTES (Lambda's limit is 250 MiB);
  - a module of the package has no bytecode for the runtime beside it;
  - the stage generates its IAM policy (autogen_policy) instead of using the policy file it names (.chalice/policy.json);
  - cfn-lint reports anything (error, warning or informational) on the packaged template.
Between the build and the checks, the zip is made lighter (slim()): what never runs on Lambda is
left out (TRIM: tests, type stubs, C sources, caches, matplotlib's other backends and fonts, the
fontTools that only PDF/PS output uses; the SDK models of services the stage's IAM policy does not
let the function call), and every module is compiled for Python 3.12 into
__pycache__ as unchecked-hash .pyc, which the runtime loads from the read-only /var/task without
looking at the source (it can't write bytecode there: without it every cold start compiles).
Prints the package's sizes. Usage: python infra/package.py [--stage dev] [--out build/dev] [--no-lint]
"""
import argparse
import compileall
import json
import os
import py_compile
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

from chalice.config import Config
from packaging import tags
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name, canonicalize_version

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATE = os.path.join(ROOT, "infra", "resources.yaml")
REQUIREMENTS = os.path.join(ROOT, "requirements.txt")
DEPLOYMENTS_CACHE = os.path.join(ROOT, ".chalice", "deployments")
RUNTIME = (3, 12)
RUNTIME_GLIBC = (2, 34)                         # Amazon Linux 2023, python3.12's OS
LAMBDA_LIMIT_BYTES = 250 * 1024 * 1024
MAX_UNZIPPED_BYTES = 120 * 1024 * 1024          # the goal (it was 150 MiB untrimmed, without bytecode)
LAMBDA_TASK_ROOT = "/var/task"                  # where the runtime unpacks the zip (paths in tracebacks)
# What never runs on Lambda, left out of the zip (paths inside it; each pattern says why).
TRIM = [
    (r"(^|/)tests/", "test suites of the dependencies"),
    (r"(^|/)__pycache__/|\.pyc$", "bytecode caches from the build (the package's own is compiled after)"),
    (r"\.(pyi|c|h|cpp|pyx|pxd|a)$|(^|/)py\.typed$", "type stubs, C sources and static libraries"),
    (r"^numpy/(f2py|_pyinstaller)/", "numpy's Fortran wrapper generator and PyInstaller hooks"),
    # matplotlib imports fontTools.agl (via dviread) when the Agg backend loads; the rest of fontTools
    # subsets fonts for PDF/PS output, which the API never makes.
    (r"^fontTools/(?!(__init__|agl)\.py$|misc/(__init__|loggingTools|textTools)\.py$)", "fontTools beyond agl"),
    (r"^matplotlib/backends/(?!(__init__|registry|backend_agg)\.py$|_backend_agg\.cpython-[^/]*\.so$)",
     "matplotlib backends other than Agg (the API renders PNG only)"),
    (r"^matplotlib/mpl-data/fonts/(?!ttf/(DejaVuSans(-Bold|-Oblique|-BoldOblique|Display)?\.ttf|"
     r"LastResortHE-Regular\.ttf|LICENSE_DEJAVU)$)", "fonts other than DejaVu Sans (the charts' only font)"),
    (r"^PIL/_(avif|webp|imagingft|imagingtk)\.cpython-[^/]*\.so$|^pillow\.libs/lib(avif|webp|webpmux|webpdemux|"
     r"sharpyuv|freetype|harfbuzz|png16|brotlidec|brotlicommon)-",
     "Pillow's AVIF and WebP codecs, its FreeType text and Tk (matplotlib saves PNG through Pillow and "
     "draws text with its own FreeType)"),
    (r"^swagger_ui_bundle/vendor/[^/]+/(?!swagger-ui-bundle\.js$|swagger-ui\.css$)",
     "Swagger UI's source maps, ES modules and sample pages (GET /docs serves the bundle and its CSS)"),
    (r"^matplotlib/mpl-data/(sample_data|images|plot_directive)/|^matplotlib/mpl-data/kpsewhich\.lua$",
     "matplotlib's sample data, toolbar icons, Sphinx and TeX helpers"),
]
_TRIM = re.compile("|".join(f"(?:{pattern})" for pattern, _why in TRIM))
MISSING_MARKER = "Could not install dependencies"


class PackageError(Exception):
    """The artifact can't be built or is not fit to deploy."""


def pinned_requirements(path=REQUIREMENTS):
    """{canonical name: version} of the requirements pinned with a single == (PEP 508, via packaging)
    whose environment marker, if any, holds here (the runtime's Python on Linux)."""
    pins = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.split("#", 1)[0].strip()
            try:
                requirement = Requirement(line)
            except InvalidRequirement:      # blank lines, pip options (-r, --index-url ...)
                continue
            specifiers = list(requirement.specifier)
            if (len(specifiers) == 1 and specifiers[0].operator == "=="
                    and (requirement.marker is None or requirement.marker.evaluate())):
                pins[canonicalize_name(requirement.name)] = specifiers[0].version
    return pins


def stage_config(stage):
    """The stage's settings as chalice resolves them (chalice.config.Config over .chalice/config.json,
    with the defaults of chalice's command line)."""
    with open(os.path.join(ROOT, ".chalice", "config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    if stage not in config.get("stages", {}):
        raise PackageError(f"no stage {stage!r} in .chalice/config.json")
    return Config(chalice_stage=stage, config_from_disk=config, default_params={"autogen_policy": True})


def policy_file(stage):
    """The path of the stage's IAM policy (autogen_policy must be off)."""
    config = stage_config(stage)
    if config.autogen_policy:
        raise PackageError(f"stage {stage!r} has autogen_policy on: set it false and name its policy file")
    return os.path.join(ROOT, ".chalice", config.iam_policy_file or f"policy-{stage}.json")


def check_zip(path, pins=None):
    """(unzipped bytes, problems) of a deployment zip."""
    pins = pinned_requirements() if pins is None else pins
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        names = [info.filename for info in infos]
        wheels = {name: archive.read(name).decode("utf-8", "replace")
                  for name in names if re.fullmatch(r"[^/]+\.dist-info/WHEEL", name)}
    unzipped = sum(info.file_size for info in infos)
    problems = (_version_problems(names, pins) + _wheel_problems(wheels) + _extension_problems(names)
                + _bytecode_problems(names))
    problems += [f"{f} of the app is not in the package" for f in app_files() if f not in names]
    return unzipped, problems


def _version_problems(names, pins):
    """Each pinned requirement missing from the zip's names, or there at another version."""
    found = {}
    for name in names:
        match = re.fullmatch(r"([^/]+)-([^-/]+)\.dist-info/METADATA", name)
        if match:
            found[canonicalize_name(match.group(1))] = match.group(2)
    problems = []
    for name, version in sorted(pins.items()):
        if name not in found:
            problems.append(f"{name}=={version} is not in the package")
        elif canonicalize_version(found[name]) != canonicalize_version(version):
            problems.append(f"{name} is {found[name]} in the package, {version} in requirements.txt")
    return problems


def _wheel_problems(wheels):
    """Each wheel ({WHEEL file: its text}) none of whose tags the runtime loads."""
    problems = []
    for name, text in sorted(wheels.items()):
        # A wheel installs where any one of its tags is supported (a universal wheel lists py2 and py3).
        tag_problems = {tag: _wheel_tag_problem(tag) for tag in re.findall(r"^Tag:\s*(\S+)", text, re.M)}
        if tag_problems and all(tag_problems.values()):
            problems += [f"{name.split('/')[0]}: {tag} {problem}" for tag, problem in tag_problems.items()]
    return problems


def _extension_problems(names):
    """Each compiled extension of the zip not built for the runtime's CPython on Linux x86_64."""
    problems = []
    for name in names:
        base = name.rsplit("/", 1)[-1]
        if base.endswith(".so") and ".cpython-" in base:
            if not base.split(".cpython-", 1)[1].startswith(f"{RUNTIME[0]}{RUNTIME[1]}-x86_64-linux-gnu"):
                problems.append(f"{name} is not built for CPython {RUNTIME[0]}.{RUNTIME[1]} on Linux x86_64")
    return problems


def _bytecode_problems(names):
    """Each module of the zip without the runtime's bytecode beside it."""
    problems = []
    pycache = set(names)
    for name in names:
        if name.endswith(".py"):
            folder, _, base = name.rpartition("/")
            cached = (folder + "/" if folder else "") + f"__pycache__/{base[:-3]}.{_cache_tag()}.pyc"
            if cached not in pycache:
                problems.append(f"{name} has no bytecode for the runtime ({cached})")
    return problems


def app_files():
    """The app's modules as paths in the zip: app.py and every module of chalicelib/, its subpackages included."""
    found = ["app.py"]
    for folder, dirs, files in os.walk(os.path.join(ROOT, "chalicelib")):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        relative = os.path.relpath(folder, ROOT).replace(os.sep, "/")
        found += [f"{relative}/{f}" for f in sorted(files) if f.endswith(".py")]
    return found


def _cache_tag():
    return f"cpython-{RUNTIME[0]}{RUNTIME[1]}"


def policy_services(stage):
    """The AWS services the stage's function may call: the prefixes of its policy's actions, and STS."""
    with open(policy_file(stage), encoding="utf-8") as handle:
        policy = json.load(handle)
    services = {"sts"}
    for statement in policy.get("Statement", []):
        actions = statement.get("Action", [])
        for action in [actions] if isinstance(actions, str) else actions:
            services.add(action.split(":", 1)[0].lower())
    return services


def trimmed(name, services=None):
    """True for a path of the zip that TRIM leaves out, or the SDK model of a service not in services
    (the function has no permission to call it: its model never loads)."""
    if _TRIM.search(name):
        return True
    parts = name.split("/")
    return (services is not None and parts[0] in ("botocore", "boto3") and len(parts) > 3 and parts[1] == "data"
            and parts[2] not in services)


def slim(zip_path, services=None):
    """Rewrite the zip without what trimmed() leaves out, with every module compiled for the runtime.

    The bytecode is unchecked-hash .pyc (PEP 552): valid whatever the files' times once unzipped, and
    loaded without reading the source. Returns (bytes left out, bytes of bytecode added).
    """
    if sys.version_info[:2] != RUNTIME:
        raise PackageError(f"compile with Python {RUNTIME[0]}.{RUNTIME[1]}, the runtime's")
    removed = 0
    with tempfile.TemporaryDirectory(prefix="slim-", dir=os.path.dirname(zip_path)) as root:
        with zipfile.ZipFile(zip_path) as archive:
            kept = []
            for info in archive.infolist():
                if trimmed(info.filename, services):
                    removed += info.file_size
                elif not info.is_dir():
                    archive.extract(info, root)
                    kept.append(info)
        ok = compileall.compile_dir(root, quiet=2, legacy=False, optimize=0, stripdir=root,
                                    prependdir=LAMBDA_TASK_ROOT,
                                    invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        if not ok:
            raise PackageError("some modules of the package do not compile for the runtime")
        rebuilt = zip_path + ".slim"
        added = _rezip(rebuilt, root, kept)
        os.replace(rebuilt, zip_path)
    return removed, added


def _rezip(rebuilt, root, kept):
    """Write the zip rebuilt of the files kept (unzipped under root) and the bytecode compiled beside them,
    in name order; the bytes of bytecode added."""
    added = 0
    with zipfile.ZipFile(rebuilt, "w", zipfile.ZIP_DEFLATED) as out:
        entries: list[tuple[str, zipfile.ZipInfo | None]] = [(info.filename, info) for info in kept]
        for folder, _dirs, files in os.walk(root):
            if os.path.basename(folder) == "__pycache__":
                for file in files:
                    name = os.path.relpath(os.path.join(folder, file), root).replace(os.sep, "/")
                    entries.append((name, None))
        for name, known in sorted(entries, key=lambda entry: entry[0]):
            path = os.path.join(root, name)
            info = known
            if info is None:
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                added += os.path.getsize(path)
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(path, "rb") as handle:
                out.writestr(info, handle.read())
    return added


def _manylinux_x86_64(glibc_minor):
    """The platform tags of manylinux wheels for x86_64 that glibc 2.glibc_minor loads (PEP 600, and the
    older names of PEP 513/571/599)."""
    legacy = {17: "manylinux2014_x86_64", 12: "manylinux2010_x86_64", 5: "manylinux1_x86_64"}
    platforms = []
    for minor in range(glibc_minor, 4, -1):
        platforms += [f"manylinux_2_{minor}_x86_64"] + ([legacy[minor]] if minor in legacy else [])
    return platforms


# The wheel tags the python3.12 runtime loads, as pip would list them there (packaging.tags).
RUNTIME_PLATFORMS = _manylinux_x86_64(RUNTIME_GLIBC[1])
RUNTIME_TAGS = frozenset(tags.cpython_tags(RUNTIME, platforms=RUNTIME_PLATFORMS)) | frozenset(
    tags.compatible_tags(RUNTIME, f"cp{RUNTIME[0]}{RUNTIME[1]}", RUNTIME_PLATFORMS))
ANY_MANYLINUX_X86_64 = frozenset(_manylinux_x86_64(99))


def _wheel_tag_problem(tag):
    """Why a wheel tag (python-abi-platform, possibly compressed) can't load on the python3.12 x86_64
    runtime, or None."""
    try:
        parsed = tags.parse_tag(tag)
    except ValueError:
        return "is not a wheel tag"
    if parsed & RUNTIME_TAGS:
        return None
    platforms = {t.platform for t in parsed}
    if not platforms & (ANY_MANYLINUX_X86_64 | {"any"}):
        return "is not a manylinux wheel for x86_64 (the Lambda runtime is glibc Linux on x86_64)"
    if not platforms & (set(RUNTIME_PLATFORMS) | {"any"}):
        return (f"needs a glibc newer than {RUNTIME_GLIBC[0]}.{RUNTIME_GLIBC[1]}, the python3.12 runtime's "
                f"(Amazon Linux 2023)")
    return f"is not for CPython {RUNTIME[0]}.{RUNTIME[1]}"


def run_chalice(stage, out):
    """chalice package into out; returns its output. Raises PackageError on missing dependencies."""
    env = dict(os.environ)
    # chalice wants a region to generate the template; the template itself names none.
    if not (env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION")):
        env["AWS_DEFAULT_REGION"] = "us-east-1"
    # pip's downloads stay in the checkout (build/ is ignored by git), not in ~/.cache.
    env["PIP_CACHE_DIR"] = os.path.join(ROOT, "build", "pip-cache")
    chalice = os.path.join(os.path.dirname(sys.executable), "chalice")
    if os.path.exists(out):
        shutil.rmtree(out)
    before = set(os.listdir(DEPLOYMENTS_CACHE)) if os.path.isdir(DEPLOYMENTS_CACHE) else set()
    process = subprocess.run(
        [chalice, "--project-dir", ROOT, "package", "--stage", stage, "--merge-template", TEMPLATE, out],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout
    sys.stdout.write(output)
    after = set(os.listdir(DEPLOYMENTS_CACHE)) if os.path.isdir(DEPLOYMENTS_CACHE) else set()
    if MISSING_MARKER in output:
        for name in after - before:        # don't let the next run reuse the incomplete zip
            os.remove(os.path.join(DEPLOYMENTS_CACHE, name))
        missing = output.split(MISSING_MARKER, 1)[1].split("You will have to", 1)[0].split()
        raise PackageError("chalice could not install these for the Lambda platform: " + ", ".join(missing))
    if process.returncode != 0:
        raise PackageError(f"chalice package failed (exit status {process.returncode})")
    if after - before:                      # a new dependency zip: the older ones are stale
        for name in before:
            if name.endswith(".zip"):
                os.remove(os.path.join(DEPLOYMENTS_CACHE, name))
    return output


def lint(template_path):
    """cfn-lint's findings on a template ('' when none)."""
    process = subprocess.run([os.path.join(os.path.dirname(sys.executable), "cfn-lint"), template_path], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if process.returncode != 0:
        return process.stdout or f"cfn-lint exited with {process.returncode}"
    return ""


def package(stage="dev", out=None, run_lint=True):
    """Build and check the stage's artifact; returns a summary dict (paths and sizes)."""
    if sys.version_info[:2] != RUNTIME:
        raise PackageError(f"package with Python {RUNTIME[0]}.{RUNTIME[1]} (the Lambda runtime), not "
                           f"{sys.version_info[0]}.{sys.version_info[1]}: chalice builds the dependencies "
                           f"for the Python running it")
    out = os.path.abspath(out or os.path.join(ROOT, "build", stage))
    policy = policy_file(stage)
    if not os.path.exists(policy):
        raise PackageError(f"{os.path.relpath(policy, ROOT)} does not exist")
    run_chalice(stage, out)
    zip_path = os.path.join(out, "deployment.zip")
    template_path = os.path.join(out, "sam.yaml")
    removed, compiled = slim(zip_path, policy_services(stage))
    unzipped, problems = check_zip(zip_path)
    if unzipped > MAX_UNZIPPED_BYTES:
        problems.append(f"the package is {unzipped / 2**20:.1f} MiB unzipped: over the "
                        f"{MAX_UNZIPPED_BYTES / 2**20:.0f} MiB budget (Lambda's limit is 250 MiB)")
    if run_lint:
        findings = lint(template_path)
        if findings:
            problems.append("cfn-lint on the packaged template:\n" + findings)
    if problems:
        raise PackageError("the package is not fit to deploy:\n  " + "\n  ".join(problems))
    summary = {"stage": stage, "zip": zip_path, "template": template_path,
               "zipped_bytes": os.path.getsize(zip_path), "unzipped_bytes": unzipped,
               "trimmed_bytes": removed, "bytecode_bytes": compiled}
    print(f"{stage}: {os.path.relpath(zip_path, ROOT)} {summary['zipped_bytes'] / 2**20:.1f} MiB, "
          f"{unzipped / 2**20:.1f} MiB unzipped (Lambda's limit {LAMBDA_LIMIT_BYTES / 2**20:.0f} MiB, "
          f"budget {MAX_UNZIPPED_BYTES / 2**20:.0f} MiB; {removed / 2**20:.1f} MiB left out, "
          f"{compiled / 2**20:.1f} MiB of bytecode added); template {os.path.relpath(template_path, ROOT)}"
          + (" passes cfn-lint" if run_lint else ""))
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--out", help="output directory (default build/STAGE)")
    parser.add_argument("--no-lint", action="store_true", help="skip cfn-lint")
    args = parser.parse_args(argv)
    try:
        package(args.stage, args.out, run_lint=not args.no_lint)
    except PackageError as error:
        print(f"make package: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`make package` and `make deploy`: the artifact is complete, fits in Lambda, lints, and is what was tested.

The packaging runs for real (chalice package, which downloads Lambda-platform wheels from PyPI the
first time; later runs reuse chalice's cache in .chalice/deployments), into build/pytest-STAGE.
`make deploy` runs with a stand-in for the AWS CLI that records its arguments: everything up to
the upload is real.
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest
from chalice.config import Config

from tools import provision

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location("infra_package", os.path.join(ROOT, "infra", "package.py"))
assert _spec is not None and _spec.loader is not None
package = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(package)


def load(path):
    return provision.load_template(path)


@pytest.fixture(scope="module", params=["dev", "prod"])
def packaged(request):
    out = os.path.join(ROOT, "build", f"pytest-{request.param}")
    summary = package.package(request.param, out)
    yield request.param, summary, load(summary["template"])


def test_the_package_fits_in_lambda_with_room_to_spare(packaged):
    stage, summary, _template = packaged
    assert summary["unzipped_bytes"] <= package.MAX_UNZIPPED_BYTES < package.LAMBDA_LIMIT_BYTES
    assert package.LAMBDA_LIMIT_BYTES - summary["unzipped_bytes"] >= 50 * 2**20
    print(f"\n{stage}: {summary['zipped_bytes'] / 2**20:.1f} MiB zipped, "
          f"{summary['unzipped_bytes'] / 2**20:.1f} MiB unzipped")


def test_the_package_holds_the_app_and_every_pinned_requirement_for_the_runtime(packaged):
    _stage, summary, _template = packaged
    size, problems = package.check_zip(summary["zip"])
    assert problems == []
    with zipfile.ZipFile(summary["zip"]) as archive:
        names = set(archive.namelist())
    for name in _chalicelib_files():
        if not name.endswith(".pyc"):
            assert name in names, f"{name} is not shipped"
    assert not {n for n in names if n.startswith(("tests/", "tools/", "edge_agent/", ".venv/", "build/"))}


# Run from the unzipped package alone (python -S: no site-packages; sys.path = the package + stdlib):
# import the entry point as the runtime does, render each kind of chart, and name any module that
# came from elsewhere.
RENDER_FROM_PACKAGE = r"""
import json, os, sys, tempfile
sys.path.insert(0, sys.argv[1])
os.environ["MPLCONFIGDIR"] = tempfile.mkdtemp()
import app
from chalicelib.outputs import chart_render as cr
t0 = 1793491200.0
series = [cr.LineSeries("meter1", [t0 + 300 * i for i in range(2016)], [100 + 0.5 * i for i in range(2016)])]
energy = [("meter1", 120.5), ("meter2", 80.25), ("été ☃", 33.0)]
pngs = {kind: cr.render_png(kind, width_px=800, height_px=400, title="Énergie", tz_name="America/Toronto",
                            energy=energy, series=series) for kind in ("line", "pie", "bar")}
import boto3
for service in sys.argv[2].split(","):   # the services the policy allows: their SDK models are shipped
    boto3.session.Session().client(service, region_name="us-east-1")
outside = sorted(m.__name__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)
                 and not m.__file__.startswith((sys.argv[1], sys.base_prefix)) and m.__name__ != "__main__")
print(json.dumps({"heads": {k: v[:8].hex() for k, v in pngs.items()}, "sizes": {k: len(v) for k, v in pngs.items()},
                  "outside": outside}))
"""


def test_the_trimmed_package_renders_every_chart_from_its_bytecode_alone(packaged, tmp_path):
    """What the trimming left out never runs: the entry point imports and every chart kind renders
    from the unzipped package alone, every source replaced by a line that fails (so each module
    comes from the shipped bytecode: the runtime can't write any), in a read-only directory."""
    stage, summary, _template = packaged
    services = ",".join(sorted(package.policy_services(stage)))
    root = tmp_path / "task"
    with zipfile.ZipFile(summary["zip"]) as archive:
        archive.extractall(root)
    sources = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(folder, name), "w") as handle:
                    handle.write('raise ImportError("compiled from source: the package has no bytecode for it")\n')
                sources += 1
    assert sources > 500
    for folder, _dirs, _files in os.walk(root):
        os.chmod(folder, 0o555)
    env = {"PATH": os.environ.get("PATH", ""), "AWS_DEFAULT_REGION": "us-east-1", "HOME": str(tmp_path)}
    try:
        done = subprocess.run([sys.executable, "-S", "-B", "-c", RENDER_FROM_PACKAGE, str(root), services], cwd=root,
                              env=env, capture_output=True, text=True, timeout=300)
    finally:
        for folder, _dirs, _files in os.walk(root):
            os.chmod(folder, 0o755)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["outside"] == []
    assert set(result["heads"].values()) == {"89504e470d0a1a0a"}            # PNG signatures
    assert all(size > 5000 for size in result["sizes"].values()), result["sizes"]


def test_the_trim_rules_leave_out_only_what_never_runs():
    left_out = ["numpy/_core/tests/test_umath.py", "matplotlib/tests/baseline_images/a.png",
                "numpy/__init__.pyi", "numpy/_core/include/numpy/ndarraytypes.h", "fontTools/misc/bezierTools.c",
                "fontTools/ttLib/ttFont.py", "fontTools/subset/__init__.py", "matplotlib/backends/backend_pdf.py",
                "matplotlib/backends/web_backend/all_figures.html", "matplotlib/backends/qt_editor/_formlayout.py",
                "matplotlib/mpl-data/fonts/ttf/STIXGeneral.ttf", "matplotlib/mpl-data/fonts/afm/cmr10.afm",
                "matplotlib/mpl-data/sample_data/goog.npz", "numpy/f2py/__init__.py", "yaml/__pycache__/x.pyc",
                "PIL/_avif.cpython-312-x86_64-linux-gnu.so", "pillow.libs/libavif-c6062d5f.so.16.4.2",
                "swagger_ui_bundle/vendor/swagger-ui-5.31.0/swagger-ui-bundle.js.map",
                "swagger_ui_bundle/vendor/swagger-ui-5.31.0/swagger-ui-es-bundle.js"]
    kept = ["app.py", "chalicelib/apidocs/openapi.yaml", "chalicelib/outputs/chart_render.py", "fontTools/__init__.py",
            "fontTools/agl.py", "fontTools/misc/textTools.py", "matplotlib/backends/backend_agg.py",
            "matplotlib/backends/_backend_agg.cpython-312-x86_64-linux-gnu.so", "matplotlib/backends/registry.py",
            "matplotlib/mpl-data/fonts/ttf/DejaVuSans.ttf", "matplotlib/mpl-data/fonts/ttf/DejaVuSans-Bold.ttf",
            "matplotlib/mpl-data/matplotlibrc", "matplotlib/testing/__init__.py", "numpy/testing/__init__.py",
            "botocore/data/dynamodb/2012-08-10/service-2.json.gz", "PIL/_imaging.cpython-312-x86_64-linux-gnu.so",
            "pillow.libs/libjpeg-6dc8d115.so.62.4.0", "numpy.libs/libscipy_openblas64_-4b78795a.so",
            "numpy-2.5.5.dist-info/METADATA", "swagger_ui_bundle/__init__.py",
            "swagger_ui_bundle/vendor/swagger-ui-5.31.0/swagger-ui-bundle.js",
            "swagger_ui_bundle/vendor/swagger-ui-5.31.0/swagger-ui.css"]
    services = package.policy_services("dev")
    assert {"dynamodb", "s3", "kms", "logs", "sts"} <= services
    left_out += ["botocore/data/ec2/2016-11-15/service-2.json.gz", "boto3/data/ec2/2016-11-15/resources-1.json"]
    kept += ["botocore/data/s3/2006-03-01/service-2.json.gz", "botocore/data/kms/2014-11-01/service-2.json.gz",
             "botocore/data/endpoints.json", "botocore/data/partitions.json", "boto3/data/dynamodb/x/resources-1.json"]
    assert [name for name in left_out if not package.trimmed(name, services)] == []
    assert [name for name in kept if package.trimmed(name, services)] == []


def test_the_packaged_template_is_the_infrastructure_template_merged(packaged):
    stage, _summary, template = packaged
    mine = load(provision.TEMPLATE)
    for logical_id, resource in mine["Resources"].items():
        merged = template["Resources"][logical_id]
        for key, value in resource.items():
            if key == "Properties":
                for name, prop in value.items():
                    assert _same(merged["Properties"][name], prop), f"{logical_id}.{name} differs once packaged"
            else:
                assert merged[key] == value, f"{logical_id}.{key} differs once packaged"
    function = template["Resources"]["APIHandler"]["Properties"]
    assert function["Runtime"] == "python3.12" and function["Timeout"] < 29
    assert function["Handler"] == "app.app"
    assert function["Environment"]["Variables"]["SECURE_COOKIES"] == "true"
    assert template["Transform"] == "AWS::Serverless-2016-10-31"
    assert stage in function["Tags"]["aws-chalice"]


@pytest.mark.parametrize("function_id", ["APIHandler", "ExportWorker"])
def test_the_functions_role_has_exactly_the_stages_policy_file(packaged, function_id):
    """Each function (the API, the export worker) has a role of its own with exactly the stage's policy."""
    stage, _summary, template = packaged
    role_ref = template["Resources"][function_id]["Properties"]["Role"]["Fn::GetAtt"]
    role_id = (role_ref.split(".") if isinstance(role_ref, str) else role_ref)[0]
    role = template["Resources"][role_id]
    assert role["Type"] == "AWS::IAM::Role"
    assert "ManagedPolicyArns" not in role["Properties"], "no managed policy on top of the tested one"
    (policy,) = role["Properties"]["Policies"]
    with open(package.policy_file(stage), encoding="utf-8") as handle:
        assert _same(policy["PolicyDocument"], json.load(handle))
    functions = [r for r in template["Resources"].values() if r["Type"] == "AWS::Serverless::Function"]
    roles = [lid for lid, r in template["Resources"].items() if r["Type"] == "AWS::IAM::Role"]
    assert len(roles) == len(functions), "one role per function, no other"


def test_the_export_worker_is_packaged_fed_by_the_queue(packaged):
    """chalice's function of app.export_worker is the template's ExportWorker: its handler, fed by the
    template's queue (not the placeholder name in app.py), with the stage's policy (which grants the
    queue's calls, tests/unit/test_policy.py) and settings."""
    _stage, _summary, template = packaged
    resources = template["Resources"]
    functions = {lid for lid, r in resources.items() if r["Type"] == "AWS::Serverless::Function"}
    assert functions == {"APIHandler", "ExportWorker"}
    worker = resources["ExportWorker"]["Properties"]
    assert worker["Handler"] == "app.export_worker"
    (event,) = worker["Events"].values()
    assert event["Type"] == "SQS" and event["Properties"]["Queue"] == {"Fn::Sub": "${ExportQueue.Arn}"}
    assert event["Properties"]["BatchSize"] == 1
    assert worker["Environment"]["Variables"]["EXPORT_QUEUE_URL"] == {"Ref": "ExportQueue"}


def _same(a, b):
    """Equal, with Fn::GetAtt 'X.Arn' and ['X', 'Arn'] the same."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) == set(b) == {"Fn::GetAtt"}:
            split = [v.split(".", 1) if isinstance(v, str) else list(v) for v in (a["Fn::GetAtt"], b["Fn::GetAtt"])]
            return split[0] == split[1]
        return set(a) == set(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


# ---- the checks themselves --------------------------------------------------------------------

def _zip(path, files):
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return str(path)


def _chalicelib_files():
    """Every file of chalicelib/ and its subpackages (but bytecode caches), as paths in the zip."""
    found = []
    for folder, dirs, files in os.walk(os.path.join(ROOT, "chalicelib")):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        found += [os.path.relpath(os.path.join(folder, f), ROOT).replace(os.sep, "/") for f in files]
    return found


def _pyc(name):
    folder, _, base = name.rpartition("/")
    return (folder + "/" if folder else "") + f"__pycache__/{base[:-3]}.cpython-312.pyc"


def test_check_zip_flags_missing_or_wrong_dependencies_and_platforms(tmp_path):
    app_files = {"app.py": ""}
    app_files.update({name: "" for name in _chalicelib_files() if name.endswith(".py")})
    good = {**app_files, "numpy-2.5.5.dist-info/METADATA": "", "pyyaml-6.0.4.dist-info/METADATA": "",
            "numpy-2.5.5.dist-info/WHEEL": "Tag: cp312-cp312-manylinux_2_27_x86_64\n",
            "numpy/core/_x.cpython-312-x86_64-linux-gnu.so": ""}
    good.update({_pyc(name): "" for name in list(good) if name.endswith(".py")})
    pins = {"numpy": "2.5.5", "pyyaml": "6.0.4"}
    assert package.check_zip(_zip(tmp_path / "good.zip", good), pins)[1] == []
    bad = {**app_files, "numpy-2.3.0.dist-info/METADATA": "",
           "numpy-2.3.0.dist-info/WHEEL": "Tag: cp311-cp311-manylinux_2_17_x86_64\n",
           "numpy/core/_x.cpython-311-x86_64-linux-gnu.so": ""}
    del bad["app.py"]
    bad.update({_pyc(name): "" for name in list(bad) if name.endswith(".py") and name != "chalicelib/platform/web.py"})
    problems = " ".join(package.check_zip(_zip(tmp_path / "bad.zip", bad), pins)[1])
    assert ("chalicelib/platform/web.py has no bytecode for the runtime "
            "(chalicelib/platform/__pycache__/web.cpython-312.pyc)") in problems
    assert "pyyaml==6.0.4 is not in the package" in problems
    assert "numpy is 2.3.0 in the package, 2.5.5" in problems
    assert "cp311-cp311" in problems and "cpython-311" in problems
    assert "app.py of the app is not in the package" in problems


def test_wheel_tags_for_the_lambda_runtime():
    assert package._wheel_tag_problem("py3-none-any") is None
    assert package._wheel_tag_problem("cp312-cp312-manylinux_2_17_x86_64") is None
    assert package._wheel_tag_problem("cp39-abi3-manylinux2014_x86_64") is None
    assert package._wheel_tag_problem("cp311-cp311-manylinux_2_17_x86_64")
    assert package._wheel_tag_problem("cp312-cp312-manylinux_2_17_aarch64")
    assert package._wheel_tag_problem("cp312-cp312-musllinux_1_2_x86_64")
    assert package._wheel_tag_problem("cp312-cp312-linux_x86_64")
    assert package._wheel_tag_problem("cp312-cp312-manylinux_2_39_x86_64")
    assert package._wheel_tag_problem("py2.py3-none-any") is None
    assert package._wheel_tag_problem("py2-none-any")
    assert package._wheel_tag_problem("not-a-tag")


def test_pinned_requirements_are_read_as_pip_reads_them(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# comment\n-r other.txt\nPyYAML==6.0.4  # why\nrequests[socks] == 2.1\nnumpy>=2\n"
                            "old==1.0; python_version < '3'\nBar_Baz.x==2.0; sys_platform == 'linux'\n\n")
    assert package.pinned_requirements(str(requirements)) == {"pyyaml": "6.0.4", "requests": "2.1", "bar-baz-x": "2.0"}


def test_a_stages_settings_are_chalices_own_resolution():
    """The policy file comes from chalice's Config: the stage's iam_policy_file over the top level's."""
    assert package.policy_file("dev").endswith(os.path.join(".chalice", "policy.json"))
    assert package.stage_config("prod").iam_policy_file == "policy.json"
    assert package.stage_config("dev").environment_variables["SECURE_COOKIES"] == "true"
    assert package.stage_config("local").environment_variables["SECURE_COOKIES"] == "false"


def test_a_dependency_chalice_could_not_install_fails_the_build_and_is_not_cached(tmp_path, monkeypatch):
    cache = tmp_path / "deployments"
    cache.mkdir()
    (cache / "old.zip").write_text("")
    output = ("Creating deployment package.\n\nCould not install dependencies:\nnumpy==2.5.5\ncontourpy==1.4.0\n"
              "You will have to build these yourself and vendor them in\nthe chalice vendor folder.\n")

    def fake_run(args, **kwargs):
        (cache / "new.zip").write_text("")
        return subprocess.CompletedProcess(args, 0, stdout=output)

    monkeypatch.setattr(package, "DEPLOYMENTS_CACHE", str(cache))
    monkeypatch.setattr(package.subprocess, "run", fake_run)
    with pytest.raises(package.PackageError, match="numpy==2.5.5, contourpy==1.4.0"):
        package.run_chalice("dev", str(tmp_path / "out"))
    assert sorted(os.listdir(cache)) == ["old.zip"]


def test_packaging_refuses_another_python_and_a_stage_without_its_policy(monkeypatch):
    with pytest.raises(package.PackageError, match="no stage 'nope'"):
        package.package("nope")
    with pytest.raises(package.PackageError, match="policy-local.json does not exist"):
        package.package("local")       # not a deployed stage: it has no policy
    monkeypatch.setattr(package, "stage_config", lambda stage: Config(stage, config_from_disk={
        "stages": {stage: {"autogen_policy": True}}}))
    with pytest.raises(package.PackageError, match="autogen_policy on"):
        package.package("dev")
    monkeypatch.undo()
    monkeypatch.setattr(package, "RUNTIME", (3, 11))
    with pytest.raises(package.PackageError, match="Python 3.11"):
        package.package("dev")


# ---- make deploy, up to the upload -------------------------------------------------------------

FAKE_AWS = r'''#!PYTHON
import json, os, shutil, sys
args = sys.argv[1:]
with open(os.environ["FAKE_AWS_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")
if args[:2] == ["cloudformation", "package"]:
    source = args[args.index("--template-file") + 1]
    assert os.path.exists(source), source
    shutil.copy(source, args[args.index("--output-template-file") + 1])
'''


def _make(*args, env=None):
    return subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed", *args], cwd=ROOT,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=900)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_deploy_packages_then_uploads_and_deploys_the_stages_stack(tmp_path):
    fake = tmp_path / "aws"
    fake.write_text(FAKE_AWS.replace("PYTHON", sys.executable))
    fake.chmod(0o755)
    log = tmp_path / "calls.log"
    done = _make("deploy", "STAGE=dev", "ARTIFACTS_BUCKET=my-artifacts", f"AWS={fake}", "AWS_REGION=eu-west-1",
                 "ALARM_EMAIL=ops@example.com", env={"FAKE_AWS_LOG": str(log)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "dev: build/dev/deployment.zip" in done.stdout and "passes cfn-lint" in done.stdout
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c[:2] for c in calls] == [["cloudformation", "package"], ["cloudformation", "deploy"],
                                      ["cloudformation", "describe-stacks"]]
    upload, deploy, _outputs = calls

    def arg(call, name):
        return call[call.index(name) + 1]

    assert arg(upload, "--template-file") == "build/dev/sam.yaml"
    assert arg(upload, "--s3-bucket") == "my-artifacts"
    assert arg(deploy, "--template-file") == arg(upload, "--output-template-file") == "build/dev/packaged.yaml"
    assert arg(deploy, "--stack-name") == "intellimeter-dev"
    assert {"CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"} <= set(deploy[deploy.index("--capabilities") + 1:])
    assert arg(deploy, "--parameter-overrides") == "AlarmEmail=ops@example.com"   # the alarms' e-mail
    assert all(arg(c, "--region") == "eu-west-1" for c in calls)
    with open(os.path.join(ROOT, "build", "dev", "packaged.yaml"), encoding="utf-8") as handle:
        assert "APIHandler" in handle.read()


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_deploy_without_a_bucket_or_with_the_local_stage_stops_before_anything(tmp_path):
    log = tmp_path / "calls.log"
    no_bucket = _make("deploy", "STAGE=dev", "AWS=false", env={"ARTIFACTS_BUCKET": ""})
    assert no_bucket.returncode != 0 and "ARTIFACTS_BUCKET" in no_bucket.stderr
    local = _make("deploy", "STAGE=local", "ARTIFACTS_BUCKET=b", "AWS=false")
    assert local.returncode != 0 and "STAGE must be one of" in local.stderr
    assert "chalice" not in no_bucket.stdout + local.stdout and not log.exists()

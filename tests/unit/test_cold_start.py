"""Cold start: importing the Lambda entry point (app.py, handler app.app) loads none of the heavy libraries.

matplotlib (and numpy, Pillow, … under it) is for GET /graphics, PyYAML for responseType=yaml,
dicttoxml is only the reference of the XML writer: each is imported when used, never at import.
Each check runs in a fresh interpreter, as a Lambda cold start does. bench/bench_import.py measures
the time this saves (docs/benchmarks.md).
"""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEAVY = ["matplotlib", "numpy", "yaml", "dicttoxml", "PIL", "contourpy", "kiwisolver", "fontTools"]

PROBE = r"""
import json, sys
import app
report = {"after_import": sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)}
from chalicelib.platform import aws
report["clients"] = aws._client.cache_info().currsize
event = {"resource": "/session", "path": "/session", "httpMethod": "GET",
         "headers": {"accept": "application/json"}, "multiValueHeaders": {"accept": ["application/json"]},
         "queryStringParameters": None, "multiValueQueryStringParameters": None, "pathParameters": None,
         "stageVariables": None, "body": None, "isBase64Encoded": False,
         "requestContext": {"resourcePath": "/session", "httpMethod": "GET", "requestId": "cold", "stage": "api"}}
report["status"] = app.app(event, None)["statusCode"]
report["after_json_request"] = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def report():
    """What a fresh interpreter has loaded after importing app, then after answering one JSON request."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PYTHON"))}
    env["AWS_DEFAULT_REGION"] = "us-east-1"
    process = subprocess.run([sys.executable, "-c", f"HEAVY = {HEAVY!r}\n" + PROBE], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)
    assert process.returncode == 0, process.stderr
    return json.loads(process.stdout.strip().splitlines()[-1])


def test_importing_the_entry_point_loads_no_heavy_library_and_no_client(report):
    assert report["after_import"] == [], f"imported at cold start: {report['after_import']}"
    assert report["clients"] == 0, "AWS clients are made on first use, not at import"


def test_a_json_request_loads_no_heavy_library_either(report):
    assert report["status"] == 401
    assert report["after_json_request"] == [], f"imported by a JSON request: {report['after_json_request']}"


def test_the_heavy_libraries_are_installed_so_the_check_means_something():
    process = subprocess.run([sys.executable, "-c", "import matplotlib, numpy, yaml, dicttoxml, PIL"],
                             capture_output=True, text=True)
    assert process.returncode == 0, process.stderr

"""tools/admin.py, the admin command line: run in-process (main(argv) with stdin replaced).

It creates a project with its first user, or a user in a project, printing the account and its key
as one JSON object; the password comes from stdin or a no-echo prompt, never from the command line;
refusals are one line on stderr with exit status 1 or 2; and it acts on the AWS the environment
names: the local stack (AWS_PORT / --local), a CloudFormation stack (--stack), or named resources.
"""
import io
import json
import os
import re

import pytest

from tools import admin

pytestmark = pytest.mark.fresh_aws  # each test makes the project "acme" and its admin

PASSWORD = "an admin's long password"
JSON = {"Content-Type": "application/json"}
SESSION_FIELDS = {"uuid", "project", "username", "email", "joined", "project_name", "timezone"}
KEY_FORMAT = re.compile(r"^[0-9a-f]{10}(-[0-9a-f]{10}){3}$")
LOCAL_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


class Terminal(io.StringIO):
    """A stdin that says it is a terminal (nothing may be read from it: getpass reads the tty)."""

    def isatty(self):
        return True

    def readline(self, *args):
        raise AssertionError("the password must be read with getpass at a terminal")


@pytest.fixture
def run(aws, monkeypatch, capsys):
    """run(argv, stdin) -> (exit status, stdout, stderr) of admin.main under the in-process moto."""
    monkeypatch.delenv("AWS_PORT", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)

    def no_prompt(*args, **kwargs):
        raise AssertionError("getpass must not be used when stdin is not a terminal")

    def run_(argv, stdin=PASSWORD + "\n", prompt=no_prompt):
        monkeypatch.setattr("sys.stdin", stdin if isinstance(stdin, io.StringIO) else io.StringIO(stdin))
        monkeypatch.setattr("getpass.getpass", prompt)
        capsys.readouterr()
        status = admin.main(argv)
        out, err = capsys.readouterr()
        assert "Traceback" not in err and "Traceback" not in out
        return status, out, err

    return run_


def log_in(client, username, password):
    return client.http.put("/session", headers=JSON, body=json.dumps({"username": username, "password": password}))


def create_project_argv(name="acme", username="acme-admin", timezone="Europe/Paris", email="admin@acme.example"):
    return ["create-project", name, "--timezone", timezone, "--username", username, "--email", email]


def test_create_project_prints_the_account_and_a_key_that_works(run, client):
    status, out, err = run(create_project_argv())

    assert status == 0, err
    assert out.count("\n") == 1
    printed = json.loads(out)
    assert set(printed) == SESSION_FIELDS | {"key"}
    assert (printed["username"], printed["email"], printed["project_name"]) == ("acme-admin", "admin@acme.example", "acme")
    assert LOCAL_TIME.match(printed["joined"]) and KEY_FORMAT.match(printed["key"])
    me = client.http.get("/session", headers={"X-API-Key": printed["key"]})
    assert me.status_code == 200
    assert me.json_body == {k: v for k, v in printed.items() if k != "key"}
    assert client.http.get("/key", headers={"X-API-Key": printed["key"]}).json_body == {"key": printed["key"]}
    assert log_in(client, "acme-admin", PASSWORD).json_body == {"uuid": printed["uuid"]}


def test_the_project_gets_its_time_zone(run, client):
    from chalicelib.identity import accounts

    status, out, _ = run(create_project_argv(timezone="America/Toronto"))

    assert status == 0
    project = accounts.find_project("ACME")
    assert project["timezone"] == "America/Toronto" and project["project_id"] == json.loads(out)["project"]


def test_the_password_is_the_first_line_of_stdin_without_its_line_break(run, client):
    status, out, _ = run(create_project_argv(), stdin=PASSWORD + "\r\nsecond line\n")

    assert status == 0
    assert log_in(client, "acme-admin", PASSWORD).status_code == 200
    for wrong in (PASSWORD + "\n", PASSWORD + "\r\n", "second line", PASSWORD + "\r\nsecond line\n"):
        assert log_in(client, "acme-admin", wrong).status_code == 401


def test_the_password_is_never_taken_from_the_command_line(run, client):
    from chalicelib.identity import accounts

    for argv in (create_project_argv() + ["--password", PASSWORD], create_project_argv() + [PASSWORD],
                 ["--password", PASSWORD] + create_project_argv()):
        status, out, err = run(argv, stdin="")
        assert status == 2 and out == "" and "usage" in err
    assert accounts.find_project("acme") is None

    status, _, _ = run(create_project_argv(), stdin="from stdin, not argv\n")
    assert status == 0
    assert log_in(client, "acme-admin", "from stdin, not argv").status_code == 200


def test_at_a_terminal_the_password_is_typed_twice_without_echo(run, client):
    from chalicelib.identity import accounts

    typed = iter(["typed at the prompt", "typed at the prompt"])
    status, out, _ = run(create_project_argv(), stdin=Terminal(), prompt=lambda prompt="": next(typed))
    assert status == 0
    assert log_in(client, "acme-admin", "typed at the prompt").status_code == 200

    mistyped = iter(["first attempt here", "second attempt here"])
    status, out, err = run(create_project_argv(name="other", username="other-admin"), stdin=Terminal(),
                           prompt=lambda prompt="": next(mistyped))
    assert status == 2 and out == "" and "differ" in err
    assert accounts.find_project("other") is None


BAD_ARGUMENTS = [
    (create_project_argv(timezone="Mars/Olympus_Mons"), PASSWORD + "\n", "time zone"),
    (create_project_argv(), "short\n", "password"),
    (create_project_argv(), "", "password"),
    (create_project_argv(email="not-an-address"), PASSWORD + "\n", "email"),
    (create_project_argv(username="  "), PASSWORD + "\n", "username"),
    (create_project_argv(name=""), PASSWORD + "\n", "name"),
]


def test_bad_arguments_are_one_line_on_stderr_exit_2_and_create_nothing(run):
    from chalicelib.identity import accounts

    for argv, stdin, message in BAD_ARGUMENTS:
        code, out, err = run(argv, stdin=stdin)

        assert code == 2 and out == ""
        assert err.startswith("admin: ") and err.count("\n") == 1 and message in err, err
    assert accounts.find_project("acme") is None
    assert accounts.find_login("acme-admin") is None


def test_a_taken_username_or_project_name_is_exit_1_and_creates_nothing(run, client, make_account):
    from chalicelib.identity import accounts

    make_account(project_name="Existing", username="acme-admin")

    status, out, err = run(create_project_argv())
    assert (status, out) == (1, "") and "taken" in err and err.startswith("admin: ")
    assert accounts.find_project("acme") is None  # checked before anything was written

    status, out, err = run(create_project_argv(name="EXISTING", username="someone-new"))
    assert (status, out) == (1, "") and "exists" in err
    assert accounts.find_login("someone-new") is None


def test_create_user_adds_a_user_to_a_project(run, client):
    _, out, _ = run(create_project_argv())
    first = json.loads(out)

    status, out, err = run(["create-user", "--project", "ACME", "--username", "second", "--email", "second@acme.example"],
                           stdin="second's password\n")

    assert status == 0, err
    second = json.loads(out)
    assert set(second) == SESSION_FIELDS | {"key"}
    assert (second["project"], second["project_name"], second["username"]) == (first["project"], "acme", "second")
    assert second["key"] != first["key"]
    users = client.http.get("/user", headers={"X-API-Key": first["key"]}).json_body
    assert sorted(u["username"] for u in users) == ["acme-admin", "second"]
    assert log_in(client, "second", "second's password").json_body == {"uuid": second["uuid"]}


def test_create_user_in_an_unknown_project_or_with_a_taken_name_is_exit_1(run, client):
    run(create_project_argv())

    status, out, err = run(["create-user", "--project", "nowhere", "--username", "x-user", "--email", "x@example.com"])
    assert (status, out) == (1, "") and "nowhere" in err

    status, out, err = run(["create-user", "--project", "acme", "--username", "ACME-ADMIN", "--email", "x@example.com"])
    assert (status, out) == (1, "") and "taken" in err


def test_rebuild_rollups_restores_the_consumption_of_history_stored_without_them(run, client, aws):
    """History stored before rollups existed reads as no data per day (but the latest reading's, computed
    from the readings) until rebuild-rollups has run; afterwards /consumption gives what ingest would have
    kept. An unknown meter is exit 1."""
    import boto3

    from chalicelib.platform.config import RESOURCE_ENV

    _, out, _ = run(create_project_argv(timezone="America/Toronto"))
    headers = {"X-API-Key": json.loads(out)["key"], **JSON}
    for name in ("hall", "roof"):
        assert client.http.put("/point", headers=headers, body=json.dumps({"MeterId": name})).status_code == 200
    readings = [{"MeterId": name, "TimeStamping": f"2026-{month}-{day:02d}T{hour:02d}:00:00Z", "value": 10 * day + hour}
                for name in ("hall", "roof") for month in ("01", "02") for day in range(27, 29) for hour in (0, 12)]
    assert client.http.post("/data", headers=headers, body=json.dumps({"readings": readings})).status_code == 200

    def consumption():
        answer = client.http.get("/consumption?start=2026-01-27&end=2026-02-28&period=day", headers=headers)
        assert answer.status_code == 200, answer.body
        return [(row["MeterParam"], row["PeriodStart"], row["value"]) for row in answer.json_body]

    expected = consumption()
    assert sum(1 for row in expected if row[2]) >= 4
    table = boto3.resource("dynamodb", region_name="us-east-1").Table(aws[RESOURCE_ENV["ReadingsTable"]])
    rollups = [item for item in table.scan()["Items"] if item["meter"].startswith("ROLLUP#")]  # docs/data-model.md
    assert len(rollups) == 4                                  # 2 meters x 2 local months
    for item in rollups:
        table.delete_item(Key={"meter": item["meter"], "day": item["day"]})
    # as history from before rollups reads: no data per day, but the day of each meter's latest reading
    # (its open hour's, computed at read time), which is computed from the raw readings
    last_day = [row for row in expected if row[1].startswith("2026-02-28")]
    assert len(last_day) == 2 and all(row[2] for row in last_day)
    assert [row for row in consumption() if row[2] is not None] == last_day

    status, out, err = run(["rebuild-rollups", "--project", "acme", "--meter", "no-such-meter"])
    assert (status, out) == (1, "") and "no-such-meter" in err
    status, out, err = run(["rebuild-rollups", "--project", "acme"])

    assert status == 0, err
    assert json.loads(out) == {"project_name": "acme", "timezone": "America/Toronto", "rebuilt": ["hall", "roof"]}
    assert "rebuilt 2/2 roof" in err
    assert consumption() == expected


# ---- where it acts ----------------------------------------------------------------------------

def test_aws_port_means_the_local_stack_with_dummy_credentials_and_local_names():
    environ = {"AWS_PORT": "5123", "AWS_ACCESS_KEY_ID": "AKIAREALKEY", "AWS_SECRET_ACCESS_KEY": "real secret",
               "AWS_SESSION_TOKEN": "real token", "AWS_PROFILE": "prod", "AWS_DEFAULT_REGION": "eu-west-1"}

    admin.configure(environ)

    assert environ["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5123"
    assert environ["AWS_ACCESS_KEY_ID"] != "AKIAREALKEY" and environ["AWS_SECRET_ACCESS_KEY"] != "real secret"
    assert "AWS_SESSION_TOKEN" not in environ and "AWS_PROFILE" not in environ
    assert environ["AWS_DEFAULT_REGION"] == "us-east-1"
    local = admin.local_stage_environment()
    for variable in ("ACCOUNTS_TABLE", "SESSIONS_TABLE", "API_KEYS_KMS_KEY"):
        assert environ[variable] == local[variable]


def test_local_flag_without_aws_port_uses_port_5000_and_an_explicit_endpoint_wins():
    environ: dict = {}
    admin.configure(environ, local=True)
    assert environ["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5000"

    environ = {"AWS_ENDPOINT_URL": "http://localhost:4566", "AWS_ACCESS_KEY_ID": "mine"}
    admin.configure(environ, local=True)
    assert (environ["AWS_ENDPOINT_URL"], environ["AWS_ACCESS_KEY_ID"]) == ("http://localhost:4566", "mine")
    assert environ["ACCOUNTS_TABLE"] == admin.local_stage_environment()["ACCOUNTS_TABLE"]


def test_without_local_or_stack_the_environment_names_the_resources():
    environ = {"ACCOUNTS_TABLE": "prod-accounts", "API_KEYS_KMS_KEY": "alias/prod-keys"}
    admin.configure(environ)
    assert environ == {"ACCOUNTS_TABLE": "prod-accounts", "API_KEYS_KMS_KEY": "alias/prod-keys"}

    with pytest.raises(admin.AdminError) as refused:
        admin.configure({"AWS_ENDPOINT_URL": "https://dynamodb.example", "AWS_PORT": "5000"})
    assert refused.value.status == 2 and "ACCOUNTS_TABLE" in str(refused.value)


def test_missing_resource_names_are_exit_2_without_a_traceback(monkeypatch, capsys):
    for variable in ("AWS_PORT", "AWS_ENDPOINT_URL", "ACCOUNTS_TABLE", "API_KEYS_KMS_KEY"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))

    status = admin.main(create_project_argv())

    out, err = capsys.readouterr()
    assert (status, out) == (2, "") and "ACCOUNTS_TABLE" in err and "Traceback" not in err


def test_make_admin_against_the_local_stack(monkeypatch, capsys):
    # What `make admin` does while `make run` is up: AWS_PORT names the embedded AWS (a moto server).
    from chalice.test import Client
    from moto.server import ThreadedMotoServer

    from app import app
    from chalicelib.platform import aws
    from tools import provision
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port = server.get_host_and_port()[1]             # the port it bound, not one probed before
    saved = dict(os.environ)
    try:
        os.environ.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "local",
                           "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": "us-east-1"})
        provision.provision(prefix="intellimeter-local")  # as tools.stack does
        del os.environ["AWS_ENDPOINT_URL"]
        os.environ["AWS_PORT"] = str(port)
        monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))

        status = admin.main(create_project_argv())

        out, err = capsys.readouterr()
        assert status == 0, err
        key = json.loads(out)["key"]
        aws.reset_clients()
        with Client(app, stage_name="local") as local_api:  # the API of `make run`, over the same AWS
            assert local_api.http.get("/session", headers={"X-API-Key": key}).json_body["username"] == "acme-admin"
    finally:
        os.environ.clear()
        os.environ.update(saved)
        aws.reset_clients()
        server.stop()


def test_stack_option_acts_on_the_resources_of_a_cloudformation_stack(aws, monkeypatch, capsys):
    import boto3

    from chalicelib.identity import accounts
    from chalicelib.platform import config
    from tools import provision

    # The template's tables and key, deployed as a stack (moto names them after the stack).
    template = provision.load_template()
    resources = {logical_id: {"Type": resource["Type"],
                              "Properties": {k: v for k, v in resource.get("Properties", {}).items()
                                             if k in ("KeySchema", "AttributeDefinitions", "BillingMode",
                                                      "GlobalSecondaryIndexes", "Description")}}
                 for logical_id, resource in template["Resources"].items()
                 if resource["Type"] in ("AWS::DynamoDB::Table", "AWS::KMS::Key")}
    resources["ApiKeysKey"]["Properties"]["KeyPolicy"] = {  # the template's names the account with !Sub
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:*", "Resource": "*"}]}
    boto3.client("cloudformation", region_name="us-east-1").create_stack(
        StackName="intellimeter-prod", TemplateBody=json.dumps({"Resources": resources}))
    monkeypatch.delenv("AWS_PORT", raising=False)
    for variable in config.RESOURCE_ENV.values():
        monkeypatch.setenv(variable, "not-this-one")
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))

    status = admin.main(["--stack", "intellimeter-prod"] + create_project_argv())

    out, err = capsys.readouterr()
    assert status == 0, err
    accounts_table = os.environ["ACCOUNTS_TABLE"]
    assert accounts_table.startswith("intellimeter-prod") and accounts_table != aws["ACCOUNTS_TABLE"]
    assert accounts.find_project("acme")["project_id"] == json.loads(out)["project"]
    monkeypatch.setenv("ACCOUNTS_TABLE", aws["ACCOUNTS_TABLE"])
    assert accounts.find_project("acme") is None  # nothing written to the other tables

    assert admin.main(["--stack", "no-such-stack"] + create_project_argv()) == 1
    assert "no-such-stack" in capsys.readouterr().err

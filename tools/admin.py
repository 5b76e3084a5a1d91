"""The admin command line: projects and their users, in whatever AWS the environment names.

    python -m tools.admin [--local | --stack NAME] create-project NAME [--timezone TZ] --username USER --email EMAIL
    python -m tools.admin [--local | --stack NAME] create-user --project NAME --username USER --email EMAIL
    python -m tools.admin [--local | --stack NAME] rebuild-rollups --project NAME [--meter METER]

(`make admin ARGS="…"` runs it against the local stack of `make run`.) The new account's password is
read from stdin when stdin is not a terminal (its first line, without the line break), else asked for
twice without echo: never from the command line, where ps and shell history would show it. The new
account, as GET /session shows it, and its API key are printed as one JSON object:

    {"uuid": 1, "project": 1, "username": "…", "email": "…", "joined": "2026-11-25 19:30:00", "project_name": "…", "key": "…"}

`rebuild-rollups` recomputes the consumption rollups (chalicelib/metering/rollups.py) of a project's meters, or
of one, from their raw readings: for history stored before rollups existed. Until it has run, those
days read as no data from the rollups. Ingest keeps rollups current afterwards, and it is safe to run
while readings arrive (each month is written with an optimistic version). It prints each meter done on
stderr and the list as JSON.

Where it acts:
- `--stack NAME`: the resources of that CloudFormation stack (the deployed API's), with the usual AWS
  credentials and region;
- `--local`, or AWS_PORT set (as `make admin` does) without AWS_ENDPOINT_URL: the embedded AWS of
  `make run` at http://127.0.0.1:$AWS_PORT (5000 by default) with dummy credentials, and the local
  stage's resource names from .chalice/config.json;
- otherwise: the usual AWS environment, ACCOUNTS_TABLE and API_KEYS_KMS_KEY naming the resources (as
  in the API's own environment, chalicelib/platform/config.py).

Exit status: 0 done; 1 refused (a name taken, no such project) or AWS failed; 2 bad arguments.
"""
import argparse
import getpass
import os
import sys

from tools.provision import local_stage_environment

DEFAULT_AWS_PORT = "5000"
LOCAL_REGION = "us-east-1"  # the region tools.stack runs the embedded AWS in
# The resources the commands touch: they must be named, whichever AWS it is.
NEEDED = ("AccountsTable", "ApiKeysKey")
NEEDED_BY = {"rebuild-rollups": ("AccountsTable", "MetersTable", "ReadingsTable")}


class AdminError(Exception):
    """A failure to report as one line on stderr, with the exit status to end with."""

    def __init__(self, message, status=1):
        super().__init__(message)
        self.status = status


# ---- where to act -----------------------------------------------------------------------------

def stack_environment(stack, region):
    """RESOURCE_ENV variables naming the resources of a CloudFormation stack (by logical id; outputs override)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from chalicelib.platform.config import RESOURCE_ENV

    cloudformation = boto3.client("cloudformation", region_name=region)
    names = {}
    try:
        for page in cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack):
            for resource in page["StackResourceSummaries"]:
                if resource["LogicalResourceId"] in RESOURCE_ENV and resource.get("PhysicalResourceId"):
                    names[RESOURCE_ENV[resource["LogicalResourceId"]]] = resource["PhysicalResourceId"]
        for output in cloudformation.describe_stacks(StackName=stack)["Stacks"][0].get("Outputs", []):
            variable = RESOURCE_ENV.get(output["OutputKey"], output["OutputKey"])
            if variable in RESOURCE_ENV.values():
                names[variable] = output["OutputValue"]
    except (BotoCoreError, ClientError) as error:
        raise AdminError(f"cannot read the CloudFormation stack {stack!r}: {error}") from None
    return names


def configure(environ, local=False, stack=None, needed=NEEDED):
    """Point chalicelib's AWS clients and resource names (environ: os.environ) at the chosen AWS.

    Returns a short description of where the commands will act.
    """
    from chalicelib.platform.config import RESOURCE_ENV, region

    if stack:
        environ.update(stack_environment(stack, region()))
        where = f"stack {stack}"
    elif local or (environ.get("AWS_PORT") and not environ.get("AWS_ENDPOINT_URL")):
        if not environ.get("AWS_ENDPOINT_URL"):
            port = environ.get("AWS_PORT") or DEFAULT_AWS_PORT
            if not port.isdigit():
                raise AdminError(f"AWS_PORT must be a port number, not {port!r}", 2)
            environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
            # The embedded AWS takes any credentials: never send real ones to it.
            environ.update({"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
                            "AWS_REGION": LOCAL_REGION, "AWS_DEFAULT_REGION": LOCAL_REGION})
            for variable in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
                environ.pop(variable, None)
        environ.update(local_stage_environment())
        where = f"the local stack at {environ['AWS_ENDPOINT_URL']}"
    else:
        where = "the AWS of the environment"
    missing = [RESOURCE_ENV[logical_id] for logical_id in needed if not environ.get(RESOURCE_ENV[logical_id])]
    if missing:
        raise AdminError(f"{', '.join(missing)} not set: name the resources in the environment, or use "
                         f"--stack NAME (a deployed stack) or --local (the stack of `make run`)", 2)
    return where


# ---- the password -----------------------------------------------------------------------------

def read_password(stdin=None):
    """The new account's password: stdin's first line when piped, else typed twice at a prompt."""
    stdin = sys.stdin if stdin is None else stdin
    if stdin is not None and not stdin.isatty():
        line = stdin.readline()
        if not line:
            raise AdminError("no password on stdin: pipe it in, e.g. echo 'a-long-password' | …", 2)
        if line.endswith("\n"):
            line = line[:-1]
            if line.endswith("\r"):
                line = line[:-1]
        return line
    try:
        first = getpass.getpass("Password of the new account: ")
        again = getpass.getpass("The same password again: ")
    except EOFError:
        raise AdminError("no password given: nothing was created", 2) from None
    if again != first:
        raise AdminError("the two passwords differ: nothing was created", 2)
    return first


def _checked_password():
    from chalicelib.identity import passwords
    from chalicelib.platform import validation

    return validation.password(read_password(), passwords.MIN_LENGTH, passwords.MAX_LENGTH)


# ---- commands ---------------------------------------------------------------------------------

def _checked_user(username, email):
    """The username and email as they will be stored; Conflict when the name is taken."""
    from chalicelib.identity import accounts
    from chalicelib.platform import validation
    from chalicelib.platform.errors import Conflict

    username = validation.name("username", username, validation.USERNAME_MAX)
    email = validation.email(email)
    if accounts.find_login(username):
        raise Conflict(f"the username {username!r} is taken: choose another")
    return username, email


def create_project(args):
    """A new project and its first user; everything is checked before anything is written."""
    from chalicelib.identity import accounts
    from chalicelib.platform import clock, validation
    from chalicelib.platform.errors import ApiError, Conflict

    name = validation.name("project name", args.name)
    try:
        clock.zone(args.timezone)
    except ValueError as error:
        raise AdminError(str(error), 2) from None
    if accounts.find_project(name):
        raise Conflict(f"a project named {name!r} already exists")
    username, email = _checked_user(args.username, args.email)
    password = _checked_password()
    project = accounts.create_project(name, args.timezone)
    try:
        view, key = accounts.create_user(project["project_id"], username, password, email)
    except ApiError as error:  # the name was taken in the meantime
        raise AdminError(f"{error.message}. The project {name!r} was created without a user: add one with "
                         f"create-user --project {name!r} --username … --email …") from None
    return {**view, "key": key}


def create_user(args):
    """A new user in an existing project (found by name, case-insensitively)."""
    from chalicelib.identity import accounts
    from chalicelib.platform import validation

    project = accounts.find_project(validation.name("project name", args.project))
    if not project:
        raise AdminError(f"there is no project named {args.project!r}")
    username, email = _checked_user(args.username, args.email)
    view, key = accounts.create_user(project["project_id"], username, _checked_password(), email)
    return {**view, "key": key}


def rebuild_rollups(args):
    """Recompute the rollups of a project's meters (or one meter) from their raw readings."""
    from chalicelib.identity import accounts
    from chalicelib.metering import meters, rollups
    from chalicelib.platform import clock, validation

    project = accounts.find_project(validation.name("project name", args.project))
    if not project:
        raise AdminError(f"there is no project named {args.project!r}")
    project_id = project["project_id"]
    zone = clock.zone(project.get("timezone", "UTC"))
    chosen = [meters.find(project_id, name=args.meter)] if args.meter else meters.all_meters(project_id)
    done = []
    for number, meter in enumerate(chosen, 1):
        rollups.rebuild(project_id, zone, meter["meter_id"])
        done.append(meter["name"])
        print(f"admin: rebuilt {number}/{len(chosen)} {meter['name']}", file=sys.stderr)
    return {"project_name": project["name"], "timezone": zone.key, "rebuilt": done}


def parser():
    top = argparse.ArgumentParser(prog="python -m tools.admin", description=__doc__.splitlines()[0])
    where = top.add_mutually_exclusive_group()
    where.add_argument("--local", action="store_true",
                       help="act on the local stack of `make run` (http://127.0.0.1:$AWS_PORT)")
    where.add_argument("--stack", metavar="NAME", help="act on the resources of this CloudFormation stack")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    project = commands.add_parser("create-project", help="a new project (site) with its first user")
    project.add_argument("name", help="the project's name (unique, case-insensitively)")
    project.add_argument("--timezone", default="UTC", help="IANA time zone the project's times are shown in (UTC)")
    project.add_argument("--username", required=True, help="the first user's login name")
    project.add_argument("--email", required=True, help="the first user's e-mail address")
    project.set_defaults(run=create_project)

    user = commands.add_parser("create-user", help="a new user in an existing project")
    user.add_argument("--project", required=True, help="the project's name")
    user.add_argument("--username", required=True, help="the new user's login name")
    user.add_argument("--email", required=True, help="the new user's e-mail address")
    user.set_defaults(run=create_user)

    rebuild = commands.add_parser("rebuild-rollups", help="recompute a project's consumption rollups from its readings")
    rebuild.add_argument("--project", required=True, help="the project's name")
    rebuild.add_argument("--meter", help="only this meter (its MeterId); every meter of the project without it")
    rebuild.set_defaults(run=rebuild_rollups)
    return top


def main(argv=None):
    """Run one command; returns the exit status."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        args = parser().parse_args(argv)
    except SystemExit as exit_:  # usage errors (printed by argparse) and --help
        return exit_.code
    try:
        from chalicelib.platform import aws, rendering
        from chalicelib.platform.errors import ApiError

        configure(os.environ, local=args.local, stack=args.stack, needed=NEEDED_BY.get(args.command, NEEDED))
        aws.reset_clients()  # clients made before are bound to the old endpoint and credentials
        try:
            result = args.run(args)
        except ApiError as error:
            raise AdminError(error.message, 2 if error.status == 400 else 1) from None
    except AdminError as error:
        print(f"admin: {error}", file=sys.stderr)
        return error.status
    except (BotoCoreError, ClientError) as error:
        print(f"admin: AWS failed ({error}); is the stack up and are the resource names right?", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("admin: interrupted", file=sys.stderr)
        return 130
    body, _media_type = rendering.render(result, "json")
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The Lambda role's policy: least privilege, and enough for every AWS call the code makes.

Each deployed stage's policy is the file .chalice/config.json names (iam_policy_file, autogen_policy
off): chalice package puts it in the function's role (tests/system/test_package.py checks the packaged
template), and its resources are CloudFormation references to resources of infra/resources.yaml.
  - static: no wildcard action, no "*" resource, every resource a reference to the template;
  - recorded: a flow through every route (and a multipart upload, completed and aborted) against
    moto, with a hook on every client chalicelib.aws creates, records each call; each call's IAM
    action on its resource ARN must be allowed by the policy resolved against moto's ARNs;
  - walked: the AWS calls found in the source of chalicelib, as (IAM action, template resource),
    must be exactly what the policy grants (besides the runtime's own logging); the recorded calls
    must all be among them, so the walk misses nothing the code was seen doing.
"""
import ast
import copy
import fnmatch
import json
import os
import re
import urllib.parse
from datetime import datetime, timedelta, timezone

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHALICELIB = os.path.join(ROOT, "chalicelib")

# What the function's runtime needs besides the code's calls: writing to its own log group.
# The export worker's SQS event source polls the queue with the function's role (the same policy file).
# The queue-fed workers' event sources (export jobs, alert evaluation, alert delivery) poll their queues
# with the function's role (the same policy file).
WORKER_QUEUES = ("ExportQueue", "AlertEvaluationQueue", "AlertDeliveryQueue")
RUNTIME_NEEDS = {("logs:CreateLogStream", ("loggroup", "ApiLogGroup")),
                 ("logs:PutLogEvents", ("loggroup", "ApiLogGroup"))} | {
    (action, ("queue", queue)) for queue in WORKER_QUEUES
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes")}
# The projects' alert topics: created at run time under the stack's prefix (chalicelib/alerts/mail.py).
ALERT_TOPICS = "arn:${AWS::Partition}:sns:${AWS::Region}:${AWS::AccountId}:${AWS::StackName}-alerts-*"
# chalicelib/db.py functions taking a table (logical id) first → the IAM action they need.
DB_ACTIONS = {"get": "dynamodb:GetItem", "put": "dynamodb:PutItem", "update": "dynamodb:UpdateItem",
              "delete": "dynamodb:DeleteItem", "query": "dynamodb:Query", "batch_get": "dynamodb:BatchGetItem",
              "batch_write": "dynamodb:BatchWriteItem"}
# db.transact's operation kinds → IAM action (TransactWriteItems is authorized per item).
TRANSACT_ACTIONS = {"put": "dynamodb:PutItem", "delete": "dynamodb:DeleteItem", "update": "dynamodb:UpdateItem",
                    "check": "dynamodb:ConditionCheckItem"}
TRANSACT_KINDS = {"Put": "dynamodb:PutItem", "Delete": "dynamodb:DeleteItem", "Update": "dynamodb:UpdateItem",
                  "ConditionCheck": "dynamodb:ConditionCheckItem"}
# The DynamoDB operations chalicelib/db.py may call (each mapped above or per item).
DB_CLIENT_OPERATIONS = {"get_item", "put_item", "update_item", "delete_item", "query", "batch_get_item",
                        "batch_write_item", "transact_write_items"}
# S3 operations → IAM action (multipart parts are authorized as s3:PutObject; a presigned GET as s3:GetObject).
S3_ACTIONS = {"PutObject": "s3:PutObject", "CreateMultipartUpload": "s3:PutObject", "UploadPart": "s3:PutObject",
              "CompleteMultipartUpload": "s3:PutObject", "AbortMultipartUpload": "s3:AbortMultipartUpload",
              "GetObject": "s3:GetObject", "HeadObject": "s3:GetObject", "DeleteObject": "s3:DeleteObject",
              "UploadPartCopy": "s3:PutObject"}      # and s3:GetObject on the source (iam_requests)
# SQS operations → IAM action (a batch send is authorized as sqs:SendMessage).
SQS_ACTIONS = {"SendMessage": "sqs:SendMessage", "SendMessageBatch": "sqs:SendMessage",
               "GetQueueAttributes": "sqs:GetQueueAttributes"}
KINDS = {"AWS::DynamoDB::Table": "table", "AWS::S3::Bucket": "bucket", "AWS::KMS::Key": "key",
         "AWS::Logs::LogGroup": "loggroup", "AWS::SQS::Queue": "queue"}


# ---- where the policy lives ----------------------------------------------------------------------

def chalice_config():
    with open(os.path.join(ROOT, ".chalice", "config.json"), encoding="utf-8") as handle:
        return json.load(handle)


def deployed_stages():
    """Every stage but local (whose resources are moto's)."""
    return sorted(stage for stage in chalice_config()["stages"] if stage != "local")


def stage_setting(stage, name, default=None):
    """A setting as chalice resolves it: the stage's, else the top level's."""
    config = chalice_config()
    return config["stages"][stage].get(name, config.get(name, default))


def policy_path(stage):
    return os.path.join(ROOT, ".chalice", stage_setting(stage, "iam_policy_file") or f"policy-{stage}.json")


def load_policy(stage):
    with open(policy_path(stage), encoding="utf-8") as handle:
        return json.load(handle)


def template():
    from tools import provision

    return provision.load_template()


def _listed(value):
    return value if isinstance(value, list) else [value]


def _getatt(node):
    value = node["Fn::GetAtt"]
    return value.split(".", 1) if isinstance(value, str) else list(value)


def logical_resource(resource, resources):
    """A policy resource as (kind, logical id[, index]): ("table", "AccountsTable"), ("objects", "FilesBucket")."""
    if isinstance(resource, dict) and set(resource) == {"Fn::GetAtt"}:
        logical_id, attribute = _getatt(resource)
        assert attribute == "Arn", f"{resource}: only Arn attributes name a resource"
        assert logical_id in resources, f"{resource}: no {logical_id} in infra/resources.yaml"
        return KINDS[resources[logical_id]["Type"]], logical_id
    if resource == {"Fn::Sub": ALERT_TOPICS}:
        return "topics", "alerts"
    if isinstance(resource, dict) and set(resource) == {"Fn::Sub"} and isinstance(resource["Fn::Sub"], str):
        match = re.fullmatch(r"\$\{(\w+)\.Arn\}(/.+)", resource["Fn::Sub"])
        assert match, f"{resource}: expected ${{Resource.Arn}}/…"
        logical_id, suffix = match.groups()
        assert logical_id in resources, f"{resource}: no {logical_id} in infra/resources.yaml"
        kind = KINDS[resources[logical_id]["Type"]]
        index = re.fullmatch(r"/index/([\w.-]+)", suffix)
        if kind == "table" and index:
            return "index", logical_id, index.group(1)
        if kind == "bucket":
            return "objects", logical_id
        raise AssertionError(f"{resource}: unexpected sub-resource of a {kind}")
    raise AssertionError(f"{resource!r}: a resource must reference infra/resources.yaml "
                         f"(Fn::GetAtt X.Arn, or Fn::Sub ${{X.Arn}}/…), not be written out or '*'")


def grants(policy, resources):
    """{(action, logical resource)} the policy allows."""
    granted = set()
    for statement in policy["Statement"]:
        for action in _listed(statement["Action"]):
            for resource in _listed(statement["Resource"]):
                granted.add((action, logical_resource(resource, resources)))
    return granted


# ---- static ------------------------------------------------------------------------------------

def test_every_deployed_stage_has_its_own_policy_and_no_generated_one():
    config = chalice_config()
    assert deployed_stages(), "no deployed stage in .chalice/config.json"
    assert config["stages"]["local"].get("environment_variables"), "the local stage keeps its environment"
    for stage in deployed_stages():
        assert stage_setting(stage, "autogen_policy", True) is False, f"{stage}: autogen_policy must be false"
        assert stage_setting(stage, "manage_iam_role", True) is not False, \
            f"{stage}: chalice must create the role, so the policy is the one tested here"
        assert os.path.exists(policy_path(stage)), f"{stage}: {policy_path(stage)} does not exist"


@pytest.mark.parametrize("stage", deployed_stages())
def test_policy_has_no_wildcard_action_and_no_star_resource(stage):
    policy = load_policy(stage)
    resources = template()["Resources"]
    assert policy["Version"] == "2012-10-17"
    assert policy["Statement"], "an empty policy"
    for statement in policy["Statement"]:
        where = f"{os.path.basename(policy_path(stage))} statement {statement.get('Sid')!r}"
        assert statement["Effect"] == "Allow", f"{where}: only Allow statements"
        assert not {"NotAction", "NotResource", "NotPrincipal"} & set(statement), f"{where}: no Not* elements"
        actions = _listed(statement["Action"])
        assert actions, f"{where}: no action"
        for action in actions:
            assert re.fullmatch(r"[a-z0-9-]+:[A-Za-z0-9]+", action), f"{where}: {action!r} is not one named action"
        for resource in _listed(statement["Resource"]):
            assert resource != "*", f"{where}: '*' resource"
            logical_resource(resource, resources)


# ---- the code, walked -------------------------------------------------------------------------

def _modules():
    """{module name: (path, AST)} of chalicelib (its subpackages included) and app.py; a package's
    __init__ by its path."""
    found = {}
    for folder, dirs, files in sorted(os.walk(CHALICELIB)):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(folder, name)
            key = os.path.relpath(path, CHALICELIB)[:-3] if name == "__init__.py" else name[:-3]
            assert key not in found, f"two modules of chalicelib are named {key}: the walk tells them apart by name"
            with open(path, encoding="utf-8") as handle:
                found[key] = (path, ast.parse(handle.read(), path))
    with open(os.path.join(ROOT, "app.py"), encoding="utf-8") as handle:
        found["app"] = (os.path.join(ROOT, "app.py"), ast.parse(handle.read(), "app.py"))
    return found


def _constants(tree):
    """Module-level NAME = "text" assignments."""
    values = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    values[target.id] = node.value.value
    return values


def _operation_names(service):
    """{python method name: operation name} of a boto3 client."""
    import botocore.session
    from botocore import xform_name

    model = botocore.session.get_session().get_service_model(service)
    return {xform_name(op): op for op in model.operation_names}


def _iam_action(service, operation):
    if service == "s3":
        assert operation in S3_ACTIONS, f"map S3 {operation} to its IAM action in tests/unit/test_policy.py"
        return S3_ACTIONS[operation]
    if service == "sqs":
        assert operation in SQS_ACTIONS, f"map SQS {operation} to its IAM action in tests/unit/test_policy.py"
        return SQS_ACTIONS[operation]
    return f"{service}:{operation}"


def code_needs(resources):  # noqa: C901  # one AST walk recognising each kind of AWS call the code makes
    """{(IAM action, logical resource)} of the AWS calls in chalicelib's source; AssertionError on what can't be read."""
    modules = _modules()
    constants = {name: _constants(tree) for name, (_path, tree) in modules.items()}
    tables = {lid for lid, r in resources.items() if r["Type"] == "AWS::DynamoDB::Table"}
    buckets = [lid for lid, r in resources.items() if r["Type"] == "AWS::S3::Bucket"]
    keys = [lid for lid, r in resources.items() if r["Type"] == "AWS::KMS::Key"]
    from chalicelib.platform.config import RESOURCE_ENV

    queues = {lid for lid, r in resources.items() if r["Type"] == "AWS::SQS::Queue" and lid in RESOURCE_ENV}
    assert len(buckets) == 1 and len(keys) == 1, \
        "one bucket, one KMS key the code names: extend the walk to tell them apart"
    needs: set[tuple] = set()

    db_tree = modules["db"][1]
    table_functions = {f.name for f in db_tree.body if isinstance(f, ast.FunctionDef)
                       and f.args.args and f.args.args[0].arg == "logical_id"} - {"table"}
    assert table_functions <= set(DB_ACTIONS), \
        f"db.{sorted(table_functions - set(DB_ACTIONS))} take a table: map them to IAM actions in DB_ACTIONS"

    def table_of(module, node, where):
        value = None
        if isinstance(node, ast.Constant):
            value = node.value
        elif isinstance(node, ast.Name):
            value = constants[module].get(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            value = constants.get(node.value.id, {}).get(node.attr)
        assert value in tables, f"{where}: can't tell which table {ast.unparse(node)} is"
        return value

    def queue_of(node, named, where):
        """The queue (logical id) of a QueueUrl argument: config.resource_name("X"), or a name bound to one."""
        logical_id = _resource_name(node) or (named.get(node.id) if isinstance(node, ast.Name) else None)
        assert logical_id in queues, f"{where}: can't tell which queue {ast.unparse(node)} is"
        return logical_id

    for module, (path, tree) in modules.items():
        rel = os.path.relpath(path, ROOT)
        getters = {}                       # local name → service, for `client = aws.s3()`
        named: dict[str, str] = {}         # local name → resource, for `queue = config.resource_name("X")`
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and _aws_getter(node.value):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        getters[target.id] = _aws_getter(node.value)
            if isinstance(node, ast.Assign) and _resource_name(node.value):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        assert named.get(target.id, _resource_name(node.value)) == _resource_name(node.value), \
                            f"{rel}: {target.id} names two resources: the walk can't tell which a call uses"
                        named[target.id] = _resource_name(node.value)
        for node in ast.walk(tree):
            where = f"{rel}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "boto3":
                assert module == "aws", f"{where}: create AWS clients in chalicelib/platform/aws.py only"
            if isinstance(node, ast.Tuple) and len(node.elts) == 3 and isinstance(node.elts[0], ast.Constant) \
                    and node.elts[0].value in TRANSACT_ACTIONS and isinstance(node.elts[2], ast.Dict):
                # an operation of db.transact: (kind, table, {spec})
                needs.add((TRANSACT_ACTIONS[node.elts[0].value], ("table", table_of(module, node.elts[1], where))))
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = None
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "db":
                name = func.attr
            elif module == "db" and isinstance(func, ast.Name) and node.args \
                    and isinstance(node.args[0], ast.Constant):
                name = func.id             # db.py calling its own helpers on a named table (next_id)
            if name in DB_ACTIONS:
                table = table_of(module, node.args[0], where)
                index = next((k.value for k in node.keywords if k.arg == "index"), None)
                if index is not None:
                    assert isinstance(index, ast.Constant), f"{where}: the index must be written out"
                    needs.add((DB_ACTIONS[name], ("index", table, index.value)))
                else:
                    needs.add((DB_ACTIONS[name], ("table", table)))
            if isinstance(func, ast.Attribute):
                service = _aws_getter(func.value) or (isinstance(func.value, ast.Name) and getters.get(func.value.id))
                if not service:
                    continue
                if service == "dynamodb":
                    assert module == "db", f"{where}: DynamoDB calls go through chalicelib/platform/db.py"
                    assert func.attr in DB_CLIENT_OPERATIONS, \
                        f"{where}: dynamodb.{func.attr} is new: map it in tests/unit/test_policy.py"
                    continue
                operations = _operation_names(service)
                if func.attr == "generate_presigned_url":
                    assert node.args and isinstance(node.args[0], ast.Constant), f"{where}: presign a named operation"
                    operation = operations[node.args[0].value]
                else:
                    assert func.attr in operations, f"{where}: {service}.{func.attr} is not an API call"
                    operation = operations[func.attr]
                if service == "sqs":
                    url = next((k.value for k in node.keywords if k.arg == "QueueUrl"), None)
                    assert url is not None, f"{where}: an SQS call without QueueUrl="
                    resource = ("queue", queue_of(url, named, where))
                else:
                    resource = {"s3": ("objects", buckets[0]), "kms": ("key", keys[0]),
                                "sns": ("topics", "alerts")}[service]
                needs.add((_iam_action(service, operation), resource))
    return needs


def _resource_name(node):
    """'X' for a call config.resource_name("X"), else None."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "resource_name" \
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "config" \
            and node.args and isinstance(node.args[0], ast.Constant):
        return node.args[0].value
    return None


def _aws_getter(node):
    """'s3' for a call aws.s3() (and the others of chalicelib/aws.py), else None."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "aws" and not node.args:
        assert node.func.attr in ("dynamodb", "s3", "kms", "sqs", "sns"), \
            f"aws.{node.func.attr}() is a new service: grant its calls in the policy and walk them here"
        return node.func.attr
    return None


@pytest.mark.parametrize("stage", deployed_stages())
def test_policy_grants_exactly_what_the_code_calls(stage):
    resources = template()["Resources"]
    needed = code_needs(resources) | RUNTIME_NEEDS
    granted = grants(load_policy(stage), resources)
    missing = sorted(needed - granted, key=str)
    extra = sorted(granted - needed, key=str)
    assert not missing, f"the code calls what {os.path.basename(policy_path(stage))} does not grant: {missing}"
    assert not extra, f"{os.path.basename(policy_path(stage))} grants what the code never calls: {extra}"


def test_the_walk_finds_the_calls_of_each_kind():
    """The walk itself: it must see transactions, the index, the bucket and the key."""
    needs = code_needs(template()["Resources"])
    assert ("dynamodb:Query", ("index", "SessionsTable", "by_user")) in needs
    assert ("dynamodb:UpdateItem", ("table", "AccountsTable")) in needs          # accounts_table.next_id
    assert ("dynamodb:DeleteItem", ("table", "MetersTable")) in needs            # a transaction's item
    assert ("dynamodb:BatchGetItem", ("table", "ReadingsTable")) in needs
    assert {a for a, r in needs if r == ("objects", "FilesBucket")} == {"s3:PutObject", "s3:AbortMultipartUpload",
                                                                        "s3:GetObject"}
    assert {a for a, r in needs if r == ("key", "ApiKeysKey")} == {"kms:Encrypt", "kms:Decrypt"}


# ---- the calls, recorded ----------------------------------------------------------------------

class Recorder:
    """Every API call of the clients chalicelib.aws creates: service, operation, parameters, response."""

    def __init__(self):
        self.calls = []
        self._hooked = set()

    def hook(self, client):
        if id(client) in self._hooked:
            return
        self._hooked.add(id(client))
        client.meta.events.register("before-parameter-build", self._before)
        client.meta.events.register("after-call", self._after)

    def _before(self, params, model, context=None, **_kwargs):
        call = {"service": model.service_model.service_name, "operation": model.name,
                "params": copy.deepcopy(params), "response": None}
        self.calls.append(call)
        if context is not None:
            context["policy_test_call"] = call

    def _after(self, parsed=None, context=None, **_kwargs):
        if context and "policy_test_call" in context:
            context["policy_test_call"]["response"] = parsed


@pytest.fixture
def recorder(aws):
    from tests.aws_faults import app_clients

    recorder = Recorder()
    for client in app_clients():
        recorder.hook(client)
    return recorder


def iam_requests(call, account, region="us-east-1"):
    """[(IAM action, resource ARN)] a recorded call is authorized on."""
    service, operation, params = call["service"], call["operation"], call["params"]

    def table_arn(name, index=None):
        return f"arn:aws:dynamodb:{region}:{account}:table/{name}" + (f"/index/{index}" if index else "")

    if service == "dynamodb":
        if operation == "TransactWriteItems":
            return [(TRANSACT_KINDS[kind], table_arn(spec["TableName"]))
                    for item in params["TransactItems"] for kind, spec in item.items()]
        if operation == "BatchGetItem":
            return [("dynamodb:BatchGetItem", table_arn(name)) for name in params["RequestItems"]]
        assert "TableName" in params, f"map DynamoDB {operation} to its resources in tests/unit/test_policy.py"
        return [(f"dynamodb:{operation}", table_arn(params["TableName"], params.get("IndexName")))]
    if service == "s3":
        wanted = [(_iam_action("s3", operation), f"arn:aws:s3:::{params['Bucket']}/{params['Key']}")]
        if operation == "UploadPartCopy":
            source = params["CopySource"]      # botocore may have made the dict "bucket/key" already
            source = f"{source['Bucket']}/{source['Key']}" if isinstance(source, dict) else source
            wanted.append(("s3:GetObject", f"arn:aws:s3:::{urllib.parse.unquote(source.split('?')[0])}"))
        return wanted
    if service == "sqs":
        name = params["QueueUrl"].rsplit("/", 1)[-1]
        return [(_iam_action("sqs", operation), f"arn:aws:sqs:{region}:{account}:{name}")]
    if service == "sns":
        topic = params.get("TopicArn") or f"arn:aws:sns:{region}:{account}:{params['Name']}"
        return [(f"sns:{operation}", topic)]
    if service == "kms":
        key = (call["response"] or {}).get("KeyId") or params.get("KeyId")
        assert key and key.startswith("arn:"), f"kms {operation}: the key's ARN is unknown ({key!r})"
        return [(f"kms:{operation}", key)]
    raise AssertionError(f"calls to {service} are new: grant them in the policy and map them here")


def _pattern(text):
    """An IAM wildcard pattern (* and ?) as a regex."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text) + r"\Z")


def resolve(node, attributes):
    """A policy resource with its references replaced by moto's names and ARNs."""
    if isinstance(node, str):
        return node
    if "Fn::GetAtt" in node:
        return attributes[".".join(_getatt(node))]
    if "Ref" in node:
        return attributes[node["Ref"]]
    if "Fn::Sub" in node:
        text = node["Fn::Sub"]
        return re.sub(r"\$\{([\w:.]+)\}", lambda m: attributes[m.group(1)], text)
    raise AssertionError(f"can't resolve {node!r}")


def allowed(policy, attributes, action, arn):
    """True when an Allow statement covers (action, arn) and no Deny does."""
    verdict = False
    for statement in policy["Statement"]:
        actions = [a for a in _listed(statement["Action"]) if fnmatch.fnmatchcase(action.lower(), a.lower())]
        resources = [r for r in _listed(statement["Resource"]) if _pattern(resolve(r, attributes)).match(arn)]
        if actions and resources:
            if statement["Effect"] == "Deny":
                return False
            verdict = True
    return verdict


def moto_attributes(env):
    """Names and ARNs of the template's resources as provisioned in moto, keyed as the template refers to them."""
    import boto3

    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    kms = boto3.client("kms", region_name="us-east-1")
    from chalicelib.platform.config import RESOURCE_ENV

    attributes = {}
    for logical_id, variable in RESOURCE_ENV.items():
        name = env[variable]
        attributes[logical_id] = name
        if logical_id.endswith("Table"):
            attributes[f"{logical_id}.Arn"] = dynamodb.describe_table(TableName=name)["Table"]["TableArn"]
        elif logical_id == "FilesBucket":
            attributes[f"{logical_id}.Arn"] = f"arn:aws:s3:::{name}"
        elif logical_id.endswith(("Queue", "DeadLetters")):
            attributes[f"{logical_id}.Arn"] = boto3.client("sqs", region_name="us-east-1").get_queue_attributes(
                QueueUrl=name, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        else:
            attributes[f"{logical_id}.Arn"] = kms.describe_key(KeyId=name)["KeyMetadata"]["Arn"]
    account = attributes["AccountsTable.Arn"].split(":")[4]
    attributes.update({"AWS::Partition": "aws", "AWS::Region": "us-east-1", "AWS::AccountId": account,
                       "AWS::StackName": "intellimeter-local",      # the prefix of the local stage's names
                       "ApiLogGroup": "/aws/lambda/intellimeter-test-api",
                       "ApiLogGroup.Arn": f"arn:aws:logs:us-east-1:{account}:log-group:/aws/lambda/intellimeter-test-api:*"})
    return attributes


def _send(client, method, path, body=None, headers=None):
    headers = dict(headers or {})
    if body is not None:
        headers.setdefault("Content-Type", "application/json")
        body = json.dumps(body)
    return getattr(client.http, method.lower())(path, headers=headers, body=body)


def run_flow(client, make_account):
    """Every route, and the paths behind them that call AWS differently; returns the (method, route)s answered."""
    from chalicelib.outputs import downloads

    password = "correct horse battery staple"
    account = make_account(username="flow-owner", password=password)
    project_id = account.view["project"]
    key = {"X-API-Key": account.key}

    def ok(response, *statuses):
        assert response.status_code in (statuses or (200,)), (response.status_code, response.body)
        return response

    # /session: a failed login (throttle written), a login (throttle cleared, session made), key login.
    ok(_send(client, "PUT", "/session", {"username": "flow-owner", "password": "wrong " + password}), 401)
    login = ok(_send(client, "PUT", "/session", {"username": "flow-owner", "password": password}))
    cookie = {"Cookie": login.headers["Set-Cookie"].split(";")[0]}
    ok(_send(client, "PUT", "/session", {"key": account.key}))
    ok(_send(client, "GET", "/session", headers=cookie))
    # /key: show (decrypt), regenerate (transaction, encrypt), show again with the new key.
    ok(_send(client, "GET", "/key", headers=key))
    key = {"X-API-Key": ok(_send(client, "POST", "/key", headers=key)).json_body["key"]}
    ok(_send(client, "GET", "/key", headers=key))
    # /user: list, create, update (rename: transaction; password: ends the other sessions by index).
    ok(_send(client, "GET", "/user", headers=key))
    ok(_send(client, "PUT", "/user", {"username": "flow-second", "password": password,
                                      "email": "second@example.com"}, headers=key))
    ok(_send(client, "POST", "/user", {"username": "flow-renamed", "email": "owner@example.com"}, headers=key))
    ok(_send(client, "POST", "/user", {"password": password + " again", "current_password": password}, headers=cookie))
    # /point: register, reconfigure, list, one, rename (transaction with a delete).
    ok(_send(client, "PUT", "/point", {"MeterId": "m1"}, headers=key))
    ok(_send(client, "PUT", "/point", {"MeterId": "m1", "SaveEvery": 5, "ModbusId": 3}, headers=key))
    ok(_send(client, "PUT", "/point", {"MeterId": "m2"}, headers=key))
    ok(_send(client, "GET", "/point", headers=key))
    ok(_send(client, "GET", "/point?name=m2", headers=key))
    ok(_send(client, "POST", "/point", {"name": "m2", "new": "second meter"}, headers=key))
    # /data: a first batch (new day items), a second on the same days (updates), then the latest.
    now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    stamps = [(now + timedelta(minutes=5 * i)).strftime("%Y-%m-%dT%H:%M:%SZ") for i in range(6)]
    first = [{"MeterId": m, "TimeStamping": t, "value": 100 + i} for m in ("m1", "m2") for i, t in enumerate(stamps[:3])]
    later = [{"MeterId": m, "TimeStamping": t, "value": 103 + i} for m in ("m1", "m2") for i, t in enumerate(stamps[3:])]
    assert ok(_send(client, "POST", "/data", {"readings": first}, headers=key)).json_body["accepted"] == 6
    assert ok(_send(client, "POST", "/data", {"readings": later}, headers=key)).json_body["accepted"] == 6
    ok(_send(client, "GET", "/data", headers=key))
    ok(_send(client, "GET", "/interval", headers=key))
    # /file and /graphics: stored in S3, answered with a presigned link.
    day = now.strftime("%Y-%m-%d")
    ok(_send(client, "GET", f"/file?start={day}&end={day}&type=csv", headers=key), 303)
    ok(_send(client, "GET", f"/consumption?start={day}&end={day}&period=hour", headers=key), 200)
    ok(_send(client, "GET", f"/consumption?start={day}&end={day}&period=month", headers=key), 200)
    ok(_send(client, "GET", f"/file?start={day}&end={day}&period=day", headers=key), 303)
    ok(_send(client, "GET", f"/graphics?type=line&start={day}&end={day}&width=4&height=3", headers=key), 303)
    ok(_send(client, "GET", f"/graphics?type=pie&start={day}&end={day}&width=4&height=3", headers=key), 303)
    ok(_send(client, "GET", "/openapi.yaml"), 200)
    # /tariffs and /bill: a tariff stored (transaction), named by a meter (transaction with a check), listed,
    # priced, in a file and a chart, released and deleted (transaction with checks).
    tariff = ok(_send(client, "PUT", "/tariffs", {"label": "flow", "fixedchargefirstmeter": 10, "default": True},
                      headers=key)).json_body
    ok(_send(client, "POST", "/point", {"name": "m1", "Tariff": tariff["id"]}, headers=key))
    ok(_send(client, "GET", "/tariffs", headers=key))
    ok(_send(client, "GET", f"/bill?start={day}&end={day}", headers=key))
    ok(_send(client, "GET", f"/file?start={day}&end={day}&bill=1", headers=key), 303)
    ok(_send(client, "GET", f"/graphics?bill=1&start={day}&end={day}&width=4&height=3", headers=key), 303)
    ok(_send(client, "POST", "/point", {"name": "m1", "Tariff": ""}, headers=key))
    ok(_send(client, "PUT", "/tariffs", {"id": tariff["id"], "label": "flow", "fixedchargefirstmeter": 10,
                                         "default": False}, headers=key))
    ok(_send(client, "DELETE", f"/tariffs?id={tariff['id']}", headers=key))
    # An export too big for a request: a job (queue), its workers (parts, assembly by UploadPartCopy).
    job = _big_export_job(client, key, project_id, ok)
    ok(_send(client, "GET", job.headers["Location"], headers=key), 303)
    # /keys and /status: a scoped key made, used (last_used), listed, reporting, read, deleted.
    made = ok(_send(client, "PUT", "/keys", {"label": "flow agent", "scope": "ingest"}, headers=key)).json_body
    ok(_send(client, "PUT", "/status", {"version": "1", "backlog": 0, "time": stamps[0]},
             headers={"X-API-Key": made["key"]}))
    ok(_send(client, "GET", "/keys", headers=key))
    ok(_send(client, "GET", "/status", headers=key))
    ok(_send(client, "DELETE", f"/keys?id={made['id']}", headers=key))
    for path in ("/docs", "/docs/ui.js", "/docs/ui.css"):
        ok(_send(client, "GET", path), 200)
    _alerts_flow(client, key, ok, day)
    # Big exports go up in parts; a failed one is aborted.
    part = b"x" * downloads.PART_BYTES
    downloads.upload_stream(project_id, "exports", "big.csv", "text/csv", [part, part, b"end"])

    def failing():
        yield part
        raise RuntimeError("the export failed half way")

    with pytest.raises(RuntimeError):
        downloads.upload_stream(project_id, "exports", "failed.csv", "text/csv", failing())
    # Log out, then delete an account (transaction of deletes, ends its sessions by index).
    ok(_send(client, "DELETE", "/session", headers=cookie))
    ok(_send(client, "DELETE", "/user", headers=key))


def _alerts_flow(client, key, ok, day):
    """Alert rules made (a webhook's secret encrypted; an address subscribed to the project's topic), listed,
    evaluated (schedule → evaluation queue → worker: meters, agents, usage), delivered (the secret decrypted,
    the webhook, an e-mail published), a failure retried and, at its last attempt, dead-lettered; the
    history read; a rule deleted."""
    import boto3

    from app import alert_delivery, alert_evaluator, alert_schedule
    from chalicelib.alerts import delivery
    from tests.loopback_http import LoopbackServer, QuietHandler
    from tools import local_worker

    class Receiver(QuietHandler):
        def do_POST(self):
            self.read_body()
            self.answer(200 if self.path == "/ok" else 500, [], b"")

    receiver = LoopbackServer(Receiver)
    try:
        failing = ok(_send(client, "PUT", "/alerts", {"kind": "meter_silent", "meter": "m1",
                                                      "webhook": receiver.url + "/fail"}, headers=key)).json_body
        mailed = ok(_send(client, "PUT", "/alerts", {"kind": "meter_silent", "meter": "m1",
                                                     "email": "ops@example.com"}, headers=key)).json_body
        ok(_send(client, "PUT", "/alerts", {"kind": "agent_silent", "minutes": 5, "webhook": receiver.url + "/ok"},
                 headers=key))
        usage = ok(_send(client, "PUT", "/alerts", {"kind": "usage_above", "period": "hour", "kWh": 1,
                                                    "webhook": receiver.url + "/ok"}, headers=key)).json_body
        ok(_send(client, "GET", "/alerts", headers=key))
        alert_schedule({"version": "0", "account": "123456789012", "region": "us-east-1", "detail": {},
                        "detail-type": "Scheduled Event", "source": "aws.events", "time": "", "id": "flow",
                        "resources": []}, None)
        sqs = boto3.client("sqs", region_name="us-east-1")
        assert local_worker.drain(sqs, os.environ["ALERT_EVALUATION_QUEUE_URL"], alert_evaluator) == (1, 0)
        handled, _failed = local_worker.drain(sqs, os.environ["ALERT_DELIVERY_QUEUE_URL"], alert_delivery)
        assert handled == 2                  # m1 is silent: the webhook (fails: retried later) and the e-mail
        today = datetime.now(timezone.utc).strftime("%Y-%m-%d")   # the event's day (UTC project): after day
        events = ok(_send(client, "GET", f"/alerts/events?start={day}&end={today}", headers=key)).json_body
        failed = next(e for e in events if e["alert"] == failing["id"])
        assert delivery.deliver({"project": failed["project"], "alert": failed["alert"], "attempt": delivery.ATTEMPTS,
                                 "event": next(_event_keys(failed))}, "flow") == "dead"
        ok(_send(client, "DELETE", f"/alerts?id={usage['id']}", headers=key))
        ok(_send(client, "DELETE", f"/alerts?id={mailed['id']}", headers=key))        # its address's topic too
    finally:
        receiver.close()


def _event_keys(body):
    """The sort keys an event's history item may have (the instant it happened is not in its body)."""
    from chalicelib.platform import db
    from chalicelib.tables import accounts_table

    for item in db.query(accounts_table.NAME, "pk = :p", {":p": accounts_table.alert_log_pk(body["project"])}):
        if item["body"]["id"] == body["id"]:
            yield item["sk"]


def _big_export_job(client, key, project_id, ok):
    """Start an export job whose first slice is over S3's 5 MiB part minimum, and run its workers."""
    import boto3

    from app import export_worker
    from chalicelib.metering import meters, readings
    from chalicelib.outputs import exports
    from chalicelib.platform import db
    from chalicelib.tables import readings_table
    from tools import local_worker

    meter = meters.find(project_id, name="m1")
    series = readings_table.series_key(project_id, meter["meter_id"])
    first = datetime(2025, 1, 1)
    for day in range(60):                      # 60 days of 30 s readings: 172,800 rows, ~7 MB of csv
        db.put(readings_table.NAME, readings.day_item(series, (first + timedelta(days=day)).strftime("%Y-%m-%d"),
                                                 {s: 1000.0 + s / 86400 for s in range(0, 86400, 30)}))
    from chalicelib.outputs import export_jobs

    saved = exports.SYNC_MAX_ROWS, exports.SLICE_ROWS, export_jobs.ASSEMBLE_HERE_BYTES
    # one slice of it all (~7 MB: S3 copies it into the file), joined by a message of its own (SendMessage)
    exports.SYNC_MAX_ROWS, exports.SLICE_ROWS, export_jobs.ASSEMBLE_HERE_BYTES = 0, 10 ** 9, 0
    try:
        job = ok(_send(client, "GET", "/file?start=2025-01-01&end=2025-03-01&type=csv", headers=key), 202)
        sqs = boto3.client("sqs", region_name="us-east-1")
        handled, failed = local_worker.drain(sqs, os.environ["EXPORT_QUEUE_URL"], export_worker)
    finally:
        exports.SYNC_MAX_ROWS, exports.SLICE_ROWS, export_jobs.ASSEMBLE_HERE_BYTES = saved
    assert handled >= 2 and not failed
    return job


def test_every_call_of_a_flow_through_every_route_is_granted(aws, client, make_account, recorder, fast_hashing):
    import logging

    from app import api

    answered = set()

    class Routes(logging.Handler):
        def emit(self, record):
            answered.add((record.__dict__.get("method"), record.__dict__.get("route")))

    handler = Routes()
    access_log = logging.getLogger("intellimeter.access")
    access_log.addHandler(handler)
    try:
        run_flow(client, make_account)
    finally:
        access_log.removeHandler(handler)

    every_route = {(method, path) for path, methods in api.routes.items() for method in methods}
    assert every_route - answered == set(), "add these routes to run_flow in tests/unit/test_policy.py"
    assert recorder.calls, "no AWS call was recorded"
    services = {(c["service"], c["operation"]) for c in recorder.calls}
    for expected in [("sns", "CreateTopic"), ("sns", "Subscribe"), ("sns", "Publish"), ("sns", "DeleteTopic"),
                     ("kms", "Encrypt"),
                     ("dynamodb", "TransactWriteItems"), ("dynamodb", "BatchGetItem"), ("s3", "UploadPart"),
                     ("s3", "UploadPartCopy"), ("sqs", "SendMessageBatch"), ("sqs", "SendMessage"),
                     ("s3", "AbortMultipartUpload"), ("s3", "GetObject"), ("kms", "Decrypt")]:
        assert expected in services, f"the flow no longer makes a {expected} call"

    attributes = moto_attributes(aws)
    account = attributes["AWS::AccountId"]
    requests = {(action, arn) for call in recorder.calls for action, arn in iam_requests(call, account)}
    assert ("dynamodb:Query", f"{attributes['SessionsTable.Arn']}/index/by_user") in requests
    for stage in deployed_stages():
        policy = load_policy(stage)
        denied = sorted((action, arn) for action, arn in requests if not allowed(policy, attributes, action, arn))
        assert not denied, f"{os.path.basename(policy_path(stage))} does not allow calls the code made: {denied}"

    # Everything recorded is in what the source walk found (so its exact-match test covers it).
    names = {attributes[k]: k for k in ("AccountsTable", "SessionsTable", "MetersTable", "ReadingsTable")}
    queues = {attributes[f"{k}.Arn"]: k for k in attributes if k.endswith(("Queue", "DeadLetters"))}
    walked = code_needs(template()["Resources"])
    for action, arn in requests:
        if arn.startswith("arn:aws:dynamodb:"):
            table, _, index = arn.split(":table/", 1)[1].partition("/index/")
            logical = ("index", names[table], index) if index else ("table", names[table])
        elif arn.startswith("arn:aws:s3:::"):
            logical = ("objects", "FilesBucket")
        elif arn.startswith("arn:aws:sqs:"):
            logical = ("queue", queues[arn])
        elif arn.startswith("arn:aws:sns:"):
            logical = ("topics", "alerts")
        else:
            logical = ("key", "ApiKeysKey")
        assert (action, logical) in walked, f"the source walk missed {action} on {logical}"


def test_the_checker_denies_what_the_policy_does_not_grant(aws):
    """The evaluator itself: a write to the readings table's index, another bucket, another key are refused."""
    attributes = moto_attributes(aws)
    policy = load_policy(deployed_stages()[0])
    account = attributes["AWS::AccountId"]
    assert allowed(policy, attributes, "dynamodb:GetItem", attributes["AccountsTable.Arn"])
    assert not allowed(policy, attributes, "dynamodb:Scan", attributes["AccountsTable.Arn"])
    assert not allowed(policy, attributes, "dynamodb:GetItem", f"arn:aws:dynamodb:us-east-1:{account}:table/other")
    assert not allowed(policy, attributes, "dynamodb:Query", attributes["AccountsTable.Arn"] + "/index/by_user")
    assert not allowed(policy, attributes, "dynamodb:DeleteItem", attributes["ReadingsTable.Arn"])
    assert allowed(policy, attributes, "s3:PutObject", attributes["FilesBucket.Arn"] + "/projects/1/exports/x/a.csv")
    assert not allowed(policy, attributes, "s3:PutObject", attributes["FilesBucket.Arn"] + "/elsewhere/a.csv")
    assert not allowed(policy, attributes, "s3:PutObject", "arn:aws:s3:::another-bucket/projects/a.csv")
    assert not allowed(policy, attributes, "s3:DeleteObject", attributes["FilesBucket.Arn"] + "/projects/a.csv")
    assert not allowed(policy, attributes, "kms:Decrypt", f"arn:aws:kms:us-east-1:{account}:key/another")
    topic = f"arn:aws:sns:us-east-1:{account}:intellimeter-local-alerts-7-4f2a"      # an address's alert topic
    assert allowed(policy, attributes, "sns:Publish", topic)
    assert not allowed(policy, attributes, "sns:Publish", f"arn:aws:sns:us-east-1:{account}:intellimeter-local-alarms")
    assert allowed(policy, attributes, "sns:DeleteTopic", topic)
    assert not allowed(policy, attributes, "sns:Unsubscribe", topic)
    assert not allowed(policy, attributes, "sqs:SendMessage", f"arn:aws:sqs:us-east-1:{account}:another-queue")

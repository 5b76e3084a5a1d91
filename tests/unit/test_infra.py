"""infra/resources.yaml: one definition of the AWS resources, for the cloud and for the local stack.

tools/provision.py must create exactly the template's tables (keys, indexes, TTL), bucket and key in
moto; the template must keep the bucket private, encrypted, TLS-only and self-cleaning, rotate the
key, and give the Lambda function the runtime, limits and environment the code expects.
"""
import json
import os
import re

import boto3
import pytest

from chalicelib.platform.config import RESOURCE_ENV
from tools import provision

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
API_GATEWAY_TIMEOUT = 29


@pytest.fixture(scope="module")
def template():
    return provision.load_template()


def of_type(template, type_name):
    return {lid: r for lid, r in template["Resources"].items() if r["Type"] == type_name}


def _getatt(node):
    value = node["Fn::GetAtt"]
    return value.split(".", 1) if isinstance(value, str) else list(value)


# ---- the local stack is the template ---------------------------------------------------------

def test_provision_creates_exactly_the_templates_tables_keys_indexes_and_ttl(aws, template):
    client = boto3.client("dynamodb", region_name="us-east-1")
    tables = of_type(template, "AWS::DynamoDB::Table")
    assert set(client.list_tables()["TableNames"]) == {aws[RESOURCE_ENV[lid]] for lid in tables}
    for logical_id, resource in tables.items():
        props = resource["Properties"]
        name = aws[RESOURCE_ENV[logical_id]]
        made = client.describe_table(TableName=name)["Table"]
        assert made["KeySchema"] == props["KeySchema"], logical_id
        assert sorted(made["AttributeDefinitions"], key=str) == sorted(props["AttributeDefinitions"], key=str)
        assert made["BillingModeSummary"]["BillingMode"] == props["BillingMode"] == "PAY_PER_REQUEST"
        wanted = {i["IndexName"]: (i["KeySchema"], i["Projection"]["ProjectionType"])
                  for i in props.get("GlobalSecondaryIndexes", [])}
        found = {i["IndexName"]: (i["KeySchema"], i["Projection"]["ProjectionType"])
                 for i in made.get("GlobalSecondaryIndexes", [])}
        assert found == wanted, logical_id
        assert not props.get("LocalSecondaryIndexes") and not made.get("LocalSecondaryIndexes")
        ttl = client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        spec = props.get("TimeToLiveSpecification")
        if spec and spec["Enabled"]:
            assert ttl["TimeToLiveStatus"] == "ENABLED" and ttl["AttributeName"] == spec["AttributeName"], logical_id
        else:
            assert ttl["TimeToLiveStatus"] == "DISABLED", logical_id


def test_provision_creates_the_templates_bucket_and_key(aws, template):
    (bucket_id, bucket), = of_type(template, "AWS::S3::Bucket").items()
    s3 = boto3.client("s3", region_name="us-east-1")
    name = aws[RESOURCE_ENV[bucket_id]]
    rules = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"]
    assert [r["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] for r in rules] == ["AES256"]
    assert s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"] == \
        bucket["Properties"]["PublicAccessBlockConfiguration"]
    lifecycle = s3.get_bucket_lifecycle_configuration(Bucket=name)["Rules"]
    assert [(r["Status"], r["Expiration"]["Days"]) for r in lifecycle] == [("Enabled", 1)]
    (key_id, _key), = of_type(template, "AWS::KMS::Key").items()
    kms = boto3.client("kms", region_name="us-east-1")
    assert kms.describe_key(KeyId=aws[RESOURCE_ENV[key_id]])["KeyMetadata"]["Enabled"]


def test_every_resource_the_code_names_is_in_the_template_and_back(template):
    dead_letters = {_getatt(r["Properties"]["RedrivePolicy"]["deadLetterTargetArn"])[0]
                    for r in of_type(template, "AWS::SQS::Queue").values() if "RedrivePolicy" in r["Properties"]}
    data = {lid for lid, r in template["Resources"].items()
            if r["Type"] in ("AWS::DynamoDB::Table", "AWS::S3::Bucket", "AWS::KMS::Key", "AWS::SQS::Queue")}
    assert data - dead_letters == set(RESOURCE_ENV)


def test_chalice_reads_the_template_as_provision_does(template):
    """chalice package merges the file with its own YAML loader: same resources, same references."""
    import yaml
    from chalice.package import YAMLTemplateSerializer

    # chalice registers its tag constructor on yaml.SafeLoader itself: undo it for the other tests.
    had = "yaml_multi_constructors" in yaml.SafeLoader.__dict__
    saved = dict(yaml.SafeLoader.yaml_multi_constructors)
    try:
        with open(provision.TEMPLATE, encoding="utf-8") as handle:
            merged = YAMLTemplateSerializer().load_template(handle.read(), provision.TEMPLATE)
    finally:
        if had:
            yaml.SafeLoader.yaml_multi_constructors = saved
        elif "yaml_multi_constructors" in vars(yaml.SafeLoader):
            del yaml.SafeLoader.yaml_multi_constructors
    with pytest.raises(yaml.constructor.ConstructorError):
        yaml.safe_load("!Ref x")

    def normal(node):
        if isinstance(node, dict):
            if set(node) == {"Fn::GetAtt"}:
                return {"Fn::GetAtt": _getatt(node)}
            return {k: normal(v) for k, v in node.items()}
        if isinstance(node, list):
            return [normal(v) for v in node]
        return node

    assert normal(merged) == normal(template)


def test_provision_creates_the_export_queue_with_its_dead_letters(aws, template):
    sqs = boto3.client("sqs", region_name="us-east-1")
    queue = template["Resources"]["ExportQueue"]["Properties"]
    attributes = sqs.get_queue_attributes(QueueUrl=aws["EXPORT_QUEUE_URL"], AttributeNames=["All"])["Attributes"]
    assert int(attributes["VisibilityTimeout"]) == queue["VisibilityTimeout"]
    redrive = json.loads(attributes["RedrivePolicy"])
    assert int(redrive["maxReceiveCount"]) == queue["RedrivePolicy"]["maxReceiveCount"]
    assert redrive["deadLetterTargetArn"].endswith(":intellimeter-local-exportdeadletters")


# ---- what the template guarantees ------------------------------------------------------------

def test_tables_keep_their_data_and_ttl_attributes_are_the_codes(template):
    tables = of_type(template, "AWS::DynamoDB::Table")
    assert set(tables) == {"AccountsTable", "SessionsTable", "MetersTable", "ReadingsTable"}
    source = "".join(open(os.path.join(folder, f), encoding="utf-8").read()
                     for folder, _dirs, files in os.walk(os.path.join(ROOT, "chalicelib")) for f in files
                     if f.endswith(".py"))
    for logical_id, resource in tables.items():
        props = resource["Properties"]
        assert resource.get("DeletionPolicy") == resource.get("UpdateReplacePolicy") == "Retain", logical_id
        assert props["SSESpecification"]["SSEEnabled"] is True, logical_id
        ttl = props.get("TimeToLiveSpecification")
        if ttl:
            assert ttl["Enabled"] is True
            assert f'"{ttl["AttributeName"]}"' in source, f"no code writes {logical_id}'s TTL attribute"
    assert tables["AccountsTable"]["Properties"]["TimeToLiveSpecification"]["AttributeName"] == "expires_at"
    assert tables["SessionsTable"]["Properties"]["TimeToLiveSpecification"]["AttributeName"] == "expires_at"
    index, = tables["SessionsTable"]["Properties"]["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "by_user"


def test_bucket_is_private_encrypted_tls_only_and_expires_generated_files_after_a_day(template):
    (bucket_id, bucket), = of_type(template, "AWS::S3::Bucket").items()
    props = bucket["Properties"]
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    assert props["PublicAccessBlockConfiguration"] == {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                                                       "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    assert props["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    assert "AccessControl" not in props and "WebsiteConfiguration" not in props
    (lifecycle,) = props["LifecycleConfiguration"]["Rules"]
    assert lifecycle["Status"] == "Enabled" and lifecycle["ExpirationInDays"] == 1
    assert "Prefix" not in lifecycle and "TagFilters" not in lifecycle, "the rule must cover every generated file"
    assert lifecycle["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 1

    (policy,) = of_type(template, "AWS::S3::BucketPolicy").values()
    assert policy["Properties"]["Bucket"] == {"Ref": bucket_id}
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Deny" and statement["Principal"] == "*" and statement["Action"] == "s3:*"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    resources = statement["Resource"]
    assert {"Fn::GetAtt": [bucket_id, "Arn"]} in [{"Fn::GetAtt": _getatt(r)} for r in resources if "Fn::GetAtt" in r]
    assert {"Fn::Sub": "${%s.Arn}/*" % bucket_id} in resources


def test_the_bucket_lets_a_page_of_any_origin_get_a_file(aws, template):
    """A browser following the 303 of /file or /graphics from a page of another origin may read the file
    (the presigned link authorizes it; no cookie is involved); nothing else is allowed across origins.
    The local stack has the same rule (tools/provision.py)."""
    (bucket_id, bucket), = of_type(template, "AWS::S3::Bucket").items()
    (rule,) = bucket["Properties"]["CorsConfiguration"]["CorsRules"]
    assert sorted(rule["AllowedMethods"]) == ["GET", "HEAD"] and rule["AllowedOrigins"] == ["*"]
    assert "Content-Disposition" in rule["ExposedHeaders"]       # the file's name, for a script
    s3 = boto3.client("s3", region_name="us-east-1")
    (made,) = s3.get_bucket_cors(Bucket=aws[RESOURCE_ENV[bucket_id]])["CORSRules"]
    assert made == {"AllowedMethods": rule["AllowedMethods"], "AllowedOrigins": rule["AllowedOrigins"],
                    "AllowedHeaders": rule["AllowedHeaders"], "ExposeHeaders": rule["ExposedHeaders"],
                    "MaxAgeSeconds": rule["MaxAge"]}


def test_a_kept_bucket_gets_the_templates_settings_again(aws, template):
    """make run keeps its state across runs: provisioning again puts the template's settings on the bucket
    made by an earlier run (here one made without CORS)."""
    (bucket_id, _bucket), = of_type(template, "AWS::S3::Bucket").items()
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.delete_bucket_cors(Bucket=aws[RESOURCE_ENV[bucket_id]])
    provision.provision_local()
    assert s3.get_bucket_cors(Bucket=aws[RESOURCE_ENV[bucket_id]])["CORSRules"][0]["AllowedOrigins"] == ["*"]


def test_api_gateways_own_answers_carry_cors_and_the_error_body(template):
    """What API Gateway answers itself (throttled, body over 10 MB, a function failing or timing out, a
    method it routes nowhere) reaches a browser page too, as {"error": …}."""
    api = template["Resources"]["RestAPI"]
    assert api["Type"] == "AWS::Serverless::Api"      # completes the API chalice package generates
    responses = api["Properties"]["GatewayResponses"]
    for kind in ("DEFAULT_4XX", "DEFAULT_5XX", "MISSING_AUTHENTICATION_TOKEN"):
        assert responses[kind]["ResponseParameters"]["Headers"]["Access-Control-Allow-Origin"] == "'*'", kind
        body = responses[kind]["ResponseTemplates"]["application/json"]
        assert body.startswith('{"error": '), kind
    assert responses["MISSING_AUTHENTICATION_TOKEN"]["StatusCode"] == "405"


def test_api_gateway_routes_every_method_of_every_path_to_the_function():
    """The app answers preflights, HEAD and OPTIONS itself (405 outside a preflight): chalice's API
    definition sends all seven methods API Gateway knows to the function, none to a mock integration
    (what chalice's CORSConfig would generate for OPTIONS, answering every OPTIONS 200)."""
    from chalice.deploy.swagger import CFNSwaggerGenerator

    from app import app
    from chalicelib.platform import web

    swagger = CFNSwaggerGenerator().generate_swagger(app)
    assert set(web.METHODS) == {"GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS"}
    for path, operations in swagger["paths"].items():
        assert set(operations) == {m.lower() for m in web.METHODS}, path
        for method, operation in operations.items():
            assert operation["x-amazon-apigateway-integration"]["type"] == "aws_proxy", (path, method)


def test_api_keys_key_rotates_and_is_kept(template):
    (key,) = of_type(template, "AWS::KMS::Key").values()
    assert key["Properties"]["EnableKeyRotation"] is True
    assert key.get("DeletionPolicy") == "Retain"
    assert key["Properties"].get("KeySpec", "SYMMETRIC_DEFAULT") == "SYMMETRIC_DEFAULT"


@pytest.mark.parametrize("function_id", ["APIHandler", "ExportWorker"])
def test_lambda_settings_runtime_limits_logs_and_environment(template, function_id):
    function = template["Resources"][function_id]
    assert function["Type"] == "AWS::Serverless::Function"
    props = function["Properties"]
    assert props["Runtime"] == "python3.12"
    if function_id == "APIHandler":
        assert 1 <= props["Timeout"] < API_GATEWAY_TIMEOUT, "the function must stop before API Gateway gives up (29 s)"
    else:  # fed by the queue: Lambda's limit, and a slice (~1 M rows, ~8 s) with room to spare
        assert 20 <= props["Timeout"] <= 900
    assert 512 <= props["MemorySize"] <= 10240
    assert props["LoggingConfig"]["LogFormat"] == "JSON"
    assert props["LoggingConfig"]["LogGroup"] == {"Ref": "ApiLogGroup"}
    assert template["Resources"]["ApiLogGroup"]["Properties"]["RetentionInDays"] > 0
    variables = props["Environment"]["Variables"]
    assert variables.pop("SECURE_COOKIES") == "true"
    expected = {}
    for logical_id, variable in RESOURCE_ENV.items():
        expected[variable] = logical_id
    assert set(variables) == set(expected)
    for variable, value in variables.items():
        referenced = value.get("Ref") or _getatt(value)[0]
        assert referenced == expected[variable], f"{variable} must name {expected[variable]}"


def test_deployed_stages_take_their_resources_from_the_template():
    with open(os.path.join(ROOT, ".chalice", "config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    assert config.get("environment_variables", {}).get("SECURE_COOKIES", "true") == "true"
    for stage, settings in config["stages"].items():
        if stage == "local":
            continue
        variables = settings.get("environment_variables", {})
        assert not set(variables) & set(RESOURCE_ENV.values()), f"{stage} must not name resources itself"
        assert variables.get("SECURE_COOKIES", "true") == "true", f"{stage} must keep secure cookies"
        assert "lambda_timeout" not in settings and "lambda_memory_size" not in settings, \
            f"{stage}: the function's limits are infra/resources.yaml's"
        assert re.fullmatch(r"[a-z]+", stage)


def test_export_worker_queue_retries_and_alarms(template):
    """The worker is fed by the queue; a message is retried export_jobs.MAX_RECEIVES times before the dead
    letters, never while a worker may still run it; the dead letters, the queue's age and the worker's
    errors are alarmed on."""
    from chalicelib.outputs import export_jobs

    resources = template["Resources"]
    worker = resources["ExportWorker"]["Properties"]
    (event,) = worker["Events"].values()
    assert event["Type"] == "SQS" and event["Properties"]["Queue"] == {"Fn::Sub": "${ExportQueue.Arn}"}
    assert event["Properties"]["BatchSize"] == 1
    assert 1 <= event["Properties"]["ScalingConfig"]["MaximumConcurrency"] <= 1000
    queue = resources["ExportQueue"]["Properties"]
    assert queue["VisibilityTimeout"] >= 6 * worker["Timeout"], "AWS: 6x the function's timeout"
    assert queue["RedrivePolicy"]["maxReceiveCount"] == export_jobs.MAX_RECEIVES
    assert _getatt(queue["RedrivePolicy"]["deadLetterTargetArn"]) == ["ExportDeadLetters", "Arn"]
    assert export_jobs.DEADLINE_SECONDS > export_jobs.MAX_RECEIVES * worker["Timeout"]
    assert queue["MessageRetentionPeriod"] >= export_jobs.DEADLINE_SECONDS
    alarmed = set()
    for alarm in of_type(template, "AWS::CloudWatch::Alarm").values():
        for dimension in alarm["Properties"]["Dimensions"]:
            value = dimension["Value"]
            alarmed.add(value.get("Ref") or _getatt(value)[0])
    assert {"ExportDeadLetters", "ExportQueue", "ExportWorker"} <= alarmed


def test_every_alarm_tells_someone(template):
    """An alarm nobody hears is no alarm: each one notifies the alarm topic when it fires and when it
    clears, and the AlarmEmail parameter subscribes an address only when one is given."""
    alarms = of_type(template, "AWS::CloudWatch::Alarm")
    assert alarms
    for logical_id, alarm in alarms.items():
        props = alarm["Properties"]
        assert props["AlarmActions"] == [{"Ref": "AlarmTopic"}], logical_id
        assert props["OKActions"] == [{"Ref": "AlarmTopic"}], logical_id
    assert template["Resources"]["AlarmTopic"]["Type"] == "AWS::SNS::Topic"
    (subscription,) = of_type(template, "AWS::SNS::Subscription").values()
    assert subscription["Condition"] == "HasAlarmEmail"
    assert subscription["Properties"]["TopicArn"] == {"Ref": "AlarmTopic"}
    assert subscription["Properties"]["Endpoint"] == {"Ref": "AlarmEmail"}
    assert template["Parameters"]["AlarmEmail"]["Default"] == ""
    assert template["Conditions"]["HasAlarmEmail"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]}


def test_the_worker_is_the_apps_sqs_handler():
    from app import app

    handlers = {name: handler for name, handler in app.handler_map.items() if name == "export_worker"}
    assert handlers, "app.export_worker is the function chalice packages as ExportWorker"

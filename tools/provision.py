"""Create the resources of infra/resources.yaml in whatever AWS boto3 points at (moto, locally).

The template is the single definition of the tables, bucket and key: CloudFormation deploys it in
AWS, and this module reads the same file for the local stack and the tests, so the two cannot drift.
"""
import json
import os

import boto3
import yaml

from chalicelib.platform.config import RESOURCE_ENV

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATE = os.path.join(PROJECT_DIR, "infra", "resources.yaml")
CHALICE_CONFIG = os.path.join(PROJECT_DIR, ".chalice", "config.json")
LOCAL_STAGE = "local"
LOCAL_PREFIX = "intellimeter-local"


class _CfnLoader(yaml.SafeLoader):
    """Safe loader that keeps CloudFormation's short-form tags (!Ref, !Sub, …) as plain data."""


def _cfn_tag(loader, tag_suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {"Fn::" + tag_suffix if tag_suffix != "Ref" else "Ref": value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def load_template(path=TEMPLATE):
    """The template as data, short-form tags kept as {"Ref": …}/{"Fn::…": …}."""
    with open(path, encoding="utf-8") as handle:
        return yaml.load(handle, Loader=_CfnLoader)


def resources(template=None, type_name=None):
    """(logical id, properties) of the template's resources, optionally of one type."""
    template = template or load_template()
    for logical_id, resource in template["Resources"].items():
        if type_name is None or resource["Type"] == type_name:
            yield logical_id, resource.get("Properties", {})


def physical_names(prefix):
    """The local physical name of each resource: prefix + logical id in lower case."""
    return {logical_id: f"{prefix}-{logical_id.lower()}" for logical_id in RESOURCE_ENV}


def _create_table(client, name, props):
    args = {
        "TableName": name,
        "KeySchema": props["KeySchema"],
        "AttributeDefinitions": props["AttributeDefinitions"],
        "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
    }
    if props.get("GlobalSecondaryIndexes"):
        args["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
    try:
        client.create_table(**args)
    except client.exceptions.ResourceInUseException:
        return
    client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100})
    ttl = props.get("TimeToLiveSpecification")
    if ttl:
        client.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)


def _create_bucket(client, name, props, region):
    try:
        if region == "us-east-1":
            client.create_bucket(Bucket=name)
        else:
            client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
    except (client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists):
        pass   # kept from an earlier run: its settings are put again below, so it has the template's today
    if "BucketEncryption" in props:
        client.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"]}
                      for rule in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]]})
    if "PublicAccessBlockConfiguration" in props:
        client.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"])
    cors = props.get("CorsConfiguration", {}).get("CorsRules", [])
    if cors:
        client.put_bucket_cors(Bucket=name, CORSConfiguration={"CORSRules": [_cors_rule(rule) for rule in cors]})
    rules = props.get("LifecycleConfiguration", {}).get("Rules", [])
    if rules:
        client.put_bucket_lifecycle_configuration(
            Bucket=name,
            LifecycleConfiguration={"Rules": [
                {"ID": r["Id"], "Status": r["Status"], "Filter": {"Prefix": ""},
                 "Expiration": {"Days": r["ExpirationInDays"]}} for r in rules]},
        )


# CloudFormation's names of a CORS rule's fields -> S3 API's (PutBucketCors).
_CORS_FIELDS = {"Id": "ID", "AllowedHeaders": "AllowedHeaders", "AllowedMethods": "AllowedMethods",
                "AllowedOrigins": "AllowedOrigins", "ExposedHeaders": "ExposeHeaders", "MaxAge": "MaxAgeSeconds"}


def _cors_rule(rule):
    """A CORS rule of the template as PutBucketCors takes it."""
    return {_CORS_FIELDS[field]: value for field, value in rule.items()}


def _create_key(client, alias, props):
    target = "alias/" + alias
    for existing in client.list_aliases()["Aliases"]:
        if existing["AliasName"] == target:
            return target
    key_id = client.create_key(Description=props.get("Description", alias))["KeyMetadata"]["KeyId"]
    client.create_alias(AliasName=target, TargetKeyId=key_id)
    return target


def _create_queue(client, name, props, arns):
    """A queue as the template has it (visibility, retention, redrive to a queue made before); its URL."""
    attributes = {k: str(props[k]) for k in ("VisibilityTimeout", "MessageRetentionPeriod") if k in props}
    redrive = props.get("RedrivePolicy")
    if redrive:
        target = redrive["deadLetterTargetArn"]["Fn::GetAtt"]
        target = target.split(".")[0] if isinstance(target, str) else target[0]
        attributes["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": arns[target],
                                                  "maxReceiveCount": str(redrive["maxReceiveCount"])})
    url = client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arns[name] = client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url


def provision(prefix="intellimeter-local", region="us-east-1"):
    """Create every resource of the template (idempotent) and return the environment naming them."""
    names = physical_names(prefix)
    dynamodb = boto3.client("dynamodb", region_name=region)
    s3 = boto3.client("s3", region_name=region)
    kms = boto3.client("kms", region_name=region)
    sqs = boto3.client("sqs", region_name=region)
    env = {}
    queue_arns: dict[str, str] = {}
    template = load_template()
    for logical_id, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::DynamoDB::Table":
            _create_table(dynamodb, names[logical_id], props)
            env[RESOURCE_ENV[logical_id]] = names[logical_id]
        elif resource["Type"] == "AWS::S3::Bucket":
            _create_bucket(s3, names[logical_id], props, region)
            env[RESOURCE_ENV[logical_id]] = names[logical_id]
        elif resource["Type"] == "AWS::KMS::Key":
            env[RESOURCE_ENV[logical_id]] = _create_key(kms, names[logical_id], props)
        elif resource["Type"] == "AWS::SQS::Queue":
            url = _create_queue(sqs, f"{prefix}-{logical_id.lower()}", props, queue_arns)
            queue_arns[logical_id] = queue_arns[f"{prefix}-{logical_id.lower()}"]
            if logical_id in RESOURCE_ENV:
                env[RESOURCE_ENV[logical_id]] = url
    return env


def local_stage_environment(path=CHALICE_CONFIG):
    """The local stage's environment variables (app-wide ones, then the stage's), as chalice applies them."""
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle)
    return {**config.get("environment_variables", {}),
            **config["stages"][LOCAL_STAGE].get("environment_variables", {})}


def provision_local(region="us-east-1"):
    """Create every resource under the local stage's names; returns the local stage's environment.

    The names come from two places (the template via physical_names, .chalice/config.json for the
    API): a difference between them is an error here rather than a table not found later.
    """
    stage = local_stage_environment()
    created = provision(prefix=LOCAL_PREFIX, region=region)
    # a queue's URL names the endpoint it was made at (moto in-process or the moto server): its name counts
    def same(variable, value):
        if variable.endswith("_URL"):
            return (stage.get(variable) or "").rsplit("/", 1)[-1] == value.rsplit("/", 1)[-1]
        return stage.get(variable) == value

    differing = sorted(k for k, v in created.items() if not same(k, v))
    if differing:
        raise RuntimeError(f"the local stage names other resources than the template: {', '.join(differing)}")
    return stage

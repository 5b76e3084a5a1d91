"""DynamoDB's key size limits, enforced on the app's DynamoDB client through botocore's event hooks.

moto enforces DynamoDB's key sizes on writes only (getmoto/moto#3888), while DynamoDB refuses an
oversized key on every call that names one: GetItem, BatchGetItem, DeleteItem and UpdateItem as
well as the writes (see ExtendDB/extenddb#194, which captured DynamoDB's answers, and the DynamoDB
developer guide's "Constraints": a partition key value of at most 2048 bytes, a sort key value of
at most 1024 bytes, strings measured in UTF-8 bytes). ``DynamoDbKeyLimits(client)`` answers such a
call as DynamoDB does, with a ValidationException carrying DynamoDB's own message, before moto sees it:
so a route that lets an oversized name reach a key answers here as it would on AWS (a 500), not a
moto 404. It also records every call's parameters (``calls``), so a test can check a value never
reached DynamoDB at all.

Query: the values its KeyConditionExpression names are held to the sort key's 1024 bytes (stricter
than DynamoDB for a partition key value between 1024 and 2048 bytes, which no route queries with).
The key attribute names come from infra/resources.yaml, the template the tables are made from.
"""
import json
import os
import re

import yaml
from botocore.exceptions import ClientError

HASH_MAX = 2048
RANGE_MAX = 1024
_TEMPLATE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "infra", "resources.yaml")
_HASH_MESSAGE = ("One or more parameter values were invalid: Size of hashkey has exceeded the maximum size limit "
                 "of2048 bytes")
_RANGE_MESSAGE = ("One or more parameter values were invalid: Aggregated size of all range keys has exceeded the "
                  "size limit of 1024 bytes")


class _Loader(yaml.SafeLoader):
    """Reads the template with CloudFormation's short tags (!Ref, !Sub, !GetAtt…) as plain values."""


_Loader.add_multi_constructor("!", lambda loader, suffix, node: None)


def key_schemas() -> dict[str, tuple[str, str | None]]:
    """{logical table id: (hash attribute, range attribute or None)} from the template."""
    with open(_TEMPLATE) as handle:
        resources = yaml.load(handle, Loader=_Loader)["Resources"]
    schemas = {}
    for logical_id, resource in resources.items():
        if resource.get("Type") != "AWS::DynamoDB::Table":
            continue
        keys = {entry["KeyType"]: entry["AttributeName"] for entry in resource["Properties"]["KeySchema"]}
        schemas[logical_id] = (keys["HASH"], keys.get("RANGE"))
    return schemas


def _size(value: dict) -> int:
    """The size DynamoDB counts for a key value ({"S": …}, {"N": …} or {"B": …})."""
    if "S" in value:
        return len(value["S"].encode("utf-8", "surrogatepass"))
    if "B" in value:
        raw = value["B"]
        return len(raw if isinstance(raw, (bytes, bytearray)) else str(raw).encode())
    return len(str(value.get("N", "")))


class DynamoDbKeyLimits:
    """Oversized keys refused as DynamoDB refuses them; every call's parameters recorded."""

    def __init__(self, client, tables: dict[str, str]):
        """tables: {physical table name: logical id} (the stage's names, as the aws fixture sets them)."""
        schemas = key_schemas()
        self.schema = {name: schemas[logical] for name, logical in tables.items() if logical in schemas}
        self.calls: list[tuple[str, str]] = []      # (operation, its parameters as JSON text)
        client.meta.events.register("before-parameter-build.dynamodb.*", self._check)

    def reached(self, text: str) -> bool:
        """True when some call carried text (in a key, an attribute or an expression value)."""
        return any(text in params for _operation, params in self.calls)

    def _check(self, params, model, **_kwargs):
        operation = model.name
        self.calls.append((operation, json.dumps(params, ensure_ascii=False, default=str)))
        for table, key in self._keys(operation, params):
            self._check_key(operation, table, key)
        if operation == "Query":
            self._check_query(params)

    def _keys(self, operation, params):
        """(table, key or item) of every key a call names."""
        table = params.get("TableName")
        if operation in ("GetItem", "DeleteItem", "UpdateItem"):
            return [(table, params.get("Key", {}))]
        if operation == "PutItem":
            return [(table, params.get("Item", {}))]
        if operation == "BatchGetItem":
            return [(name, key) for name, request in params.get("RequestItems", {}).items()
                    for key in request.get("Keys", [])]
        if operation == "BatchWriteItem":
            return [(name, write.get("PutRequest", {}).get("Item") or write.get("DeleteRequest", {}).get("Key", {}))
                    for name, writes in params.get("RequestItems", {}).items() for write in writes]
        if operation in ("TransactWriteItems", "TransactGetItems"):
            return [(spec.get("TableName"), spec.get("Item") or spec.get("Key", {}))
                    for entry in params.get("TransactItems", []) for spec in entry.values()]
        return []

    def _check_key(self, operation, table, key):
        hash_name, range_name = self.schema.get(table, (None, None))
        if hash_name in key and _size(key[hash_name]) > HASH_MAX:
            raise _validation(operation, _HASH_MESSAGE)
        if range_name is not None and range_name in key and _size(key[range_name]) > RANGE_MAX:
            raise _validation(operation, _RANGE_MESSAGE)

    def _check_query(self, params):
        named = set(re.findall(r":\w+", params.get("KeyConditionExpression", "")))
        for name, value in params.get("ExpressionAttributeValues", {}).items():
            if name in named and _size(value) > RANGE_MAX:
                raise _validation("Query", _RANGE_MESSAGE)


def _validation(operation, message):
    return ClientError({"Error": {"Code": "ValidationException", "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": 400}}, operation)


def stage_tables(stage_env: dict[str, str]) -> dict[str, str]:
    """{physical table name: logical id} of the aws fixture's stage environment (ACCOUNTS_TABLE → AccountsTable)."""
    out = {}
    for variable, name in stage_env.items():
        if variable.endswith("_TABLE"):
            logical = "".join(part.capitalize() for part in variable[:-len("_TABLE")].split("_")) + "Table"
            out[name] = logical
    return out

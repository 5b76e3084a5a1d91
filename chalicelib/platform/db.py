"""DynamoDB access: the small layer every storage module goes through.

Items are plain dicts here; this module converts them to and from DynamoDB's typed form, pages
queries, and turns conditional-check failures into one exception the callers can act on.
"""
import functools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from chalicelib.platform import aws, config

Item = dict[str, Any]
"""An item (or a key) as a plain dict: attribute name → str, int, float, bytes, bool, list, dict, set or None."""

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


class ConditionFailed(Exception):
    """A conditional write (or one condition of a transaction) did not hold."""

    def __init__(self, failed: Iterable[str] = ()) -> None:
        super().__init__("condition failed")
        self.failed = frozenset(failed)   # names of the transaction's operations whose condition failed


# BatchGetItem and BatchWriteItem answer part of the keys when throttled; after this many tries the request is a 503.
UNPROCESSED_ATTEMPTS = 6
# Calls made at once by in_parallel (and by batch_get / batch_write for their chunks). DynamoDB calls are
# network waits (~4 ms each in a Lambda of the region): a push of 300 readings writes 300 items, one after
# the other ~1.2 s, 32 at once ~40 ms. aws.py's clients keep as many connections.
THREADS = aws.MAX_CONNECTIONS


class Throttled(ClientError):
    """DynamoDB kept part of a batch unprocessed (throttling) through every retry: a 503 like any throttle."""

    def __init__(self, message: str, operation: str = "BatchGetItem") -> None:
        super().__init__({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": message}},
                         operation)


def in_parallel(calls: Sequence[Callable[[], Any]]) -> list[Any]:
    """Run the calls concurrently, at most THREADS at once: their results in order, where a call that raised
    gives its exception as its result. Every call has ended when this returns (nothing is left running,
    so a caller that fails afterwards leaves no write in flight). boto3's clients are thread-safe."""
    if len(calls) <= 1:
        return [_outcome(call) for call in calls]
    with ThreadPoolExecutor(max_workers=min(THREADS, len(calls))) as pool:
        return list(pool.map(_outcome, calls))


def _outcome(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as error:   # handed back as the call's result: the caller decides
        return error


def raise_first(outcomes: Iterable[Any]) -> None:
    """Raise the first exception among in_parallel's outcomes, if any."""
    for outcome in outcomes:
        if isinstance(outcome, Exception):
            raise outcome


def table(logical_id: str) -> str:
    """Physical table name of a table of infra/resources.yaml."""
    return config.resource_name(logical_id)


def to_ddb(item: Item) -> dict[str, Any]:
    """A plain dict as a DynamoDB item (floats pass through Decimal exactly as written)."""
    return {k: _serializer.serialize(_plain_to_ddb_value(v)) for k, v in item.items() if v is not None}


def _plain_to_ddb_value(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: _plain_to_ddb_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_to_ddb_value(v) for v in value]
    return value


def from_ddb(item: Mapping[str, Any]) -> Item:
    """A DynamoDB item as a plain dict: integral numbers as int, others as float."""
    return {k: _ddb_to_plain(_deserializer.deserialize(v)) for k, v in item.items()}


def _ddb_to_plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and "." not in str(value) and "E" not in str(value) else float(value)
    if isinstance(value, dict):
        return {k: _ddb_to_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ddb_to_plain(v) for v in value]
    return value


def values(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """ExpressionAttributeValues from a plain dict."""
    return {k: _serializer.serialize(_plain_to_ddb_value(v)) for k, v in mapping.items()}


def set_fields(fields: Mapping[str, Any]) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(UpdateExpression, names, values) that set each attribute of fields {name: value}:
    "SET #f0 = :v0, #f1 = :v1", {"#f0": name, ...}, {":v0": value, ...} (placeholders, so any
    attribute name is safe, reserved words included)."""
    names = {f"#f{i}": name for i, name in enumerate(fields)}
    expression = "SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(fields)))
    return expression, names, {f":v{i}": value for i, value in enumerate(fields.values())}


def get(logical_id: str, key: Item, consistent: bool = True) -> Item | None:
    """One item by key, or None."""
    answer = aws.dynamodb().get_item(TableName=table(logical_id), Key=to_ddb(key), ConsistentRead=consistent)
    return from_ddb(answer["Item"]) if "Item" in answer else None


def put(logical_id: str, item: Item, condition: str | None = None, names: dict[str, str] | None = None,
        expression_values: Mapping[str, Any] | None = None) -> None:
    """Write one item, optionally under a condition (ConditionFailed when it fails)."""
    args = {"TableName": table(logical_id), "Item": to_ddb(item)}
    _add_condition(args, condition, names, expression_values)
    _call(aws.dynamodb().put_item, args)


def update(logical_id: str, key: Item, expression: str, names: dict[str, str] | None = None,
           expression_values: Mapping[str, Any] | None = None, condition: str | None = None,
           return_values: str = "NONE") -> Item:
    """UpdateItem; returns the attributes asked for by return_values as a plain dict."""
    args = {"TableName": table(logical_id), "Key": to_ddb(key), "UpdateExpression": expression,
            "ReturnValues": return_values}
    _add_condition(args, condition, names, expression_values)
    answer = _call(aws.dynamodb().update_item, args)
    return from_ddb(answer.get("Attributes", {}))


def delete(logical_id: str, key: Item, condition: str | None = None, names: dict[str, str] | None = None,
           expression_values: Mapping[str, Any] | None = None) -> None:
    """Delete one item, optionally under a condition."""
    args = {"TableName": table(logical_id), "Key": to_ddb(key)}
    _add_condition(args, condition, names, expression_values)
    _call(aws.dynamodb().delete_item, args)


def query(logical_id: str, key_condition: str, expression_values: Mapping[str, Any],
          names: dict[str, str] | None = None, index: str | None = None, forward: bool = True,
          limit: int | None = None, consistent: bool = False, projection: str | None = None,
          page_size: int | None = None) -> Iterator[Item]:
    """Items matching a key condition, in sort-key order, paging lazily through every page (or up to limit).

    page_size bounds the items one call fetches, so a caller streaming big items holds little at once.
    """
    args = {"TableName": table(logical_id), "KeyConditionExpression": key_condition,
            "ExpressionAttributeValues": values(expression_values), "ScanIndexForward": forward}
    if names:
        args["ExpressionAttributeNames"] = names
    if index:
        args["IndexName"] = index
    elif consistent:
        args["ConsistentRead"] = True
    if projection:
        args["ProjectionExpression"] = projection
    if limit or page_size:
        args["Limit"] = min(x for x in (limit, page_size) if x)
    returned = 0
    while True:
        page = aws.dynamodb().query(**args)
        for item in page.get("Items", []):
            yield from_ddb(item)
            returned += 1
            if limit and returned >= limit:
                return
        if "LastEvaluatedKey" not in page:
            return
        args["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def batch_get(logical_id: str, keys: Iterable[Item], consistent: bool = True,
              projection: str | None = None, names: dict[str, str] | None = None) -> list[Item]:
    """Items for many keys of one table (missing ones are left out), any order; projection: the attributes
    wanted (names: placeholders it uses). Calls of 100 keys, made at once (in_parallel)."""
    typed = [to_ddb(k) for k in keys]
    chunks = [typed[at:at + 100] for at in range(0, len(typed), 100)]
    extra: dict[str, Any] = {"ConsistentRead": consistent}
    if projection:
        extra["ProjectionExpression"] = projection
    if names:
        extra["ExpressionAttributeNames"] = names
    outcomes = in_parallel([functools.partial(_batch_get_chunk, table(logical_id), chunk, extra) for chunk in chunks])
    raise_first(outcomes)
    return [item for found in outcomes for item in found]


def _batch_get_chunk(name: str, keys: list[dict[str, Any]], extra: dict[str, Any]) -> list[Item]:
    """One BatchGetItem of up to 100 keys, asking again for the unprocessed ones."""
    found: list[Item] = []

    def send(request: dict[str, Any]) -> dict[str, Any] | None:
        answer = aws.dynamodb().batch_get_item(RequestItems=request)
        found.extend(from_ddb(i) for i in answer["Responses"].get(name, []))
        return answer.get("UnprocessedKeys") or None

    _until_processed({name: {"Keys": keys, **extra}}, send, "BatchGetItem")
    return found


def _until_processed(request: dict[str, Any], send: Callable[[dict[str, Any]], dict[str, Any] | None],
                     operation: str) -> None:
    """Send a batch request, then what it left unprocessed (throttling: with backoff), until nothing is left;
    Throttled (a 503) after UNPROCESSED_ATTEMPTS."""
    for attempt in range(UNPROCESSED_ATTEMPTS):
        unprocessed = send(request)
        if not unprocessed:
            return
        request = unprocessed
        time.sleep(min(0.05 * 2 ** attempt, 1.0))   # unprocessed means throttling: back off
    raise Throttled(f"{operation} left part of the batch unprocessed after every retry", operation)


def batch_write(logical_id: str, puts: Iterable[Item] = (), deletes: Iterable[Item] = ()) -> None:
    """Unconditional puts (whole items) and deletes (keys) in BatchWriteItem calls of 25, made at once;
    unprocessed ones are sent again with backoff. For writes that need no condition: each is idempotent."""
    requests = [{"PutRequest": {"Item": to_ddb(item)}} for item in puts] + \
               [{"DeleteRequest": {"Key": to_ddb(key)}} for key in deletes]
    name = table(logical_id)
    outcomes = in_parallel([functools.partial(_batch_write_chunk, name, requests[at:at + 25])
                            for at in range(0, len(requests), 25)])
    raise_first(outcomes)


def _batch_write_chunk(name: str, chunk: list[dict[str, Any]]) -> None:
    _until_processed({name: chunk}, lambda request: aws.dynamodb().batch_write_item(RequestItems=request)
                     .get("UnprocessedItems") or None, "BatchWriteItem")


def transact(operations: Mapping[str, tuple[str, str, Mapping[str, Any]]]) -> None:
    """TransactWriteItems of named plain-dict operations: {name: ("put"|"delete"|"update"|"check", logical_id, args)}.

    ConditionFailed.failed names the operations whose condition did not hold, so callers decode a
    failure by what it was, not by where it sat in the list.
    """
    items = []
    for kind, logical_id, spec in operations.values():
        spec = dict(spec)
        entry: dict[str, Any] = {"TableName": table(logical_id)}
        if kind == "put":
            entry["Item"] = to_ddb(spec.pop("item"))
        else:
            entry["Key"] = to_ddb(spec.pop("key"))
        if "expression" in spec:
            entry["UpdateExpression"] = spec.pop("expression")
        _add_condition(entry, spec.pop("condition", None), spec.pop("names", None), spec.pop("values", None))
        items.append({{"put": "Put", "delete": "Delete", "update": "Update", "check": "ConditionCheck"}[kind]: entry})
    try:
        aws.dynamodb().transact_write_items(TransactItems=items)
    except ClientError as error:
        # Cancelled because a condition did not hold: ConditionFailed. Cancelled because of throttling or
        # a conflicting transaction (no condition failed): not the caller's doing, raised as is (a 503).
        if error.response["Error"]["Code"] == "TransactionCanceledException":
            reasons = [r.get("Code", "None") for r in error.response.get("CancellationReasons", [])]
            if "ConditionalCheckFailed" in reasons:
                raise ConditionFailed(name for name, reason in zip(operations, reasons)
                                      if reason == "ConditionalCheckFailed") from None
        raise


def _add_condition(args: dict[str, Any], condition: str | None, names: dict[str, str] | None,
                   expression_values: Mapping[str, Any] | None) -> None:
    if condition:
        args["ConditionExpression"] = condition
    if names:
        args["ExpressionAttributeNames"] = names
    if expression_values:
        args["ExpressionAttributeValues"] = values(expression_values)


def _call(method: Callable[..., Any], args: dict[str, Any]) -> Any:
    try:
        return method(**args)
    except ClientError as error:
        if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
            raise ConditionFailed() from None
        raise

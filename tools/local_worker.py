"""The export worker, locally: receive from the export queue (moto) and run the Lambda's own handler.

`chalice local` serves routes only; in AWS the SQS event source polls the queue and invokes
app.export_worker with a batch. Here a loop does the same with the same event shape: a message is
deleted when the handler returns, and left to the queue when it raises (delivered again after
VISIBILITY seconds, and to the dead letters after the queue's maxReceiveCount, as in AWS).
Usage (make run starts it): python -m tools.local_worker
"""
import os
import signal
import sys
import time

VISIBILITY = 5      # seconds before a failed message is delivered again (the deployed queue: 360)


def lambda_event(message, queue_arn, region):
    """The SQS event Lambda's event source would pass for one received message."""
    return {"Records": [{
        "messageId": message["MessageId"], "receiptHandle": message["ReceiptHandle"], "body": message["Body"],
        "attributes": message.get("Attributes", {}), "messageAttributes": {}, "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs", "eventSourceARN": queue_arn, "awsRegion": region}]}


def receive_once(sqs, queue_url, handler, wait=0, visibility=VISIBILITY):
    """Receive up to one message and run the handler on it; (handled, failed) counts."""
    answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=wait,
                                 VisibilityTimeout=visibility, AttributeNames=["All"])
    messages = answer.get("Messages", [])
    if not messages:
        return 0, 0
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    message = messages[0]
    try:
        handler(lambda_event(message, arn, sqs.meta.region_name), None)
    except Exception as error:  # the queue delivers it again, as Lambda's event source would
        print(f"local worker: message failed ({type(error).__name__}: {error}); the queue will retry it",
              file=sys.stderr, flush=True)
        return 1, 1
    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return 1, 0


def drain(sqs, queue_url, handler, visibility=0, max_messages=10_000):
    """Run messages until the queue has none visible (tests: retries come back at once with visibility 0)."""
    handled = failed = 0
    while handled < max_messages:
        one, bad = receive_once(sqs, queue_url, handler, visibility=visibility)
        if not one:
            return handled, failed
        handled += one
        failed += bad
    return handled, failed


def main():
    from app import app, export_worker
    from chalicelib.platform import aws, config
    from tools.provision import local_stage_environment

    os.environ.update({k: v for k, v in local_stage_environment().items() if k not in os.environ})
    del app  # imported so the handler is the app's, as in Lambda
    sqs = aws.sqs()
    queue_url = config.resource_name("ExportQueue")
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    print(f"local worker: receiving from {queue_url}", flush=True)
    while not stop:
        try:
            receive_once(sqs, queue_url, export_worker, wait=1)
        except Exception as error:  # the moto server restarting: wait and go on
            print(f"local worker: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
            time.sleep(1)


if __name__ == "__main__":
    main()

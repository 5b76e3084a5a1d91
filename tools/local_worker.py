"""The app's workers, locally: what AWS runs outside the routes (SQS event sources), run by a loop each.

`chalice local` serves routes only; in AWS the SQS event source polls the export queue and invokes
app.export_worker with a batch. Here a loop does the same with the same event shape: a message is
deleted when the handler returns, and left to the queue when it raises (delivered again after
VISIBILITY seconds, and to the dead letters after the queue's maxReceiveCount, as in AWS).

WORKERS names each worker and what runs it; `make run` starts one process per entry
(`python -m tools.local_worker NAME`). Another queue's worker is one more QueueWorker entry; a
scheduled function (`@app.schedule`) would be another class with the same poll_once(). On SIGTERM a
worker ends at once, as a Lambda cut short does: a message it was running goes back to the queue.
Usage: python -m tools.local_worker [NAME]   (default: export)
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


class QueueWorker:
    """A queue's event source: receive one message at a time and run the app's handler on it."""

    def __init__(self, queue, handler):
        self.queue, self.handler = queue, handler      # the queue's logical id, the app's function name

    def start(self):
        import app
        from chalicelib.platform import aws, config

        self.sqs = aws.sqs()
        self.queue_url = config.resource_name(self.queue)
        self.function = getattr(app, self.handler)
        return f"receiving from {self.queue_url} for app.{self.handler}"

    def poll_once(self):
        """One short poll; a second's rest when the queue is empty (no long poll: the embedded AWS saves
        its state between requests, and a request held open for seconds would hold the save back)."""
        handled, _failed = receive_once(self.sqs, self.queue_url, self.function, wait=0)
        if not handled:
            time.sleep(1)


WORKERS = {"export": QueueWorker("ExportQueue", "export_worker")}


def main(argv=None):
    from tools.provision import local_stage_environment

    names = sys.argv[1:] if argv is None else argv
    name = names[0] if names else "export"
    if name not in WORKERS:
        print(f"no worker {name!r}: one of {', '.join(WORKERS)}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    os.environ.update({k: v for k, v in local_stage_environment().items() if k not in os.environ})
    worker = WORKERS[name]
    print(f"local worker {name}: {worker.start()}", flush=True)
    while True:
        try:
            worker.poll_once()
        except Exception as error:  # the moto server restarting: wait and go on
            print(f"local worker {name}: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
            time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())

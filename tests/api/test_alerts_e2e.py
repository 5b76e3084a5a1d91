"""Alerts end to end over HTTP: the real API on a loopback port (over in-process moto), a meter whose
readings stop and resume, the one-minute schedule and its workers run as AWS runs them, and receivers on
the loopback whose signature check is Stripe's library (the same `t=…,v1=…` over "<t>.<body>" scheme),
not ours.

Each simulated minute: the meter pushes a reading over HTTP (until it stops, and again once it resumes),
two evaluator runs race (threads: nothing may be sent twice), and the deliveries run as concurrent
invocations. One receiver answers 200, one 500, one hangs: the first gets the alert once when the meter
goes silent and once when it is back, on time, whatever the other two do.
"""
import os
import threading
from datetime import datetime, timezone

import pytest
import requests

from chalicelib.alerts import delivery, evaluator
from chalicelib.platform import clock
from tests.alerts_support import Receiver, drain_evaluations, scheduled_event, sqs

pytestmark = [pytest.mark.usefixtures("fast_hashing"), pytest.mark.fresh_aws]   # it drains the account's queues


def iso(epoch):
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_meter_that_stops_and_resumes_alerts_once_each_way_over_http(live_api, time_travel, serialized_aws,
                                                                       monkeypatch):
    from app import alert_delivery, alert_schedule
    from chalicelib.alerts import webhooks
    from tools import local_worker

    monkeypatch.setattr(webhooks, "ANSWER_SECONDS", 1.0)     # the hanging receiver costs the suite less time
    receiver = Receiver()
    http = requests.Session()
    http.headers["X-API-Key"] = live_api.key

    def call(method, path, **kwargs):
        answer = http.request(method, live_api.url + path, timeout=60, **kwargs)
        assert answer.status_code == 200, (method, path, answer.status_code, answer.text[:300])
        return answer.json()

    try:
        call("PUT", "/point", json={"MeterId": "chiller", "SaveEvery": 1})
        made = {path: call("PUT", "/alerts", json={"kind": "meter_silent", "meter": "chiller",
                                                   "webhook": receiver.to(path)})
                for path in ("/ok", "/fail", "/hang")}
        receiver.secrets["/ok"] = made["/ok"]["secret"]
        receiver.secrets["/fail"] = made["/fail"]["secret"]

        def minute(reporting, value):
            if reporting:
                receipt = call("POST", "/data", json={"readings": [
                    {"MeterId": "chiller", "TimeStamping": iso(clock.now()), "value": value}]})
                assert receipt["accepted"] == 1
            alert_schedule(scheduled_event(), None)          # the schedule queues the project…
            assert drain_evaluations() == 1                  # …its worker evaluates it, and a second run races it:
            racer = threading.Thread(target=evaluator.evaluate_projects, args=([live_api.project_id],))
            racer.start()
            evaluator.evaluate_projects([live_api.project_id])
            racer.join()
            deliveries = [threading.Thread(target=local_worker.receive_once, kwargs={
                "sqs": sqs(), "queue_url": os.environ["ALERT_DELIVERY_QUEUE_URL"], "handler": alert_delivery,
                "visibility": 120}) for _ in range(3)]       # each message an invocation of its own, as on Lambda
            for worker in deliveries:
                worker.start()
            for worker in deliveries:
                worker.join(timeout=60)
            time_travel.shift(60)

        value = 5000.0
        for _ in range(3):                                   # reporting
            value += 0.5
            minute(True, value)
        assert receiver.posts == []
        silent_from = clock.now()
        for _ in range(10):                                  # stopped: late after 2 × SaveEvery + 5 minutes
            minute(False, value)
        fired = receiver.at("/ok")
        assert [p["body"]["state"] for p in fired] == ["firing"]
        assert fired[0]["clock"] - silent_from < 9 * 60       # within two minutes of the meter turning late
        for _ in range(3):                                   # resumed
            value += 0.5
            minute(True, value)
        delivered = receiver.at("/ok")
        assert [p["body"]["state"] for p in delivered] == ["firing", "resolved"]
        assert all(p["verified"] for p in delivered)         # Stripe's verifier accepts every signature
        assert [p["body"]["id"] for p in delivered] == [p["event"] for p in delivered]
        today = datetime.fromtimestamp(clock.now(), timezone.utc).date()
        events = call("GET", "/alerts/events", params={"start": str(today.replace(day=1)), "end": str(today)})
        ok_events = [e for e in events if e["alert"] == made["/ok"]["id"]]
        assert [p["body"] for p in delivered] == ok_events   # the history is what was sent, once each
        assert len(events) == 6                              # three rules, each fired and resolved once
        # The failing receiver is being retried, the hanging one too; neither held the first one up.
        assert {p["body"]["id"] for p in receiver.at("/fail")} <= {e["id"] for e in events}
        assert all(p["verified"] for p in receiver.at("/fail"))
        listed = {r["id"]: r for r in call("GET", "/alerts")}
        assert listed[made["/ok"]["id"]]["last_error"] is None and listed[made["/ok"]["id"]]["state"] == "resolved"
        for path in ("/fail", "/hang"):
            error = listed[made[path]["id"]]["last_error"]
            assert error["retrying"] and error["attempt"] < delivery.ATTEMPTS, (path, error)
    finally:
        receiver.close()

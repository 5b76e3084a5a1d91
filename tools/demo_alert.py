"""The demo's alert: a meter_silent rule of the demo project, POSTing to the webhook receiver `make run` runs.

The receiver (tools/webhook_receiver.py) binds a port of its choosing each run, so each run replaces the
last run's demo rule (its webhook is the receiver's /demo-alerts path on the loopback) with one to the
new port, and writes the new rule's signing secret where the receiver reads it (mode 0600): the secret
is shown once, as to any integrator. The rule watches every meter of the demo, each on its own.
"""
import os

PATH = "/demo-alerts"


def ensure(project_id: int, receiver_url: str, secret_file: str) -> dict:
    """The demo project's meter_silent rule to the receiver (the last run's replaced); the rule as GET shows it."""
    from chalicelib.alerts import rules
    from chalicelib.identity import accounts

    zone = accounts.project_zone(project_id)
    for old in rules.listing(project_id, zone).build():
        if (old["webhook"] or "").startswith("http://127.0.0.1:") and (old["webhook"] or "").endswith(PATH):
            rules.delete(project_id, old["id"])
    made = rules.create(project_id, {"kind": "meter_silent", "webhook": receiver_url + PATH}, zone)
    descriptor = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(descriptor, "w", encoding="utf-8") as handle:
        handle.write(made.pop("secret"))
    return made

"""The demo's webhook receiver: logs each alert POSTed to it, and whether its signature holds.

`make run` starts it on the loopback and gives the demo project a meter_silent rule that POSTs to it,
so an alert can be watched firing and resolving (README, "Alerts in the demo"). Each POST is one log
line: the event's state, kind, meter (or agent), since and value, its id, and the verdict of the
signature check of docs/alerts.md against the rule's secret. The secret is read from --secret-file at
each request: the stack writes it there (mode 0600) once it has made the rule, which needs this
receiver's port first; more rules may post here, their secrets one a line. It answers 200 to a POST
signed by one of them, 401 to any other.

Usage: python -m tools.webhook_receiver --port 0 --ready-file PATH --secret-file PATH
(`--port 0`: a port the kernel chooses; the ready file gets {"pid", "port"} once it serves.)
"""
import argparse
import hashlib
import hmac
import json
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOLERANCE = 300


def verify(body: bytes, header: str, secret: str, tolerance: int = TOLERANCE) -> dict:
    """docs/alerts.md's check: the event if X-Intellimeter-Signature proves the secret signed it; else ValueError."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(secret.encode(), fields["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, fields.get("v1", "")):
        raise ValueError("the signature does not match")
    if abs(time.time() - int(fields["t"])) > tolerance:
        raise ValueError("signed too long ago")
    return json.loads(body)


def make_handler(secret_file: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            event, verdict, status = {}, "REFUSED: no secret to check it with", 401
            try:
                with open(secret_file, encoding="utf-8") as handle:
                    secrets = [line.strip() for line in handle if line.strip()]
            except OSError as error:
                secrets, verdict = [], f"REFUSED: {error}"
            for secret in secrets:          # the demo rule's, and any other rule's added (one a line)
                try:
                    event = verify(body, self.headers.get("X-Intellimeter-Signature") or "", secret)
                    verdict, status = "signature ok", 200
                    break
                except (ValueError, KeyError) as error:
                    verdict = f"REFUSED: {error}"
            what = event.get("meter") or event.get("agent") or "?"
            print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} alert {event.get('alert')} {str(event.get('state')).upper()}: "
                  f"{event.get('kind')} {what}, since {event.get('since')}, value {event.get('value')} "
                  f"(event {event.get('id')}; {verdict})", flush=True)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file", help="written with the pid and port once serving")
    parser.add_argument("--secret-file", required=True, help="the rule's signing secret (read at each request)")
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(args.secret_file))
    port = server.server_address[1]
    print(f"webhook receiver: listening on http://{args.host}:{port}/", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    from tools.processes import serve

    return serve(server, args.ready_file, port)


if __name__ == "__main__":
    sys.exit(main())

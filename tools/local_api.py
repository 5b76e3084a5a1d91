"""The API on Chalice's local server (what `chalice local` runs), with query strings kept out of its log.

`chalice local` logs each request line with its query string, where the vendor's clients may put
credentials (PUT /session?key=…); this runs the same server with a handler that logs the path only.
Usage: python -m tools.local_api --host 127.0.0.1 --port 8000 [--stage local]
"""
import argparse
import logging
import os
import sys

from chalice.cli.factory import CLIFactory
from chalice.local import ChaliceRequestHandler, LocalDevServer

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class RedactingRequestHandler(ChaliceRequestHandler):
    """Chalice's request handler, logging 'METHOD /path' without the query string."""

    def log_request(self, code="-", size="-"):
        method, _, rest = (self.requestline or "").partition(" ")
        path = rest.split(" ")[0].split("?")[0]
        sys.stderr.write(f'{self.address_string()} "{method} {path}" {code}\n')


def make_server(host, port, stage="local"):
    """A LocalDevServer for the app on a stage, its environment variables applied to this process."""
    factory = CLIFactory(PROJECT_DIR)
    config = factory.create_config_obj(chalice_stage_name=stage)
    os.environ.update(config.environment_variables)
    if PROJECT_DIR not in sys.path:
        sys.path.insert(0, PROJECT_DIR)
    from app import app

    return LocalDevServer(app, config, host, port, handler_cls=RedactingRequestHandler)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--stage", default="local")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    server = make_server(args.host, args.port, args.stage)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

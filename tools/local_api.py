"""The API on Chalice's local server (what `chalice local` runs), as API Gateway routes it, query strings kept out of its log.

`chalice local` logs each request line with its query string, where the vendor's clients may put
credentials (PUT /session?key=…); this runs the same server with a handler that logs the path only.
It also routes as API Gateway does where `chalice local` doesn't: a greedy `/{proxy+}` route matches
paths of any depth (the app's 404 catch-all); every method reaches the app, which answers one a path
doesn't have 405 with its error body (TRACE, QUERY or any other token: the plain server answers 501
with an HTML page); and a HEAD answer has its headers only (the plain server writes the body too,
which the client then reads as the start of the next answer).
Usage: python -m tools.local_api --host 127.0.0.1 --port 8000 [--stage local] [--ready-file PATH]
(`--port 0`: a port the kernel chooses; the ready file gets {"pid", "port"} once it serves.)
"""
import argparse
import logging
import os
import re
import sys
import urllib.parse

from chalice.app import Request
from chalice.cli.factory import CLIFactory
from chalice.local import ChaliceRequestHandler, LocalDevServer, MatchResult, RouteMatcher

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


GREEDY = "/{proxy+}"
# An HTTP method is a token (RFC 9110 5.6.2); anything else is not a request line http.server should route.
METHOD_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}")


class GreedyRouteMatcher(RouteMatcher):
    """Chalice's route matcher, with API Gateway's greedy `/{proxy+}` for paths no other route matches."""

    def match_route(self, url):
        try:
            return super().match_route(url)
        except ValueError:
            if GREEDY not in self.route_urls:
                raise
            parsed = urllib.parse.urlparse(url)
            query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
            return MatchResult(GREEDY, {"proxy": parsed.path.lstrip("/")}, query)


class RedactingRequestHandler(ChaliceRequestHandler):
    """Chalice's request handler, logging 'METHOD /path' without the query string, routing as API Gateway."""

    def __init__(self, request, client_address, server, app_object, config):
        self._app_object = app_object
        super().__init__(request, client_address, server, app_object=app_object, config=config)

    def setup(self):
        super().setup()
        converter = self.local_gateway.event_converter
        converter._route_matcher = GreedyRouteMatcher(list(self._app_object.routes))

    def __getattr__(self, name):
        """do_<METHOD> of a method Chalice's handler has no do_ for (TRACE, QUERY, …): the app answers it.

        http.server looks the method's handler up by name and answers 501 in HTML when it finds none."""
        if name.startswith("do_") and METHOD_TOKEN.fullmatch(name[3:]):
            return self._other_method
        raise AttributeError(name)

    def _other_method(self):
        """A method Chalice's dispatcher doesn't know goes to the app's view of the path (which answers
        405, or 404 off its routes), never echoed. Chalice's own dispatcher would answer it with its own
        405 body; the app's views answer any method with the API's error body."""
        headers, body = self._parse_payload()
        event = self.local_gateway._generate_lambda_event("GET", self.path, headers, body)
        event["httpMethod"] = event["requestContext"]["httpMethod"] = self.command
        app = self._app_object
        app.current_request = Request(event, None)
        view = app.routes[event["requestContext"]["resourcePath"]]["GET"].view_function
        response = view().to_dict(app.api.binary_types)
        headers = {**response["headers"], **response["multiValueHeaders"]}
        self._send_http_response(response["statusCode"], headers, self._handle_binary(response)["body"])

    def _send_http_response_with_body(self, code, headers, body):
        if self.command != "HEAD":
            super()._send_http_response_with_body(code, headers, body)
            return
        # HEAD: the headers of the answer, its Content-Length included, without the body (RFC 9110 9.3.2).
        self.send_response(code)
        self.send_header("Content-Length", str(len(body if isinstance(body, bytes) else body.encode("utf-8"))))
        self.send_header("Content-Type", headers.pop("Content-Type", "application/json"))
        self._send_headers(headers)

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

    server = LocalDevServer(app, config, host, port, handler_cls=RedactingRequestHandler)
    server.port = server.server.server_address[1]      # the port it got, when asked for 0
    return server


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--stage", default="local")
    parser.add_argument("--ready-file", help="written with the pid and port once serving")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        server = make_server(args.host, args.port, args.stage)
    except OSError as error:
        print(f"cannot serve on {args.host}:{args.port}: {error}", file=sys.stderr, flush=True)
        return 2
    from tools.processes import serve

    return serve(server, args.ready_file, server.port)


if __name__ == "__main__":
    sys.exit(main())

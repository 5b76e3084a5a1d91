"""The HTTP glue between Chalice and the logic: parameters, authentication, rendering, errors, access log.

app.py declares each route with Api.route and hands the Api the function that authenticates a request
(chalicelib/identity/auth.py's authenticate: this module knows no credential). It turns requests into Call
objects, answers ApiError as {"error": …} with its status, renders results in the asked responseType,
answers 405 for methods a path doesn't have, and writes one JSON access-log line per request (no
credentials, no query string).

CORS is answered here too, the same locally and on AWS: every answer carries
`Access-Control-Allow-Origin: *`, an `OPTIONS` preflight (with Origin and Access-Control-Request-Method)
is answered 204 with the path's methods and the headers credentials travel in, and any other `OPTIONS`
is a 405 like any method a path lacks. Across origins credentials go in headers only: a request from
another origin is never authenticated by the session cookie, nor given one.
"""
import json
import logging
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from http.cookies import CookieError, SimpleCookie
from typing import Any, Protocol, cast

from chalice import Chalice, Response
from chalice.app import Request

from chalicelib.platform import answers, aws, config, rendering
from chalicelib.platform.errors import (ApiError, BadRequest, Forbidden, MethodNotAllowed, NotFound,
                                        PayloadTooLarge, UnsupportedMediaType)

# The methods every path is routed for (the app answers 405 for those a path lacks, 404 off the routes);
# API Gateway would otherwise answer HEAD and OPTIONS itself.
METHODS = ["GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS"]
# What a preflight allows on a path no route declares: the 404 that follows stays readable.
UNROUTED_METHODS = "DELETE, GET, PATCH, POST, PUT"
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    # What a script of another origin may read besides the simple headers: a job's Location, a 429's or
    # 503's Retry-After, a 405's Allow.
    "Access-Control-Expose-Headers": "Location, Retry-After, Allow",
}
PREFLIGHT_HEADERS = {
    "Access-Control-Allow-Headers": "Authorization, X-API-Key, Content-Type",
    "Access-Control-Max-Age": "7200",   # Chromium's ceiling: one preflight per path and method in 2 hours
}
# Chalice would answer other media types with its own 415 body; accept all and answer ours.
CONTENT_TYPES = ["*/*"]
PARSED_TYPES = ("application/json", "application/x-www-form-urlencoded", "text/plain", "")
MAX_BODY_BYTES = 2 * 1024 * 1024

access_log = logging.getLogger("intellimeter.access")
access_log.setLevel(logging.INFO)


class Caller(Protocol):
    """Who a request comes from, as the Api's authenticate function finds it (chalicelib/identity/auth.py)."""

    @property
    def project_id(self) -> int: ...

    @property
    def user_id(self) -> int | None: ...

    @property
    def scope(self) -> str | None: ...

    @property
    def key_id(self) -> int | None: ...


class JobAnswer(Protocol):
    """An export job's state as GET /file/job answers it (chalicelib/outputs/export_jobs.py JobState)."""

    @property
    def status(self) -> int: ...

    @property
    def body(self) -> dict: ...

    @property
    def retry_after(self) -> int | None: ...


class Call:
    """One request as a handler sees it: merged parameters, the caller, and response extras."""

    def __init__(self, request: Request, params: dict[str, Any], caller: Any,
                 cookies: dict[str, str] | None = None) -> None:
        self.request = request
        self.params = params
        self.caller = caller     # the authenticate function's Caller; None on a route open to anyone
        self.request_cookies = cookies or {}
        self.headers: dict[str, str] = {}
        self.cookies: list[str] = []
        self.status = 200

    @property
    def project_id(self) -> int:
        return self.caller.project_id

    @property
    def user_id(self) -> int:
        """The calling account's id. Only routes an account alone may call (no scopes) ask for it: the Api
        refuses a scoped key there before the route runs."""
        user_id = self.caller.user_id
        if user_id is None:
            raise Forbidden("this route needs an account's credentials, not a scoped key")
        return user_id

    def get(self, name: str, default: Any = None) -> Any:
        """A parameter as sent (str from query/form, any JSON type from a JSON body)."""
        return self.params.get(name, default)

    def values(self, name: str) -> list[Any]:
        """Every value of a parameter: each of a query argument sent more than once (meter=a&meter=b),
        else the one value as get() gives it, else []."""
        query = self.request.query_params
        if query is not None and name in query and name in self.params and self.params[name] == query[name]:
            return list(query.getlist(name))
        return [] if self.params.get(name) is None else [self.params[name]]

    def text(self, name: str, required: bool = False) -> str | None:
        """A text parameter; None when absent (400 when required)."""
        value = self.params.get(name)
        if value is None:
            if required:
                raise BadRequest(f"{name} is required")
            return None
        if not isinstance(value, str):
            raise BadRequest(f"{name} must be text")
        return value

    def redirect(self, link: dict[str, Any]) -> dict[str, Any]:
        """Answer 303 See Other to a download link, with the link in the body for clients that don't follow."""
        self.status = 303
        self.headers["Location"] = link["url"]
        return link

    def file_answer(self, result: dict[str, Any] | JobAnswer) -> dict[str, Any]:
        """303 to a finished file's link, or 202 Accepted with the Location of the job writing it."""
        if isinstance(result, dict):
            return self.redirect(result)
        self.headers["Location"] = f"{self.path_prefix()}/file/job?id={result.body['id']}"
        return self.job_answer(result)

    def path_prefix(self) -> str:
        """What the path the client called has before the route's own: the stage on an execute-api URL
        (`/api`), a custom domain's base path, nothing locally. A Location made with it works as the client
        called (the contract's `/file/job?id=…` under `/api/file` would be the stage-less root: a 403)."""
        context = self.request.context or {}
        path, resource = context.get("path"), context.get("resourcePath")
        if isinstance(path, str) and isinstance(resource, str) and resource and path.endswith(resource):
            return path[:len(path) - len(resource)].rstrip("/")
        return ""

    def job_answer(self, job: JobAnswer) -> dict:
        """An export job's state (export_jobs.JobState): 303 to its file when done, else the status with its
        body, and Retry-After while it runs."""
        if job.status == 303:
            return self.redirect(job.body)
        self.status = job.status
        if job.retry_after is not None:
            self.headers["Retry-After"] = str(job.retry_after)
        return job.body

    def set_session_cookie(self, token: str | None) -> None:
        """Set (or with token None, clear) the session cookie."""
        secure = config.secure_cookies()
        parts = [f"{config.session_cookie_name()}={token or ''}", "Path=/", "HttpOnly", "SameSite=Lax"]
        if secure:
            parts.append("Secure")
        if token is None:
            parts.append("Max-Age=0")
        self.cookies.append("; ".join(parts))


def _merged_params(request: Request) -> dict[str, Any]:
    """Query, then form body, then JSON object body (later sources override earlier ones)."""
    params = dict(request.query_params or {})
    body = cast(bytes, request.raw_body or b"")   # chalice's raw_body is the body's bytes
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the request body is too large: at most {MAX_BODY_BYTES} bytes")
    if not body.strip():
        return params
    params.update(_body_params(request, body))
    if request.method == "GET":  # GET takes query arguments: a body may add scalars, never lists or objects
        for name, value in params.items():
            if isinstance(value, (list, dict)):
                raise BadRequest(f"{str(name)[:40]} must be text or a number, not a JSON {type(value).__name__}")
    return params


def _body_params(request: Request, body: bytes) -> dict[str, Any]:
    """The parameters of a body: a form, or a JSON object (text/plain or no type: JSON too)."""
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type not in PARSED_TYPES:
        raise UnsupportedMediaType(f"a body of type {content_type[:60]} can't be read: send parameters as JSON "
                                   f"(application/json) or a form (application/x-www-form-urlencoded)")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the request body is not UTF-8 text") from None
    if content_type == "application/x-www-form-urlencoded":
        try:
            form = urllib.parse.parse_qs(text, keep_blank_values=True, strict_parsing=False, max_num_fields=1000)
        except ValueError:
            raise BadRequest("the form body has too many fields") from None
        return {k: v[-1] for k, v in form.items()}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise BadRequest(f"the body is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    except (ValueError, RecursionError):  # an integer of over 4300 digits; nesting deeper than the parser goes
        raise BadRequest("the JSON body can't be read: a number too long or nesting too deep") from None
    if not isinstance(data, dict):
        raise BadRequest("the JSON body must be an object of parameters")
    return {k: v for k, v in data.items() if v is not None}  # null is as omitted: it overrides nothing


def _is_preflight(request: Request) -> bool:
    """True for a browser's CORS preflight: OPTIONS with Origin and Access-Control-Request-Method."""
    return "origin" in request.headers and "access-control-request-method" in request.headers


def _netloc(url_or_host: str) -> str:
    """host[:port] in lower case, without the scheme's default port."""
    netloc = url_or_host.strip().lower()
    for default in (":80", ":443"):
        netloc = netloc.removesuffix(default)
    return netloc


def _cross_origin(request: Request) -> bool:
    """True when the request comes from a page of another origin than the API's (its Origin header names
    another host than the one the request was sent to; "null", an opaque origin, is another)."""
    origin = request.headers.get("origin")
    if origin is None:
        return False
    return _netloc(urllib.parse.urlsplit(origin).netloc) != _netloc(request.headers.get("host", ""))


def _cookies(request: Request) -> dict[str, str]:
    jar = SimpleCookie()
    try:
        jar.load(request.headers.get("cookie", ""))
    except CookieError:
        return {}
    return {name: morsel.value for name, morsel in jar.items()}


Handler = Callable[["Call"], Any]   # a route's function: the result to render, or a Response


class Route:
    """How one path and method is served: its handler and who may call it.

    scopes: the scoped keys' scopes (chalicelib/identity/scoped_keys.py) that may call it; none declared, only
    an account (its key or a session). secret: the answer carries a credential, so it is never cached
    (Cache-Control: no-store), and a write is refused before it runs when the responseType is invalid
    (the vendor's "carry out, then 400" would lose the one copy of a new secret).
    """

    def __init__(self, handler: Handler, authenticated: bool = True, scopes: Iterable[str] = (),
                 secret: bool = False) -> None:
        self.handler = handler
        self.authenticated = authenticated
        self.scopes = tuple(scopes)
        self.secret = secret


class Api:
    """Route table of the API: path → method → Route.

    authenticate(headers, cookies) gives the caller of a request (an object with project_id, user_id,
    scope and key_id), or raises Unauthorized.
    """

    def __init__(self, app: Chalice, authenticate: Callable[[Mapping[str, str], dict[str, str]], Caller]) -> None:
        self.app = app
        self.authenticate = authenticate
        self.routes: dict[str, dict[str, Route]] = {}
        self._install_catch_all()

    def route(self, path: str, method: str, authenticated: bool = True, scopes: Iterable[str] = (),
              secret: bool = False) -> Callable[[Handler], Handler]:
        """Declare handler(call) as the path's method; it returns the result to render (or a Response)."""
        def register(handler: Handler) -> Handler:
            if path not in self.routes:
                self.routes[path] = {}
                self._install(path)
            self.routes[path][method] = Route(handler, authenticated, scopes, secret)
            return handler
        return register

    def _install(self, path: str) -> None:
        def view(**_url_params: str) -> Response:
            return self.handle(path, cast(Request, self.app.current_request))
        view.__name__ = "route_" + (path.strip("/").replace("/", "_").replace(".", "_") or "root")
        self.app.route(path, methods=METHODS, content_types=CONTENT_TYPES)(view)

    def _install_catch_all(self) -> None:
        """Any path no route declares answers 404 with the usual error body (API Gateway's own answer
        would be 403 "Missing Authentication Token", which sends a newcomer hunting for a key problem).
        `/{proxy+}` is API Gateway's greedy path variable; it matches everything but `/` itself."""
        for pattern, name in (("/", "unknown_root"), ("/{proxy+}", "unknown_path")):
            def view(**_url_params: str) -> Response:
                return self.handle(None, cast(Request, self.app.current_request))
            view.__name__ = name
            self.app.route(pattern, methods=METHODS, content_types=CONTENT_TYPES)(view)

    def handle(self, path: str | None, request: Request) -> Response:
        """Answer one request: a CORS preflight, or parse, authenticate, call, render; errors as {"error": …}."""
        started = time.perf_counter()
        call = None
        if request.method == "OPTIONS" and _is_preflight(request):
            response = self._preflight(path)
        else:
            response, call = self._call(path, request)
        response.headers.update(CORS_HEADERS)
        _log(request, path, response.status_code, started, call)
        return response

    def _call(self, path: str | None, request: Request) -> tuple[Response, "Call | None"]:
        """The answer of a request to a route (or to no route), and its Call once one was made."""
        call = None
        # The format from the query string already, so errors before the body is read answer in it too.
        query: Mapping[str, str] = request.query_params or {}
        fmt: str | None = rendering.response_type(query.get("responseType")) or "json"
        cross_origin = _cross_origin(request)
        try:
            route = self._route(path, request.method)
            params = _merged_params(request)
            fmt = rendering.response_type(params.get("responseType"))
            cookies = {} if cross_origin else _cookies(request)   # across origins, credentials in headers only
            caller = self.authenticate(request.headers, cookies) if route.authenticated else None
            call = Call(request, params, caller, cookies)
            if caller is not None and caller.scope is not None and caller.scope not in route.scopes:
                raise Forbidden(f"this key's scope ({caller.scope}) may not call {request.method} {path}: "
                                f"use a key of the right scope, or the account's own credentials")
            if fmt is None and route.secret and request.method != "GET":
                raise BadRequest("responseType must be json, xml or yaml: nothing was done (the answer "
                                 "would carry a new secret that could not be shown)")
            response = _answer(route.handler(call), call, fmt, path)
        except Exception as error:  # never a stack trace to the client
            response = _failure(error, fmt, request, path)
        if call and call.cookies and not cross_origin:
            response.headers["Set-Cookie"] = call.cookies[-1]
        declared = self.routes[path].get(request.method) if path is not None and path in self.routes else None
        if declared is not None and declared.secret:
            response.headers["Cache-Control"] = "no-store"
        return response, call

    def _preflight(self, path: str | None) -> Response:
        """204 to a CORS preflight: the path's methods (those of any route off the routes, whose 404 the
        browser may then read) and the headers credentials and bodies travel in."""
        methods = ", ".join(sorted(self.routes[path])) if path is not None else UNROUTED_METHODS
        return Response(body="", status_code=204,
                        headers={"Access-Control-Allow-Methods": methods, **PREFLIGHT_HEADERS})

    def _route(self, path: str | None, method: str) -> Route:
        """The Route serving a method of a path; 404 for a path no route declares, 405 for another method."""
        if path is None:
            raise NotFound("no such route: see GET /openapi.yaml (or /docs in a browser) for the API's routes")
        if method not in self.routes[path]:
            allowed = ", ".join(sorted(self.routes[path]))
            raise MethodNotAllowed(f"{method} is not allowed on {path}: use {allowed}", headers={"Allow": allowed})
        return self.routes[path][method]


def _answer(result: Any, call: Call, fmt: str | None, path: str | None) -> Response:
    """The Response of a route's result in the format asked for (a Response as it is); an invalid
    responseType is a 400 even though the route ran (the vendor's behaviour: a read checked before it is
    built, answers.Bounded, has nothing to carry out and is not built).

    Every answer fits the function (chalicelib/platform/answers.py): a Bounded result is checked before it
    is built, and every rendered answer is measured as Lambda counts it; past the bound, 413."""
    if fmt is None:
        return _error_response(BadRequest("responseType must be json, xml or yaml (the request was carried out)"),
                               "json")
    if isinstance(result, Response):
        return result
    body, media_type = rendering.render(answers.settle(result, fmt), fmt)
    answers.fits(answers.payload_bytes(body), path)
    return Response(body=body, status_code=call.status, headers={"Content-Type": media_type, **call.headers})


def _failure(error: Exception, fmt: str | None, request: Request, path: str | None) -> Response:
    """The answer to an exception: an ApiError as itself, a transient AWS failure as 503 with Retry-After,
    anything else a logged 500 without a stack trace."""
    if isinstance(error, ApiError):
        return _error_response(error, fmt or "json")
    unavailable = aws.unavailable(error)   # a throttled, failing or timed-out AWS call: 503, send again
    if unavailable is not None:
        return _error_response(unavailable, fmt or "json")
    access_log.exception("unhandled error on %s %s", request.method, path)
    return _error_response(ApiError("internal error: the request could not be completed"), "json", status=500)


def _error_response(error: ApiError, fmt: str, status: int | None = None) -> Response:
    body, media_type = rendering.render({"error": error.message}, fmt)
    return Response(body=body, status_code=status or error.status, headers={"Content-Type": media_type, **error.headers})


def _log(request: Request, path: str | None, status: int, started: float, call: Call | None) -> None:
    caller = call.caller if call else None
    fields = {
        "route": path or "(unknown)", "method": request.method, "status": status,
        "latency_ms": round((time.perf_counter() - started) * 1000, 1),
        "project": caller.project_id if caller else None,
        "user": caller.user_id if caller else None,
        "scoped_key": caller.key_id if caller else None,     # the id of a scoped key (/keys), never the key
        "request_id": (request.context or {}).get("requestId"),
    }
    # The message is the JSON line (local logs); the same fields as record attributes are top-level
    # keys of the deployed function's JSON log events (LoggingConfig LogFormat JSON), for Logs Insights.
    access_log.info(json.dumps(fields), extra=fields)

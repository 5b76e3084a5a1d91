"""Webhooks: the URL a rule may name, the signature of what is sent to it, and the POST itself.

A body is signed as Stripe signs its webhooks (integrators' libraries verify it as they are):
`X-Intellimeter-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, the key being the
rule's secret as UTF-8 text. docs/alerts.md shows the check in ten lines of Python.

Where a POST may go: https to any public address; http only to this machine's loopback, and only
where the stage allows it (config.loopback_webhooks: the local stage). The host is resolved once
and the connection made to an address checked here (a name that resolves to a private, link-local or
loopback address is refused, whatever it resolved to when the rule was made), with TLS verified
against the name. Redirects are not followed: an answer other than 2xx is a failure, retried.
"""
import hashlib
import hmac
import http.client
import ipaddress
import socket
import ssl
import urllib.parse
from typing import Any, NamedTuple

from chalicelib.platform import config
from chalicelib.platform.errors import BadRequest

URL_MAX = 2048
CONNECT_SECONDS = 3.0
ANSWER_SECONDS = 5.0         # a receiver has this long to answer (each read), then the attempt fails
USER_AGENT = "Intellimeter-Alerts/1"
SIGNATURE_HEADER = "X-Intellimeter-Signature"
_LOOPBACK_NAMES = ("localhost",)


class Outcome(NamedTuple):
    """How a POST went: delivered (a 2xx), and otherwise why not (the status, or what failed)."""

    delivered: bool
    status: int | None
    error: str | None


def _is_loopback_host(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(value: Any) -> str:
    """The webhook URL of a rule, or BadRequest naming `webhook` and what is wrong with it."""
    if not isinstance(value, str) or not value.strip():
        raise BadRequest("webhook must be an https URL")
    value = value.strip()
    if len(value) > URL_MAX:
        raise BadRequest(f"webhook is too long: at most {URL_MAX} characters")
    if any(ord(ch) < 33 or ord(ch) == 127 for ch in value):
        raise BadRequest("webhook must not contain spaces or control characters")
    parts, host = _parts(value)
    if parts.scheme == "http":
        _check_loopback(host)
    else:
        _check_public(host)
    return value


def _parts(value: str) -> tuple[urllib.parse.SplitResult, str]:
    """The URL's parts and host, or BadRequest when it is no http(s) URL we may call."""
    try:
        parts = urllib.parse.urlsplit(value)
        host, _port = parts.hostname, parts.port
    except ValueError:
        raise BadRequest("webhook is not a URL (its host or port can't be read)") from None
    if parts.scheme not in ("https", "http") or not host:
        raise BadRequest("webhook must be an https URL such as https://example.com/hooks/intellimeter")
    if parts.username is not None or parts.password is not None:
        raise BadRequest("webhook must not carry credentials (user:password@): check the signature instead")
    if parts.fragment:
        raise BadRequest("webhook must not have a #fragment")
    return parts, host


def _check_loopback(host: str) -> None:
    if not _is_loopback_host(host):
        raise BadRequest("webhook must be https: http is allowed only to this machine's loopback "
                         "(127.0.0.1, ::1, localhost), for local development")
    if not config.loopback_webhooks():
        raise BadRequest("webhook: http to the loopback is for the local stack only; a deployed API "
                         "delivers over https to a public address")


def _check_public(host: str) -> None:
    """An address written in the URL must be public (a name is checked at every delivery)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return
    if not address.is_global:
        raise BadRequest("webhook must reach a public address (not a private, loopback or link-local one)")


def shown(url: str) -> str:
    """The URL as a read-only key sees it: scheme and host, the rest left out (a path may be a capability,
    as Slack's webhook URLs are)."""
    parts = urllib.parse.urlsplit(url)
    rest = "/…" if (parts.path not in ("", "/") or parts.query) else ""
    return f"{parts.scheme}://{parts.netloc}{rest}"


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The X-Intellimeter-Signature value of a body sent at `timestamp` (unix seconds)."""
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def _address_allowed(address: str, scheme: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if scheme == "https":
        return ip.is_global and not ip.is_multicast
    return ip.is_loopback and config.loopback_webhooks()


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to a checked address (the Host header keeps the URL's name)."""

    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), CONNECT_SECONDS)
        self.sock.settimeout(self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """An HTTPS connection to a checked address, its certificate verified against the URL's name."""

    def __init__(self, host: str, port: int, address: str, timeout: float):
        self.tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self.tls)
        self.address = address

    def connect(self) -> None:
        raw = socket.create_connection((self.address, self.port), CONNECT_SECONDS)
        raw.settimeout(self.timeout)
        self.sock = self.tls.wrap_socket(raw, server_hostname=self.host)


def post(url: str, body: bytes, headers: dict) -> Outcome:
    """POST body to url with headers (and Content-Type, User-Agent); how it went. Never raises for the
    receiver's doing: a refused address, a timeout, a TLS failure or a non-2xx answer is an Outcome."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        return Outcome(False, None, f"the host name does not resolve ({type(error).__name__})")
    addresses = [info[4][0] for info in found if _address_allowed(str(info[4][0]), parts.scheme)]
    if not addresses:
        return Outcome(False, None, "the host resolves to no address a webhook may reach "
                                    "(private, loopback or link-local)")
    kind = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
    connection = kind(host, port, str(addresses[0]), ANSWER_SECONDS)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request("POST", target, body=body, headers={
            "Content-Type": "application/json", "User-Agent": USER_AGENT, **headers})
        answer = connection.getresponse()
        answer.read(1024)                   # a little of the body, so the connection closes cleanly; never kept
        status = answer.status
    except TimeoutError:
        return Outcome(False, None, f"no answer within {ANSWER_SECONDS:g} s")
    except ssl.SSLError as error:
        return Outcome(False, None, f"TLS failed ({error.reason or type(error).__name__})")
    except (OSError, http.client.HTTPException) as error:
        return Outcome(False, None, f"the connection failed ({type(error).__name__})")
    finally:
        connection.close()
    if 200 <= status < 300:
        return Outcome(True, status, None)
    return Outcome(False, status, f"the receiver answered {status}")

"""Structured logs: one line per event, ``key=value`` pairs, with meter= and bus=.

``event(logger, level, "read_failed", meter="m1", bus="USB0", error=...)`` writes
``ts=... level=WARNING event=read_failed meter=m1 bus=USB0 error="..."``. A filter on
the handler scrubs registered secrets (the API key) from every record, so even an
exception message that happened to carry it cannot leak it.
"""

from __future__ import annotations

import logging
import sys
import time

_SECRETS: set[str] = set()
LOGGER_NAME = "edge_agent"


def register_secret(value: str | None) -> None:
    """Make every log line replace this string with ***."""
    if value and len(value) >= 6:
        _SECRETS.add(str(value))


def scrub(text: str) -> str:
    for s in _SECRETS:
        if s in text:
            text = text.replace(s, "***")
    return text


def _fmt_value(v) -> str:
    s = str(v)
    if s == "" or any(c in s for c in ' "=\n\t'):
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return s


class KVFormatter(logging.Formatter):
    """ts=<UTC ISO> level=<LEVEL> event=<msg> k=v ..."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        parts = [f"ts={ts}", f"level={record.levelname}", f"event={_fmt_value(record.getMessage())}"]
        if record.name != LOGGER_NAME and not record.name.startswith(LOGGER_NAME + "."):
            parts.append(f"logger={record.name}")
        for k, v in (getattr(record, "kv", None) or {}).items():
            if v is not None:
                parts.append(f"{k}={_fmt_value(v)}")
        if record.exc_info:
            parts.append("exc=" + _fmt_value(self.formatException(record.exc_info)))
        return scrub(" ".join(parts))


class ScrubFilter(logging.Filter):
    """Scrub secrets from records before any handler (also foreign ones) formats them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _SECRETS:
            try:
                msg = record.getMessage()
            except Exception:  # noqa: BLE001 - a broken record must still be logged
                msg = str(record.msg)
            record.msg, record.args = scrub(msg), None
            kv = getattr(record, "kv", None)
            if kv:
                record.kv = {k: scrub(str(v)) if v is not None else None for k, v in kv.items()}
        return True


def get(name: str = "") -> logging.Logger:
    return logging.getLogger(LOGGER_NAME + ("." + name if name else ""))


def event(logger: logging.Logger, level: int, name: str, exc_info=None, **kv) -> None:
    """Log one structured event."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"kv": kv}, exc_info=exc_info)


def setup(level: str | int = "INFO", stream=None) -> None:
    """Send the agent's (and pymodbus') logs to stderr as key=value lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(KVFormatter())
    handler.addFilter(ScrubFilter())
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_edge_agent", False):
            root.removeHandler(h)
    handler._edge_agent = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    get().setLevel(level)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # we log read failures ourselves
    logging.getLogger("urllib3").setLevel(logging.WARNING)

"""Bounds on answers: no route answers more than Lambda returns (6 MB) or works longer than API Gateway waits.

Two checks, both answering 413 with the bound and what to ask instead:

- before the work: a route whose answer costs reading and computing per row (GET /consumption, and any
  list a room computes: GET /bill…) returns a Bounded instead of its rows: how many rows, a row at least
  as big as any of them, and how to build them. web.py checks it in the format asked for (check) and
  builds the rows only when they fit: bytes = the payload of an empty answer + rows × what one sample
  row adds (both rendered, so each format is measured as it is written), and seconds = rows × (the
  route's seconds per row + the format's rendering seconds per value × values per row).
- after rendering, every answer of every route (fits): the payload Lambda returns, measured exactly,
  so a list no estimate covered (GET /point, /user, /data… read whole: their items are the answer)
  is a 413 rather than a failed invocation.

The size of an answer is its body's share of the payload Lambda counts: the proxy answer is JSON (the
python3.12 runtime writes it with ensure_ascii=False), where the body is a JSON string: every '"' and
'\\' of the body takes two bytes. The status and headers (a few hundred bytes) fit in the margin.
Rendering costs were measured on the development machine (bench/bench_answer_bounds.py, docs/benchmarks.md
"Answers within Lambda's limits"); Lambda's 1,024 MB function has about 0.6 of a vCPU.
"""
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from chalicelib.platform import rendering
from chalicelib.platform.errors import PayloadTooLarge

log = logging.getLogger("intellimeter.answers")

LAMBDA_PAYLOAD_MAX = 6_000_000   # Lambda's response limit, "6 MB" read as the smaller 6,000,000 bytes
ANSWER_MAX_BYTES = 5_000_000     # what an answer may be: a sixth under the limit for the headers and estimates
WORK_MAX_SECONDS = 10.0          # an answer's rows on the development machine: ~17 s of Lambda's 28 s timeout
# Seconds one value (a dict's field) of a list's rows takes to render, per format: json.dumps, our
# dicttoxml writer, PyYAML's safe dump (documents.yaml_document), measured by bench/bench_answer_bounds.py.
RENDER_SECONDS_PER_VALUE = {"json": 1.5e-6, "xml": 4.5e-6, "yaml": 90e-6}
# A number as long as any float's repr (24 characters): a sample row's values, so its size bounds any row's.
WIDEST_FLOAT = -2.2250738585072014e-308


class Bounded(NamedTuple):
    """An answer checked before it is built: web.py calls check, then build() only when it fits."""

    rows: int                                   # rows the answer will hold
    sample: Mapping[str, Any]                   # a row at least as big as any of them, in every format
    build: Callable[[], Any]                    # the answer (its rows), built once it is known to fit
    instead: str                                # what to ask instead ("{type}": the format asked for)
    seconds_per_row: float = 0.0                # reading and computing a row, besides rendering it


def payload_bytes(body: str) -> int:
    """Bytes a text body takes in the Lambda payload: a JSON string without its quotes, UTF-8."""
    return len(json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")) - 2


def row_cost(sample: Mapping[str, Any], fmt: str) -> tuple[int, int]:
    """(payload bytes of an answer of no row, payload bytes each row like sample adds) in a format."""
    one = payload_bytes(rendering.render([sample], fmt)[0])
    two = payload_bytes(rendering.render([sample, sample], fmt)[0])
    return one - (two - one), two - one


def most_rows(sample: Mapping[str, Any], fmt: str, seconds_per_row: float = 0.0) -> int:
    """The most rows like sample one answer in fmt holds: within ANSWER_MAX_BYTES and WORK_MAX_SECONDS."""
    empty, per_row = row_cost(sample, fmt)
    by_bytes = (ANSWER_MAX_BYTES - empty) // max(1, per_row)
    by_time = int(WORK_MAX_SECONDS / max(1e-9, seconds_per_row + RENDER_SECONDS_PER_VALUE[fmt] * len(sample)))
    return max(0, min(by_bytes, by_time))


def check(answer: Bounded, fmt: str) -> None:
    """PayloadTooLarge (413) naming the bound and answer.instead when the answer's rows don't fit in fmt."""
    if answer.rows == 0:
        return
    limit = most_rows(answer.sample, fmt, answer.seconds_per_row)
    if answer.rows <= limit:
        return
    empty, per_row = row_cost(answer.sample, fmt)
    size = (empty + answer.rows * per_row) / 1e6
    raise PayloadTooLarge(
        f"this answer would hold {answer.rows:,} rows, up to {size:,.1f} MB in {fmt}: one answer holds at most "
        f"{limit:,} rows like these in {fmt} (at most {ANSWER_MAX_BYTES / 1e6:g} MB, as Lambda answers at most "
        f"6 MB, and about {WORK_MAX_SECONDS:g} s of work): {answer.instead.replace('{type}', fmt)}")


def settle(result: Any, fmt: str) -> Any:
    """A route's result, built when it is a Bounded that fits (else the 413 of check)."""
    if isinstance(result, Bounded):
        check(result, fmt)
        return result.build()
    return result


def fits(payload: int, route: str | None) -> None:
    """The last word on every answer: PayloadTooLarge when its body's payload (payload_bytes) is over
    ANSWER_MAX_BYTES, whatever estimated it."""
    if payload <= ANSWER_MAX_BYTES:
        return
    log.warning("answer of %s was %d bytes, over the bound: answered 413", route, payload)
    raise PayloadTooLarge(f"this answer would be {payload / 1e6:,.1f} MB: answers are at most "
                          f"{ANSWER_MAX_BYTES / 1e6:g} MB (Lambda answers at most 6 MB): ask for less")


def listing(rows: Sequence[Mapping[str, Any]], instead: str, whole: Any = None) -> Bounded:
    """A list already read (its items are the answer: meters, users…) as a Bounded: checked before it is
    rendered, with its widest row as the sample. whole: the answer when it is more than the list (GET /status's
    two lists: rows are both, and the sample the widest of both)."""
    sample = max(rows, key=lambda row: sum(_weight(str(value)) for value in row.values()), default={})
    return Bounded(len(rows), sample, lambda: rows if whole is None else whole, instead)


def widest(names: list[str]) -> str:
    """Of names, the one taking the most bytes in any format's answer: a sample row with it is at least as
    big as the row of any other name."""
    return max(names, key=_weight, default="")


_ESCAPED = set('"\\&<>\'')   # characters some format writes as several (&quot; \" …): counted as 6 bytes


def _weight(text: str) -> int:
    """Bytes a text takes at most in an answer, about: UTF-8, escapes as their longest."""
    return len(text.encode("utf-8", "surrogatepass")) + 5 * sum(c in _ESCAPED for c in text)

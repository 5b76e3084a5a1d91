"""Fast writers of the streamed ``/file`` exports (csv, json, xml, yaml), in bounded memory, in time slices.

The reference libraries are far too slow for an export of a meter-year (105,120 rows):
``dicttoxml`` and ``yaml.safe_dump`` take ~20 s each. This module writes the same bytes
(XML: exactly what ``dicttoxml`` writes for the row dicts, with chalicelib/platform/documents.py's elements;
JSON: exactly ``json.dumps``) or an equivalent document (YAML, CSV) at csv-writer speed, and streams
exports in bounded memory. It imports neither dicttoxml nor yaml.
"""

import datetime
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import islice
from numbers import Number
from typing import Any

from chalicelib.platform.documents import XML_HEAD, XML_TAIL, xml_elements

__all__ = ["EXPORT_FORMATS", "FRAMES", "Row", "export_chunks", "record_chunks", "record_frame",
           "record_slice_chunks", "slice_chunks"]

Row = tuple[str, datetime.datetime, float]   # a readings export's row: (MeterParam, local time, value)

#: Export format -> (media type, file extension).
EXPORT_FORMATS = {
    "csv": ("text/csv; charset=utf-8", "csv"),
    "json": ("application/json", "json"),
    "xml": ("application/xml", "xml"),
    "yaml": ("application/yaml", "yaml"),
}

_BLOCK_ROWS = 1000  # rows formatted per step: bounds memory and how far ahead rows are read
_CACHE_MAX = 2048  # entries per memo dict before it is cleared (bounds memory)

# --------------------------------------------------------------------------------------------
# Exports. Each writer turns blocks of rows into str pieces with one f-string per row; the
# per-name text and the date / time-of-day text are memoised, as formatting a datetime costs
# more than looking its parts up.


class _Memo(dict[Any, str]):
    """Dict that fills itself from ``make(key)``; caches only str and date/time keys, bounded."""

    __slots__ = ("make",)

    def __init__(self, make: Callable[[Any], str]) -> None:
        super().__init__()
        self.make = make

    def __missing__(self, key: Any) -> str:
        value = self.make(key)
        if type(key) in (str, datetime.date, datetime.time):
            if len(self) >= _CACHE_MAX:
                self.clear()
            self[key] = value
        return value


def _clock_memos() -> tuple[_Memo, _Memo]:
    """Memos date -> 'YYYY-MM-DD' and time -> 'HH:MM:SS' (sub-seconds dropped)."""
    return _Memo(datetime.date.isoformat), _Memo(lambda t: t.isoformat("seconds"))


def _blocks(rows: Iterable[Any]) -> Iterator[list[Any]]:
    """The rows in lists of at most _BLOCK_ROWS, read lazily."""
    it = iter(rows)
    while True:
        block = list(islice(it, _BLOCK_ROWS))
        if not block:
            return
        yield block
        if len(block) < _BLOCK_ROWS:
            return


def _xml_rows(rows: Iterable[Row]) -> Iterator[str]:
    day, tod = _clock_memos()
    names = _Memo(lambda n: xml_elements({"MeterParam": n}))

    def slow(n: str, t: datetime.datetime, v: Any) -> str:
        return '<item type="dict">%s%s</item>' % (names[n], xml_elements(
            {"TimeStamping": "%sT%s" % (day[t.date()], tod[t.time()]), "value": v}))

    for block in _blocks(rows):
        yield "".join([
            f'<item type="dict">{names[n]}<TimeStamping type="str">{day[t.date()]}T'
            f'{tod[t.time()]}</TimeStamping><value type="float">{v!r}</value></item>'
            if type(v) is float else slow(n, t, v)
            for n, t, v in block])


def _json_rows(rows: Iterable[Row]) -> Iterator[str]:
    """Each row preceded by ', ' (the frame drops the file's first separator)."""
    day, tod = _clock_memos()
    names = _Memo(json.dumps)

    def slow(n: str, t: datetime.datetime, v: Any) -> str:
        stamp = "%s %s" % (day[t.date()], tod[t.time()])
        return json.dumps({"MeterParam": n, "TimeStamping": stamp, "value": v})

    for block in _blocks(rows):
        yield "".join([
            f', {{"MeterParam": {names[n]}, "TimeStamping": "{day[t.date()]} {tod[t.time()]}", '
            f'"value": {v!r}}}'
            if (type(v) is float and v - v == 0.0) or type(v) is int else ", " + slow(n, t, v)
            for n, t, v in block])


# YAML double-quoted scalars: escape '\', '"' and everything PyYAML's reader rejects or treats
# as a line break or BOM (C0, DEL, C1, U+2028/9, U+FEFF, surrogates, U+FFFE/F).
_YAML_ESCAPE = re.compile('[\\\\"\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff\ud800-\udfff\ufffe\uffff]')
_YAML_SHORT = {"\\": "\\\\", '"': '\\"', "\t": "\\t", "\n": "\\n", "\r": "\\r", "\x00": "\\0"}


def _yaml_escape_char(m: re.Match[str]) -> str:
    c = m.group()
    if c in _YAML_SHORT:
        return _YAML_SHORT[c]
    o = ord(c)
    return "\\x%02X" % o if o < 0x100 else "\\u%04X" % o


def _yaml_scalar(v: Any) -> str:
    """A YAML scalar that PyYAML's safe_load reads back as v (str, float, int, bool, None)."""
    if type(v) is str:
        return '"%s"' % _YAML_ESCAPE.sub(_yaml_escape_char, v)
    if v is None:
        return "null"
    if type(v) is bool:
        return "true" if v else "false"
    if isinstance(v, float):
        if v != v:
            return ".nan"
        if v in (float("inf"), float("-inf")):
            return ".inf" if v > 0 else "-.inf"
        r = repr(v)  # YAML 1.1 floats need a '.' in the mantissa: 1e+20 -> 1.0e+20
        return r.replace("e", ".0e", 1) if "e" in r and "." not in r else r
    if isinstance(v, int):
        return str(int(v))
    if isinstance(v, Number):  # e.g. Decimal: as the float it stands for
        return _yaml_scalar(float(v))  # type: ignore[arg-type]  # numbers.Number declares no __float__
    return _yaml_scalar(str(v))


def _yaml_rows(rows: Iterable[Row]) -> Iterator[str]:
    day, tod = _clock_memos()
    names, yv = _Memo(_yaml_scalar), _yaml_scalar
    for block in _blocks(rows):
        # a float in [1e-4, 1e16) or zero prints without exponent: plain repr is YAML already
        yield "".join([
            f"- MeterParam: {names[n]}\n  TimeStamping: '{day[t.date()]} {tod[t.time()]}'\n"
            f"  value: {v if type(v) is float and (1e-4 <= v < 1e16 or v == 0.0) else yv(v)}\n"
            for n, t, v in block])


_CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _csv_quote(text: str) -> str:
    """One cell as csv.writer (excel dialect) writes it; lone surrogates become U+FFFD."""
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf).writerow((_SURROGATE.sub("\ufffd", text), "x"))
    return buf.getvalue()[:-4]  # drop ',x\r\n'


def _csv_cell(n: Any) -> str:
    """A name cell, guarded against formula injection: a leading = + - @ tab or CR gets a '."""
    text = "" if n is None else repr(n) if isinstance(n, float) else str(n)
    return _csv_quote("'" + text if text.startswith(_CSV_FORMULA_START) else text)


def _csv_rows(rows: Iterable[Row]) -> Iterator[str]:
    day, tod = _clock_memos()
    names = _Memo(_csv_cell)

    def slow(n: str, t: datetime.datetime, v: Any) -> str:
        value = "" if v is None else repr(v) if isinstance(v, float) else str(v)
        return "%s,%s %s,%s\r\n" % (names[n], day[t.date()], tod[t.time()], _csv_quote(value))

    for block in _blocks(rows):
        yield "".join([
            f"{names[n]},{day[t.date()]} {tod[t.time()]},{v!r}\r\n"
            if type(v) is float or type(v) is int else slow(n, t, v)
            for n, t, v in block])


_ROWS = {"csv": _csv_rows, "json": _json_rows, "xml": _xml_rows, "yaml": _yaml_rows}
_CSV_HEAD = "MeterParam,TimeStamping,value\r\n"


class Frame:
    """What surrounds an export's rows: the file is `empty` when there is no row, else head + rows + tail,
    where rows is the concatenation of the row texts with its first `lead` characters dropped (JSON
    writes each row after a ', ' separator). So rows written in time slices join by concatenation."""

    __slots__ = ("head", "lead", "tail", "empty")

    def __init__(self, head: str, lead: int, tail: str, empty: str) -> None:
        self.head, self.lead, self.tail, self.empty = head, lead, tail, empty


FRAMES = {
    "csv": Frame(_CSV_HEAD, 0, "", _CSV_HEAD),
    "json": Frame("[", 2, "]", "[]"),
    "xml": Frame(XML_HEAD, 0, XML_TAIL, XML_HEAD + XML_TAIL),
    "yaml": Frame("", 0, "", "[]\n"),
}


def _slice(fmt: str, rows: Iterable[Row], first: bool, last: bool) -> Iterator[str]:
    """The str pieces of a slice of the file: the head when first (rows' lead dropped), the tail when last.

    A slice that is both is the whole file (the frame's empty text when there is no row).
    """
    return _framed(FRAMES[fmt], _ROWS[fmt](rows), first, last)


def _framed(frame: Frame, texts: Iterable[str], first: bool, last: bool) -> Iterator[str]:
    """_slice's pieces for any frame and row texts (readings or records)."""
    started = False
    for text in texts:
        if first and not started:
            text = frame.head + text[frame.lead:]
        started = True
        yield text
    if first and last and not started:
        yield frame.empty
        return
    if first and not started:
        yield frame.head
    if last:
        yield frame.tail


def _chunked(pieces: Iterable[str], size: int) -> Iterator[bytes]:
    """Re-cut a stream of str pieces into UTF-8 chunks of exactly size bytes (the last shorter)."""
    parts: list[bytes] = []
    held = 0
    for piece in pieces:
        data = piece.encode()
        parts.append(data)
        held += len(data)
        if held >= size:
            data = b"".join(parts)
            parts.clear()  # frees the pieces before the chunks are cut (peak ~ 2 chunks)
            cut = held - held % size
            for i in range(0, cut, size):
                yield data[i:i + size]
            if cut < held:
                parts.append(data[cut:])
            held -= cut
    if held:
        yield b"".join(parts)


def export_chunks(fmt: str, rows: Iterable[Row],
                  chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
    """Stream an export of readings as UTF-8 chunks (e.g. S3 multipart parts).

    ``rows`` are (MeterParam, local naive datetime, value), read lazily a block at a time, so
    memory does not grow with the row count. Every chunk but the last is exactly
    ``chunk_bytes`` long (it may end inside a multi-byte character: join before decoding).
    TimeStamping is 'YYYY-MM-DD HH:MM:SS' (csv, json, yaml) or 'YYYY-MM-DDTHH:MM:SS' (xml),
    sub-seconds dropped. Output per ``fmt``:

    - xml: byte-identical to dicttoxml of the row dicts (forbidden characters -> U+FFFD);
    - json: byte-identical to ``json.dumps`` of the row dicts;
    - yaml: ``yaml.safe_load`` gives back the row dicts (names double-quoted and escaped);
    - csv: excel dialect as csv.writer writes it, header ``MeterParam,TimeStamping,value``;
      values as ``repr`` (what csv.writer writes: 28540.24, 1e+20); name cells starting with
      = + - @ tab or CR get a ' prefix (formula injection).
    """
    if fmt not in _ROWS:
        raise ValueError("unknown export format %r (use one of %s)" % (fmt, ", ".join(_ROWS)))
    if not isinstance(chunk_bytes, int) or chunk_bytes < 1:
        raise ValueError("chunk_bytes must be a positive int")
    return _chunked(_slice(fmt, rows, True, True), chunk_bytes)


def slice_chunks(fmt: str, rows: Iterable[Row], first: bool, last: bool,
                 chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
    """One time slice of an export as UTF-8 chunks: the frame's head if first, its tail if last.

    When some slice has rows, the export is the slices' bytes in time order, where a slice other
    than the first that is the first to have rows drops its first FRAMES[fmt].lead bytes (ASCII);
    when none has, it is FRAMES[fmt].empty. Byte for byte what export_chunks writes for all rows.
    """
    if fmt not in _ROWS:
        raise ValueError("unknown export format %r (use one of %s)" % (fmt, ", ".join(_ROWS)))
    return _chunked(_slice(fmt, rows, first, last), chunk_bytes)


# --------------------------------------------------------------------------------------------
# Exports of records (e.g. GET /file?period=…: consumption rows): dicts of str, float, int or None.


def _record_csv_value(v: Any) -> str:
    if v is None:
        return ""
    if type(v) is str:
        return _csv_cell(v)
    return repr(v) if isinstance(v, float) else str(v)


def _record_texts(fmt: str, fields: tuple[str, ...], records: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """The text of each block of records (json: each record after ', ', as the frame expects)."""
    for block in _blocks(records):
        if fmt == "csv":
            yield "".join([",".join([_record_csv_value(r[f]) for f in fields]) + "\r\n" for r in block])
        elif fmt == "json":
            yield "".join([", " + json.dumps({f: r[f] for f in fields}) for r in block])
        elif fmt == "xml":
            yield "".join(['<item type="dict">%s</item>' % xml_elements({f: r[f] for f in fields}) for r in block])
        else:
            yield "".join(["".join(("- " if i == 0 else "  ") + f"{f}: {_yaml_scalar(r[f])}\n"
                                   for i, f in enumerate(fields)) for r in block])


def record_frame(fmt: str, fields: Iterable[str], bom: bool = False) -> Frame:
    """The Frame of an export of records: CSV's head is its header line (after a UTF-8 byte order mark with
    bom, which Excel needs to read UTF-8), the others' as for readings."""
    if fmt == "csv":
        head = ("\ufeff" if bom else "") + ",".join(fields) + "\r\n"
        return Frame(head, 0, "", head)
    return FRAMES[fmt]


def record_chunks(fmt: str, fields: Iterable[str], records: Iterable[Mapping[str, Any]],
                  chunk_bytes: int = 1 << 20, bom: bool = False) -> Iterator[bytes]:
    """Stream an export of records (dicts with the keys ``fields``) as UTF-8 chunks, like export_chunks.

    csv: header ``fields`` (after a byte order mark with bom), None as an empty cell, text cells guarded
    against formulas; json: ``json.dumps`` of the list; xml: dicttoxml's shape; yaml: ``yaml.safe_load``
    gives back the list.
    """
    return record_slice_chunks(fmt, fields, records, True, True, chunk_bytes, bom)


def record_slice_chunks(fmt: str, fields: Iterable[str], records: Iterable[Mapping[str, Any]], first: bool,
                        last: bool, chunk_bytes: int = 1 << 20, bom: bool = False) -> Iterator[bytes]:
    """One slice of an export of records (an export job's part), joined as slice_chunks' are, with
    record_frame(fmt, fields, bom): byte for byte what record_chunks writes for all the records."""
    if fmt not in _ROWS:
        raise ValueError("unknown export format %r (use one of %s)" % (fmt, ", ".join(_ROWS)))
    names = tuple(fields)
    return _chunked(_framed(record_frame(fmt, names, bom), _record_texts(fmt, names, records), first, last),
                    chunk_bytes)

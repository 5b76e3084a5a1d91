"""Fast writers for the API's XML and YAML responses and the streamed ``/file`` exports: all the XML and YAML text
the API writes comes from here.

The reference libraries are far too slow for an export of a meter-year (105,120 rows):
``dicttoxml`` and ``yaml.safe_dump`` take ~20 s each. This module writes the same bytes
(XML: exactly what ``dicttoxml(obj, custom_root='Response', attr_type=True)`` writes; JSON:
exactly ``json.dumps``) or an equivalent document (YAML, CSV) at csv-writer speed, and streams
exports in bounded memory. It imports neither dicttoxml nor yaml at import (Lambda cold start):
API responses' YAML (``yaml_document``, PyYAML's safe dump) imports yaml when first asked.
"""

import datetime
import json
import re
from collections.abc import Iterable, Iterator
from itertools import islice
from numbers import Number

__all__ = ["EXPORT_FORMATS", "FRAMES", "export_chunks", "slice_chunks", "xml_document", "yaml_document"]

#: Export format -> (media type, file extension).
EXPORT_FORMATS = {
    "csv": ("text/csv; charset=utf-8", "csv"),
    "json": ("application/json", "json"),
    "xml": ("application/xml", "xml"),
    "yaml": ("application/yaml", "yaml"),
}

_XML_HEAD = '<?xml version="1.0" encoding="UTF-8" ?><Response>'
_XML_TAIL = "</Response>"
_BLOCK_ROWS = 1000  # rows formatted per step: bounds memory and how far ahead rows are read
_CACHE_MAX = 2048  # entries per memo dict before it is cleared (bounds memory)

# --------------------------------------------------------------------------------------------
# XML: a faithful port of dicttoxml 1.7.16 (ids=False, attr_type=True, item_func -> 'item'),
# minus its per-call logging and per-key XML parsing, which make it slow.

# Characters XML 1.0 forbids: C0 controls but \t \n \r, lone surrogates, U+FFFE, U+FFFF.
_XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# ASCII names that certainly parse as an element name (no ':' so namespaces don't matter).
_SIMPLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")
_name_memo: dict = {}


def _xml_text(s: str) -> str:
    """Escape like dicttoxml's escape_xml, after replacing forbidden characters by U+FFFD."""
    if _XML_FORBIDDEN.search(s):
        s = _XML_FORBIDDEN.sub("\ufffd", s)
    return (s.replace("&", "&amp;").replace('"', "&quot;").replace("'", "&apos;")
            .replace("<", "&lt;").replace(">", "&gt;"))


def _name_parses(key) -> bool:
    """dicttoxml's key_is_valid_xml: does ``<key>foo</key>`` parse (minidom, namespaces on)?"""
    if type(key) is str and _SIMPLE_NAME.match(key):
        return True
    from xml.dom.minidom import parseString  # rare path: imported only when needed

    try:
        parseString('<?xml version="1.0" encoding="UTF-8" ?><%s>foo</%s>' % (key, key))
        return True
    except Exception:
        return False


def _fix_name(key):
    """dicttoxml's make_valid_xml_name: (element name, value of a name="" attribute or None)."""
    if type(key) is str:
        hit = _name_memo.get(key)
        if hit is not None:
            return hit
        raw, key = key, _xml_text(key)
    else:
        raw = None
    if _name_parses(key):
        out = key, None
    elif str(key).isdigit():
        out = "n%s" % key, None
    else:
        try:
            out = "n%s" % float(str(key)), None
        except ValueError:
            if _name_parses(key.replace(" ", "_")):
                out = key.replace(" ", "_"), None
            else:
                out = "key", key
    if raw is not None:
        if len(_name_memo) >= _CACHE_MAX:
            _name_memo.clear()
        _name_memo[raw] = out
    return out


def _xml_type(val) -> str:
    """dicttoxml's get_xml_type."""
    name = type(val).__name__
    if name == "NoneType":
        return "null"
    if name in ("bool", "str", "int", "float"):
        return name
    if isinstance(val, Number):
        return "number"
    if isinstance(val, dict):
        return "dict"
    if isinstance(val, Iterable):
        return "list"
    return name


def _open_tag(key, name, typ) -> str:
    if name is None:
        return '<%s type="%s">' % (key, typ)
    return '<%s name="%s" type="%s">' % (key, name, typ)


def _leaf(key, name, val, kind) -> str:
    """convert_kv / convert_bool / convert_none: they fix the (already fixed) name once more."""
    key, name2 = _fix_name(key)
    if name2 is not None:
        name = name2
    if kind == "bool":
        text = str(val).lower()
    elif kind == "none":
        text = ""
    else:
        text = _xml_text(val) if type(val) is str else "%s" % (val,)
    return "%s%s</%s>" % (_open_tag(key, name, _xml_type(val)), text, key)


def _xml_dict(obj) -> str:
    out = []
    for key, val in obj.items():
        key, name = _fix_name(key)
        if type(val) is bool:
            out.append(_leaf(key, name, val, "bool"))
        elif isinstance(val, Number) or type(val) is str:
            out.append(_leaf(key, name, val, "kv"))
        elif hasattr(val, "isoformat"):
            out.append(_leaf(key, name, val.isoformat(), "kv"))
        elif isinstance(val, dict):
            out.append("%s%s</%s>" % (_open_tag(key, name, "dict"), _xml_dict(val), key))
        elif isinstance(val, Iterable):
            out.append("%s%s</%s>" % (_open_tag(key, name, "list"), _xml_list(val), key))
        elif val is None:
            out.append(_leaf(key, name, val, "none"))
        else:
            raise TypeError("Unsupported data type: %s (%s)" % (val, type(val).__name__))
    return "".join(out)


def _xml_list(items) -> str:
    out = []
    for item in items:
        if isinstance(item, Number) or type(item) is str:  # bool too: <item type="bool">True
            out.append(_leaf("item", None, item, "kv"))
        elif hasattr(item, "isoformat"):
            out.append(_leaf("item", None, item.isoformat(), "kv"))
        elif isinstance(item, dict):
            out.append('<item type="dict">%s</item>' % _xml_dict(item))
        elif isinstance(item, Iterable):
            out.append('<item type="list">%s</item>' % _xml_list(item))
        elif item is None:
            out.append(_leaf("item", None, None, "none"))
        else:
            raise TypeError("Unsupported data type: %s (%s)" % (item, type(item).__name__))
    return "".join(out)


def _xml_body(obj) -> str:
    """dicttoxml's convert() for the root's content."""
    if type(obj) is bool:
        return _leaf("item", None, obj, "bool")
    if obj is None:
        return _leaf("item", None, None, "none")
    if isinstance(obj, Number) or type(obj) is str:
        return _leaf("item", None, obj, "kv")
    if hasattr(obj, "isoformat"):
        return _leaf("item", None, obj.isoformat(), "kv")
    if isinstance(obj, dict):
        return _xml_dict(obj)
    if isinstance(obj, Iterable):
        return _xml_list(obj)
    raise TypeError("Unsupported data type: %s (%s)" % (obj, type(obj).__name__))


def xml_document(obj) -> str:
    """The vendor's XML for a response object.

    Byte-identical to ``dicttoxml(obj, custom_root='Response', attr_type=True).decode()`` when
    every string holds only valid XML characters; forbidden ones (C0 controls but tab/LF/CR,
    lone surrogates, U+FFFE/U+FFFF) become U+FFFD so a strict parser accepts the document.
    (dicttoxml quirks are kept, e.g. a numeric-looking key of a nested dict such as '1e20'.)
    """
    return "%s%s%s" % (_XML_HEAD, _xml_body(obj), _XML_TAIL)


# --------------------------------------------------------------------------------------------
# Exports. Each writer turns blocks of rows into str pieces with one f-string per row; the
# per-name text and the date / time-of-day text are memoised, as formatting a datetime costs
# more than looking its parts up.


class _Memo(dict):
    """Dict that fills itself from ``make(key)``; caches only str and date/time keys, bounded."""

    __slots__ = ("make",)

    def __init__(self, make):
        super().__init__()
        self.make = make

    def __missing__(self, key):
        value = self.make(key)
        if type(key) in (str, datetime.date, datetime.time):
            if len(self) >= _CACHE_MAX:
                self.clear()
            self[key] = value
        return value


def _clock_memos():
    """Memos date -> 'YYYY-MM-DD' and time -> 'HH:MM:SS' (sub-seconds dropped)."""
    return _Memo(datetime.date.isoformat), _Memo(lambda t: t.isoformat("seconds"))


def _blocks(rows):
    """The rows in lists of at most _BLOCK_ROWS, read lazily."""
    it = iter(rows)
    while True:
        block = list(islice(it, _BLOCK_ROWS))
        if not block:
            return
        yield block
        if len(block) < _BLOCK_ROWS:
            return


def _xml_rows(rows):
    day, tod = _clock_memos()
    names = _Memo(lambda n: _xml_dict({"MeterParam": n}))

    def slow(n, t, v):
        return '<item type="dict">%s%s</item>' % (names[n], _xml_dict(
            {"TimeStamping": "%sT%s" % (day[t.date()], tod[t.time()]), "value": v}))

    for block in _blocks(rows):
        yield "".join([
            f'<item type="dict">{names[n]}<TimeStamping type="str">{day[t.date()]}T'
            f'{tod[t.time()]}</TimeStamping><value type="float">{v!r}</value></item>'
            if type(v) is float else slow(n, t, v)
            for n, t, v in block])


def _json_rows(rows):
    """Each row preceded by ', ' (the frame drops the file's first separator)."""
    day, tod = _clock_memos()
    names = _Memo(json.dumps)

    def slow(n, t, v):
        stamp = "%s %s" % (day[t.date()], tod[t.time()])
        return json.dumps({"MeterParam": n, "TimeStamping": stamp, "value": v})

    for block in _blocks(rows):
        yield "".join([
            f', {{"MeterParam": {names[n]}, "TimeStamping": "{day[t.date()]} {tod[t.time()]}", '
            f'"value": {v!r}}}'
            if (type(v) is float and v - v == 0.0) or type(v) is int else ", " + slow(n, t, v)
            for n, t, v in block])


# --------------------------------------------------------------------------------------------
# YAML: every YAML text the API writes comes from here. Responses (yaml_document) are PyYAML's
# safe dump; exports (below) write the equivalent document directly, at csv-writer speed.

# Unicode line breaks (NEL, LS, PS) that a YAML reader folds when they stand raw inside quotes.
_YAML_FOLDED = ("\x85", "\u2028", "\u2029")
_dumper = None


def _yaml_dumper():
    """PyYAML's safe dumper, but strings holding a Unicode line break (NEL, LS, PS) are double-quoted.

    safe_dump writes those characters raw inside quotes, where a YAML reader folds them: the
    value read back would differ from the one stored.
    """
    global _dumper
    if _dumper is None:
        import yaml

        class SafeDumper(yaml.SafeDumper):
            pass

        def represent_str(dumper, value):
            style = '"' if any(c in value for c in _YAML_FOLDED) else None
            return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

        SafeDumper.add_representer(str, represent_str)
        _dumper = SafeDumper
    return _dumper


def yaml_document(obj) -> str:
    """A response object as YAML: ``yaml.safe_dump`` in the object's key order, Unicode kept, and any
    string holding NEL, LS or PS double-quoted so ``yaml.safe_load`` gives back exactly obj.
    PyYAML is imported on first use (Lambda cold start)."""
    import yaml

    return yaml.dump(obj, Dumper=_yaml_dumper(), sort_keys=False, allow_unicode=True)


# YAML double-quoted scalars: escape '\', '"' and everything PyYAML's reader rejects or treats
# as a line break or BOM (C0, DEL, C1, U+2028/9, U+FEFF, surrogates, U+FFFE/F).
_YAML_ESCAPE = re.compile('[\\\\"\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff\ud800-\udfff\ufffe\uffff]')
_YAML_SHORT = {"\\": "\\\\", '"': '\\"', "\t": "\\t", "\n": "\\n", "\r": "\\r", "\x00": "\\0"}


def _yaml_escape_char(m) -> str:
    c = m.group()
    if c in _YAML_SHORT:
        return _YAML_SHORT[c]
    o = ord(c)
    return "\\x%02X" % o if o < 0x100 else "\\u%04X" % o


def _yaml_scalar(v) -> str:
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


def _yaml_rows(rows):
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


def _csv_cell(n) -> str:
    """A name cell, guarded against formula injection: a leading = + - @ tab or CR gets a '."""
    text = "" if n is None else repr(n) if isinstance(n, float) else str(n)
    return _csv_quote("'" + text if text.startswith(_CSV_FORMULA_START) else text)


def _csv_rows(rows):
    day, tod = _clock_memos()
    names = _Memo(_csv_cell)

    def slow(n, t, v):
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

    def __init__(self, head, lead, tail, empty):
        self.head, self.lead, self.tail, self.empty = head, lead, tail, empty


FRAMES = {
    "csv": Frame(_CSV_HEAD, 0, "", _CSV_HEAD),
    "json": Frame("[", 2, "]", "[]"),
    "xml": Frame(_XML_HEAD, 0, _XML_TAIL, _XML_HEAD + _XML_TAIL),
    "yaml": Frame("", 0, "", "[]\n"),
}


def _slice(fmt, rows, first, last):
    """The str pieces of a slice of the file: the head when first (rows' lead dropped), the tail when last.

    A slice that is both is the whole file (the frame's empty text when there is no row).
    """
    frame = FRAMES[fmt]
    started = False
    for text in _ROWS[fmt](rows):
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


def _chunked(pieces, size):
    """Re-cut a stream of str pieces into UTF-8 chunks of exactly size bytes (the last shorter)."""
    parts, held = [], 0
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


def export_chunks(fmt: str, rows: Iterable[tuple[str, datetime.datetime, float]],
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


def slice_chunks(fmt: str, rows: Iterable[tuple[str, datetime.datetime, float]], first: bool, last: bool,
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


def _record_csv_value(v) -> str:
    if v is None:
        return ""
    if type(v) is str:
        return _csv_cell(v)
    return repr(v) if isinstance(v, float) else str(v)


def _record_pieces(fmt, fields, records):
    if fmt == "csv":
        yield ",".join(fields) + "\r\n"
        for block in _blocks(records):
            yield "".join([",".join([_record_csv_value(r[f]) for f in fields]) + "\r\n" for r in block])
    elif fmt == "json":
        sep = "["
        for block in _blocks(records):
            yield sep + ", ".join([json.dumps({f: r[f] for f in fields}) for r in block])
            sep = ", "
        yield "[]" if sep == "[" else "]"
    elif fmt == "xml":
        yield _XML_HEAD
        for block in _blocks(records):
            yield "".join(['<item type="dict">%s</item>' % _xml_dict({f: r[f] for f in fields}) for r in block])
        yield _XML_TAIL
    else:
        empty = True
        for block in _blocks(records):
            empty = False
            yield "".join(["".join(("- " if i == 0 else "  ") + f"{f}: {_yaml_scalar(r[f])}\n"
                                   for i, f in enumerate(fields)) for r in block])
        if empty:
            yield "[]\n"


def record_chunks(fmt: str, fields, records, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
    """Stream an export of records (dicts with the keys ``fields``) as UTF-8 chunks, like export_chunks.

    csv: header ``fields``, None as an empty cell, text cells guarded against formulas; json:
    ``json.dumps`` of the list; xml: dicttoxml's shape; yaml: ``yaml.safe_load`` gives back the list.
    """
    if fmt not in _ROWS:
        raise ValueError("unknown export format %r (use one of %s)" % (fmt, ", ".join(_ROWS)))
    return _chunked(_record_pieces(fmt, tuple(fields), records), chunk_bytes)

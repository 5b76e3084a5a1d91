"""chalicelib.platform.documents and chalicelib.outputs.export_writers against the reference libraries (dicttoxml, json, yaml, csv)."""

import csv
import datetime as dt
import io
import itertools
import json
import logging
import random
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from dicttoxml import dicttoxml, key_is_valid_xml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from chalicelib.outputs import export_writers  # noqa: E402
from chalicelib.platform import documents  # noqa: E402
from chalicelib.platform.documents import xml_document  # noqa: E402
from chalicelib.outputs.export_writers import EXPORT_FORMATS, export_chunks  # noqa: E402

logging.getLogger("dicttoxml").setLevel(logging.WARNING)

FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
FORMATS = sorted(EXPORT_FORMATS)


def ref_xml(obj):
    return dicttoxml(obj, custom_root="Response", attr_type=True).decode()


def clean(s):
    return FORBIDDEN.sub("\ufffd", s)


def export(fmt, rows, **kw):
    return b"".join(export_chunks(fmt, rows, **kw))


# ---------------------------------------------------------------------------- xml_document

CONTRACT_OBJECTS = [
    {},
    [],
    {"uuid": 1, "username": "test"},
    {"uuid": 1, "project": 1, "username": "test", "email": "test@example.com",
     "joined": "2019-10-29 16:07:17", "project_name": "myProject"},
    {"key": "f27a4f7186-d4a6635fe7-992d888955-284e0b037c"},
    [{"MeterParam": "a<&\"'b", "TimeStamping": "2019-10-30T13:15:00", "value": 28540.24}],
    [{"MeterParam": "meter1", "TimeStamping": "2019-10-30T13:15:00", "value": 28540.24},
     {"MeterParam": "meter2", "TimeStamping": "2019-10-30T13:15:00", "value": 0.0}],
    {"accepted": 998, "duplicates": 2, "rejected": [{"index": 5, "error": "unknown meter"}]},
    {"error": "responseType must be json, xml or yaml"},
    {"url": "https://example.com/x?a=1&b=2", "expires": "2019-10-30 13:15:00"},
]

ODD_OBJECTS = [
    {"i": 3, "f": 1.5, "big": 10**30, "e": 1e20, "tiny": 1e-7, "neg": -0.0, "nan": float("nan"),
     "s": "", "t": True, "fa": False, "n": None, "l": [], "d": {}, "u": "é中文😀"},
    {"nested": {"a": [1, [2, [3, {"b": None}]], {"c": [True, False, None, "x", 1.0]}]}},
    [1.5, True, None, "a<", [1], {"k": "v"}, (1, 2), dt.datetime(2020, 1, 2, 3, 4, 5)],
    {"a b": 1, "1": 2, "12": {"x": 1}, "1.5": [], "-1": None, "1e20": 1, "1e20x": True, "": "",
     "a&b": "c", "é": 1, "a:b": 2, "xml:lang": 3, "xmlns": 4, "a ": 5, "2 x": {}, "x y z": [1]},
    {3: "int key", None: "none key", 1.5: "float key", True: "bool key"},
    "just a string", None, True, False, 42, 2.5, [[]], [{}],
    {"when": dt.date(2020, 1, 2), "ts": dt.datetime(2020, 1, 2, 3, 4, 5, 6)},
]


@pytest.mark.parametrize("obj", CONTRACT_OBJECTS + ODD_OBJECTS, ids=repr)
def test_xml_document_matches_dicttoxml(obj):
    assert xml_document(obj) == ref_xml(obj)


def test_xml_document_contract_example_exact():
    row = {"MeterParam": "a<&\"'b", "TimeStamping": "2019-10-30T13:15:00", "value": 28540.24}
    assert xml_document([row]) == (
        '<?xml version="1.0" encoding="UTF-8" ?><Response><item type="dict">'
        '<MeterParam type="str">a&lt;&amp;&quot;&apos;b</MeterParam>'
        '<TimeStamping type="str">2019-10-30T13:15:00</TimeStamping>'
        '<value type="float">28540.24</value></item></Response>')
    assert xml_document({}) == '<?xml version="1.0" encoding="UTF-8" ?><Response></Response>'


def random_obj(rng, depth=0):
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return rng.randint(-10**6, 10**6)
    if kind == 1:
        return rng.uniform(-1e6, 1e6)
    if kind == 2:
        return nasty_name(rng)
    if kind == 3:
        return rng.choice([True, False])
    if kind == 4:
        return None
    if kind == 5:
        return rng.choice([1e20, 1e-7, 5.0, 0.0, 10**25])
    if kind == 6:
        return [random_obj(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = [rng.choice(["MeterParam", "value", "a b", "7", "x-y", "é", "", "k&", "Name_1", "1.5"])
            for _ in range(rng.randrange(5))]
    return {k: random_obj(rng, depth + 1) for k in keys}


def test_xml_document_random_objects():
    rng = random.Random(1234)
    for _ in range(300):
        obj = random_obj(rng)
        obj = obj if isinstance(obj, (dict, list)) else [obj]
        # names may hold forbidden characters: the reference gets them already replaced
        assert xml_document(obj) == ref_xml(clean_obj(obj))


def clean_obj(obj):
    if isinstance(obj, str):
        return clean(obj)
    if isinstance(obj, dict):
        return {clean_obj(k): clean_obj(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [clean_obj(v) for v in obj]
    return obj


def test_xml_document_forbidden_chars_replaced_and_parse():
    bad = "a\x00b\x01\x08\x0b\x0c\x1f\ufffe\uffff\ud800c\td\ne\rf"
    obj = [{"MeterParam": bad, "list": [bad, {"k": bad}]}, {bad: 1, "x\x02y": {"z": bad}}]
    out = xml_document(obj)
    assert out == ref_xml(clean_obj(obj))
    assert not FORBIDDEN.search(out)
    root = ET.fromstring(out.encode())
    assert root.find("item/MeterParam").text.startswith("a\ufffdb\ufffd")
    assert "\ufffd" in out


def test_xml_name_shortcut_agrees_with_dicttoxml():
    names = ["xml", "xmlns", "XMLfoo", "a.b", "_a", "a-", "A1", "a:b", ":a", "-a", ".a", "1a",
             "é", "a ", "a b", "\ufffd", "n²", "n1e+20", "key", "item", "Z" * 200, "a\tb"]
    for name in names:
        assert documents._name_parses(name) == key_is_valid_xml(name), name


def test_xml_document_imports_nothing_heavy():
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "from chalicelib.platform.documents import xml_document\n"
        "from chalicelib.outputs.export_writers import export_chunks\n"
        "import datetime as dt\n"
        "xml_document([{'MeterParam': 'm', 'value': 1.0}])\n"
        "rows = [('m', dt.datetime(2020, 1, 1), 1.0)]\n"
        "for f in ('csv', 'json', 'xml', 'yaml'): b''.join(export_chunks(f, rows))\n"
        "bad = [m for m in ('dicttoxml', 'yaml', 'numpy', 'matplotlib', 'xml.dom.minidom')"
        " if m in sys.modules]\n"
        "assert not bad, bad\n" % str(ROOT))
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------- exports

ALPHABET = (list("abcXYZ019 _.-:#*&!%@`=+,;|?/\\'\"<>[]{}~")
            + ["é", "ü", "中", "文", "😀", "\u00a0", "\u2028", "\u2029", "\x85", "\ufeff",
               "\x00", "\x01", "\x07", "\x1f", "\x7f", "\t", "\n", "\r", "\ufffe", "\ud800"])
SPECIAL_NAMES = ["meter1", "123", "1.5", "1e3", "-1", "true", "True", "false", "null", "Null",
                 "~", "yes", "no", "on", "off", "", " ", "  x  ", "a: b", "# c", "- d", "-",
                 "*e", "&f", "!g", "%h", "@i", "`j", "'k'", '"l"', "=1+2", "+1", "\tx", "\rx",
                 "x\n", "a,b", "0x1F", "0o7", ".inf", ".nan", "2019-10-30", "<&>", "é中文😀",
                 "\\", "\\n", "{a}", "[b]", "?", "|", ">"]
VALUES = [0.0, -0.0, 5.0, 28540.24, 1e20, 1e-7, 1e16, 9999999999999998.0, 1e-4, 0.00009999,
          -3.5, 1.7976931348623157e308, 5e-324, 123456789.123, 0.1, 2.0**53]


def nasty_name(rng):
    if rng.random() < 0.3:
        return rng.choice(SPECIAL_NAMES)
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(1, 12)))


def make_rows(n=400, seed=7, ints=False):
    rng = random.Random(seed)
    names = [nasty_name(rng) for _ in range(40)] + SPECIAL_NAMES
    t = dt.datetime(2019, 12, 31, 23, 50)
    rows = []
    for i in range(n):
        t += dt.timedelta(minutes=5)
        ts = t.replace(microsecond=rng.choice([0, 0, 0, 123456]))
        r = rng.random()
        v: float
        if ints and r < 0.2:
            v = rng.choice([0, 5, -2, 10**20])
        elif r < 0.4:
            v = rng.choice(VALUES)
        else:
            v = round(rng.uniform(-1e5, 1e6), rng.randrange(0, 5))
        rows.append((names[i % len(names)] if i < len(names) else rng.choice(names), ts, v))
    return rows


def row_dicts(rows, sep=" ", name=lambda n: n):
    return [{"MeterParam": name(n), "TimeStamping": t.strftime("%Y-%m-%d" + sep + "%H:%M:%S"),
             "value": v} for n, t, v in rows]


@pytest.mark.parametrize("ints", [False, True])
def test_export_xml_matches_dicttoxml(ints):
    rows = make_rows(ints=ints)
    out = export("xml", rows).decode()
    assert out == ref_xml(row_dicts(rows, "T", clean))
    root = ET.fromstring(out.encode())
    assert len(root) == len(rows)
    assert root[0].find("TimeStamping").text == rows[0][1].strftime("%Y-%m-%dT%H:%M:%S")


def test_export_xml_plain_names_identical_without_cleaning():
    t = dt.datetime(2019, 10, 30, 13, 15)
    rows = [(n, t, 28540.24) for n in ("a<&\"'b", "é中文😀", "m")]
    assert export("xml", rows).decode() == ref_xml(row_dicts(rows, "T"))


@pytest.mark.parametrize("ints", [False, True])
def test_export_json_matches_json_dumps(ints):
    rows = make_rows(ints=ints)
    out = export("json", rows)
    expected = row_dicts(rows)
    assert out.decode() == json.dumps(expected)
    assert json.loads(out) == expected


def test_export_json_non_finite_and_odd_values_like_json_dumps():
    t = dt.datetime(2020, 1, 1)
    rows = [("a", t, float("nan")), ("b", t, float("inf")), ("c", t, True), ("d", t, None),
            ("e", t, 7)]
    assert export("json", rows).decode() == json.dumps(row_dicts(rows))


@pytest.mark.parametrize("ints", [False, True])
def test_export_yaml_round_trips(ints):
    rows = make_rows(ints=ints)
    out = export("yaml", rows)
    loaded = yaml.safe_load(out)
    expected = row_dicts(rows)
    assert loaded == expected
    for got, want in zip(loaded, expected):  # 1 == 1.0 == True: also compare types
        assert type(got["value"]) is type(want["value"]), want
        assert type(got["TimeStamping"]) is str
        assert type(got["MeterParam"]) is str


def test_export_yaml_special_names_and_values():
    t = dt.datetime(2020, 2, 29, 12, 0, 1)
    rows = ([(n, t, 1.0) for n in SPECIAL_NAMES] + [("v", t, v) for v in VALUES]
            + [("\x00\x01\x7f\x85\u2028\u2029\ufeff\ufffe\uffff\ud800\U0001F600", t, -1e-300)])
    loaded = yaml.safe_load(export("yaml", rows))
    assert loaded == row_dicts(rows)
    for (_, _, v), got in zip(rows, loaded):
        assert repr(got["value"]) == repr(v)  # exact, incl. -0.0
    # libyaml (the C loader clients often use) reads it too, lone surrogates aside
    c_rows = rows[:-1]
    assert yaml.load(export("yaml", c_rows), Loader=yaml.CSafeLoader) == row_dicts(c_rows)


def test_export_yaml_other_value_types():
    from decimal import Decimal

    t = dt.datetime(2020, 1, 1)
    rows = [("a", t, Decimal("1.25")), ("b", t, None), ("c", t, True), ("d", t, float("nan")),
            ("e", t, float("-inf")), ("f", t, 10**20)]
    loaded = yaml.safe_load(export("yaml", rows))
    assert [r["value"] for r in loaded[:3]] == [1.25, None, True]
    assert loaded[3]["value"] != loaded[3]["value"] and loaded[4]["value"] == float("-inf")
    assert loaded[5]["value"] == 10**20 and type(loaded[5]["value"]) is int


def csv_expected(rows):
    def name(n):
        n = re.sub("[\ud800-\udfff]", "\ufffd", n)
        return "'" + n if n[:1] in ("=", "+", "-", "@", "\t", "\r") else n
    return [(name(n), t.strftime("%Y-%m-%d %H:%M:%S"), v) for n, t, v in rows]


@pytest.mark.parametrize("ints", [False, True])
def test_export_csv_reads_back_and_matches_csv_writer(ints):
    rows = make_rows(ints=ints)
    out = export("csv", rows).decode()
    expected = csv_expected(rows)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(("MeterParam", "TimeStamping", "value"))
    writer.writerows(expected)
    assert out == buf.getvalue()
    assert out.startswith("MeterParam,TimeStamping,value\r\n")
    back = list(csv.reader(io.StringIO(out, newline="")))
    assert back[0] == ["MeterParam", "TimeStamping", "value"]
    assert back[1:] == [[n, t, repr(v)] for n, t, v in expected]
    assert [float(r[2]) for r in back[1:]] == [v for _, _, v in rows]


def test_export_csv_formula_injection_guard():
    t = dt.datetime(2020, 1, 1)
    names = ["=HYPERLINK(\"x\")", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "ok", "a=b"]
    back = list(csv.reader(io.StringIO(export("csv", [(n, t, 1.0) for n in names]).decode(),
                                       newline="")))
    assert [r[0] for r in back[1:]] == ["'=HYPERLINK(\"x\")", "'+1", "'-1", "'@SUM(A1)", "'\tx",
                                        "'\rx", "ok", "a=b"]
    assert [r[2] for r in back[1:]] == ["1.0"] * len(names)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("size", [1, 7, 100, 4096])
def test_chunking_is_exact_and_lossless(fmt, size):
    rows = make_rows(300, seed=3)
    whole = export(fmt, rows)
    chunks = list(export_chunks(fmt, rows, chunk_bytes=size))
    assert b"".join(chunks) == whole
    assert len(chunks) == -(-len(whole) // size)
    assert all(len(c) == size for c in chunks[:-1]) and 0 < len(chunks[-1]) <= size


@pytest.mark.parametrize("fmt", FORMATS)
def test_default_chunks_hold_a_big_export(fmt):
    rows = make_rows(30000, seed=5)
    chunks = list(export_chunks(fmt, rows))
    assert len(chunks) >= 2 and all(len(c) == 1 << 20 for c in chunks[:-1])


def test_zero_rows():
    assert export("xml", []) == b'<?xml version="1.0" encoding="UTF-8" ?><Response></Response>'
    assert export("xml", []).decode() == ref_xml([])
    assert export("json", []) == b"[]" == json.dumps([]).encode()
    assert yaml.safe_load(export("yaml", [])) == []
    assert export("csv", []) == b"MeterParam,TimeStamping,value\r\n"
    assert export("csv", iter(())) == b"MeterParam,TimeStamping,value\r\n"


@pytest.mark.parametrize("fmt", FORMATS)
def test_rows_are_consumed_lazily(fmt):
    taken = 0

    def row(i):
        return "meter%d" % (i % 3), dt.datetime(2020, 1, 1) + dt.timedelta(minutes=5 * i), i / 4

    def endless():
        nonlocal taken
        for i in itertools.count():
            taken += 1
            if taken > 50000:
                raise AssertionError("export read far past what the chunks taken need")
            yield row(i)

    size = 64 * 1024
    chunks = export_chunks(fmt, endless(), chunk_bytes=size)
    first = [next(chunks) for _ in range(3)]
    assert all(len(c) == size for c in first)
    # rows that 3 chunks can hold, plus one block read ahead: not the whole (endless) input
    overhead = len(export(fmt, []))
    shortest = min(len(export(fmt, [row(i)])) - overhead for i in range(10))
    assert taken <= 3 * size // shortest + 1 + export_writers._BLOCK_ROWS


@pytest.mark.parametrize("fmt", FORMATS)
def test_one_row_block_boundaries(fmt):
    # exactly one block, one block plus one row: the joins between blocks stay right
    for n in (export_writers._BLOCK_ROWS - 1, export_writers._BLOCK_ROWS, export_writers._BLOCK_ROWS + 1):
        rows = make_rows(n, seed=n)
        out = export(fmt, iter(rows))
        if fmt == "json":
            assert json.loads(out) == row_dicts(rows)
        elif fmt == "yaml":
            assert yaml.safe_load(out) == row_dicts(rows)
        elif fmt == "xml":
            assert len(ET.fromstring(out)) == n
        else:
            assert len(list(csv.reader(io.StringIO(out.decode(), newline="")))) == n + 1


def test_bad_arguments():
    with pytest.raises(ValueError):
        export_chunks("xls", [])
    with pytest.raises(ValueError):
        export_chunks("csv", [], chunk_bytes=0)


def test_export_formats_table():
    assert EXPORT_FORMATS == {"csv": ("text/csv; charset=utf-8", "csv"), "json": ("application/json", "json"),
                              "xml": ("application/xml", "xml"),
                              "yaml": ("application/yaml", "yaml")}

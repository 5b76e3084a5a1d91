"""The API's answers as XML (the vendor's dicttoxml shape) and YAML documents: every XML and YAML text
a route answers comes from here (chalicelib/platform/rendering.py picks the format; the streamed /file exports
are chalicelib/outputs/export_writers.py's, which write their XML with xml_elements).

dicttoxml is far too slow for big answers (it logs per call and parses every key as XML):
xml_document writes exactly what ``dicttoxml(obj, custom_root='Response', attr_type=True)`` writes,
without that cost. Neither dicttoxml nor yaml is imported at import (Lambda cold start):
yaml_document (PyYAML's safe dump) imports yaml when first asked.
"""

import re
from collections.abc import Iterable
from numbers import Number
from typing import Any

__all__ = ["XML_HEAD", "XML_TAIL", "xml_document", "xml_elements", "yaml_document"]

XML_HEAD = '<?xml version="1.0" encoding="UTF-8" ?><Response>'
XML_TAIL = "</Response>"
_CACHE_MAX = 2048  # entries of the element-name memo before it is cleared (bounds memory)

# --------------------------------------------------------------------------------------------
# XML: a faithful port of dicttoxml 1.7.16 (ids=False, attr_type=True, item_func -> 'item'),
# minus its per-call logging and per-key XML parsing, which make it slow.

# Characters XML 1.0 forbids: C0 controls but \t \n \r, lone surrogates, U+FFFE, U+FFFF.
_XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# ASCII names that certainly parse as an element name (no ':' so namespaces don't matter).
_SIMPLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")
_name_memo: dict[str, tuple[str, str | None]] = {}


def _xml_text(s: str) -> str:
    """Escape like dicttoxml's escape_xml, after replacing forbidden characters by U+FFFD."""
    if _XML_FORBIDDEN.search(s):
        s = _XML_FORBIDDEN.sub("\ufffd", s)
    return (s.replace("&", "&amp;").replace('"', "&quot;").replace("'", "&apos;")
            .replace("<", "&lt;").replace(">", "&gt;"))


def _name_parses(key: Any) -> bool:
    """dicttoxml's key_is_valid_xml: does ``<key>foo</key>`` parse (minidom, namespaces on)?"""
    if type(key) is str and _SIMPLE_NAME.match(key):
        return True
    from xml.dom.minidom import parseString  # rare path: imported only when needed

    try:
        parseString('<?xml version="1.0" encoding="UTF-8" ?><%s>foo</%s>' % (key, key))
        return True
    except Exception:
        return False


def _fix_name(key: Any) -> tuple[str, str | None]:
    """dicttoxml's make_valid_xml_name: (element name, value of a name="" attribute or None)."""
    if type(key) is str:
        hit = _name_memo.get(key)
        if hit is not None:
            return hit
        raw, key = key, _xml_text(key)
    else:
        raw = None
    out: tuple[str, str | None]
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


def _xml_type(val: Any) -> str:
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


def _open_tag(key: str, name: str | None, typ: str) -> str:
    if name is None:
        return '<%s type="%s">' % (key, typ)
    return '<%s name="%s" type="%s">' % (key, name, typ)


def _leaf(key: str, name: str | None, val: Any, kind: str) -> str:
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


def xml_elements(obj: dict) -> str:
    """The elements of a dict's items, as dicttoxml writes them inside the dict's element."""
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
            out.append("%s%s</%s>" % (_open_tag(key, name, "dict"), xml_elements(val), key))
        elif isinstance(val, Iterable):
            out.append("%s%s</%s>" % (_open_tag(key, name, "list"), _xml_list(val), key))
        elif val is None:
            out.append(_leaf(key, name, val, "none"))
        else:
            raise TypeError("Unsupported data type: %s (%s)" % (val, type(val).__name__))
    return "".join(out)


def _xml_list(items: Iterable[Any]) -> str:
    out = []
    for item in items:
        if isinstance(item, Number) or type(item) is str:  # bool too: <item type="bool">True
            out.append(_leaf("item", None, item, "kv"))
        elif hasattr(item, "isoformat"):
            out.append(_leaf("item", None, item.isoformat(), "kv"))
        elif isinstance(item, dict):
            out.append('<item type="dict">%s</item>' % xml_elements(item))
        elif isinstance(item, Iterable):
            out.append('<item type="list">%s</item>' % _xml_list(item))
        elif item is None:
            out.append(_leaf("item", None, None, "none"))
        else:
            raise TypeError("Unsupported data type: %s (%s)" % (item, type(item).__name__))
    return "".join(out)


def _xml_body(obj: Any) -> str:
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
        return xml_elements(obj)
    if isinstance(obj, Iterable):
        return _xml_list(obj)
    raise TypeError("Unsupported data type: %s (%s)" % (obj, type(obj).__name__))


def xml_document(obj: Any) -> str:
    """The vendor's XML for a response object.

    Byte-identical to ``dicttoxml(obj, custom_root='Response', attr_type=True).decode()`` when
    every string holds only valid XML characters; forbidden ones (C0 controls but tab/LF/CR,
    lone surrogates, U+FFFE/U+FFFF) become U+FFFD so a strict parser accepts the document.
    (dicttoxml quirks are kept, e.g. a numeric-looking key of a nested dict such as '1e20'.)
    """
    return "%s%s%s" % (XML_HEAD, _xml_body(obj), XML_TAIL)


# --------------------------------------------------------------------------------------------
# YAML: PyYAML's safe dump (the exports write the equivalent document directly, at csv-writer
# speed: chalicelib/outputs/export_writers.py).

# Unicode line breaks (NEL, LS, PS) that a YAML reader folds when they stand raw inside quotes.
_YAML_FOLDED = ("\x85", "\u2028", "\u2029")
_dumper: Any = None


def _yaml_dumper() -> Any:
    """PyYAML's safe dumper, but strings holding a Unicode line break (NEL, LS, PS) are double-quoted.

    safe_dump writes those characters raw inside quotes, where a YAML reader folds them: the
    value read back would differ from the one stored.
    """
    global _dumper
    if _dumper is None:
        import yaml

        class SafeDumper(yaml.SafeDumper):
            pass

        def represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
            style = '"' if any(c in value for c in _YAML_FOLDED) else None
            return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

        SafeDumper.add_representer(str, represent_str)
        _dumper = SafeDumper
    return _dumper


def yaml_document(obj: Any) -> str:
    """A response object as YAML: ``yaml.safe_dump`` in the object's key order, Unicode kept, and any
    string holding NEL, LS or PS double-quoted so ``yaml.safe_load`` gives back exactly obj.
    PyYAML is imported on first use (Lambda cold start)."""
    import yaml

    return yaml.dump(obj, Dumper=_yaml_dumper(), sort_keys=False, allow_unicode=True)

"""One renderer for every route: a result as JSON, XML (the vendor's dicttoxml shape) or YAML.

Times travel as naive local datetimes until here, where each format writes them its own way
('YYYY-MM-DD HH:MM:SS' in JSON and YAML, 'YYYY-MM-DDTHH:MM:SS' in XML, as in the guide).
"""
import json
from datetime import datetime
from typing import Any

MEDIA_TYPES = {"json": "application/json", "xml": "application/xml", "yaml": "application/yaml"}


def response_type(value: object) -> str | None:
    """The format asked for (case-insensitive), 'json' when none, or None when it is not one we have."""
    if value is None or value == "":
        return "json"
    if isinstance(value, str) and value.strip().lower() in MEDIA_TYPES:
        return value.strip().lower()
    return None


def _with_times(value: Any, separator: str) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(sep=separator, timespec="seconds")
    if isinstance(value, dict):
        return {k: _with_times(v, separator) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_with_times(v, separator) for v in value]
    return value


def render(result: Any, fmt: str) -> tuple[str, str]:
    """(body text, media type) of a result in a format."""
    if fmt == "xml":
        from chalicelib.platform import documents

        return documents.xml_document(_with_times(result, "T")), MEDIA_TYPES["xml"]
    prepared = _with_times(result, " ")
    if fmt == "yaml":
        from chalicelib.platform import documents

        return documents.yaml_document(prepared), MEDIA_TYPES["yaml"]
    return json.dumps(prepared, ensure_ascii=False), MEDIA_TYPES["json"]

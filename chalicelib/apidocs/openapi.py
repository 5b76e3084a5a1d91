"""GET /openapi.yaml: the API's OpenAPI 3.1 document, served as written.

The document lives in chalicelib/apidocs/openapi.yaml so that `chalice package` ships it with the function
(it packages app.py and chalicelib/ only); docs/openapi.yaml is a symbolic link to it, not a copy.
"""
import os

from chalice import Response

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "openapi.yaml")
MEDIA_TYPE = "application/yaml"

_text: str | None = None


def document() -> str:
    """The document's text (read once per container)."""
    global _text
    if _text is None:
        with open(PATH, encoding="utf-8") as handle:
            _text = handle.read()
    return _text


def response() -> Response:
    """The answer of GET /openapi.yaml: the document as application/yaml (a valid responseType is not applied)."""
    return Response(body=document(), status_code=200,
                    headers={"Content-Type": MEDIA_TYPE, "Cache-Control": "public, max-age=300"})

"""GET /docs: the API's interactive documentation, Swagger UI rendering GET /openapi.yaml.

Swagger UI's script and stylesheet come from the swagger-ui-bundle-v2 package (vendored into the
Lambda package by requirements.txt) and are served by the API itself at /docs/ui.js and /docs/ui.css:
no CDN, nothing fetched from another host at run time (the online validator badge is off too).
Every URL in the page is relative, so it works under API Gateway's stage prefix (/api/docs) as on
the local server (/docs).
"""
from chalice import Response

# Our URL -> (file of the package's Swagger UI, media type).
ASSETS = {
    "ui.js": ("swagger-ui-bundle.js", "application/javascript; charset=utf-8"),
    "ui.css": ("swagger-ui.css", "text/css; charset=utf-8"),
}

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Intellimeter API</title>
  <link rel="stylesheet" href="docs/ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="docs/ui.js"></script>
  <script>
    window.ui = SwaggerUIBundle({url: "openapi.yaml", dom_id: "#swagger-ui", deepLinking: true,
                                validatorUrl: null, docExpansion: "list", defaultModelsExpandDepth: 0});
  </script>
</body>
</html>
"""

_assets: dict[str, str] = {}


def page() -> Response:
    """The HTML page (small, the same for everyone)."""
    return Response(body=PAGE, status_code=200,
                    headers={"Content-Type": "text/html; charset=utf-8", "Cache-Control": "public, max-age=300"})


def asset(name: str) -> Response:
    """One of Swagger UI's files, read from the package once per container."""
    filename, media_type = ASSETS[name]
    if name not in _assets:
        import swagger_ui_bundle

        _assets[name] = (swagger_ui_bundle.swagger_ui_path / filename).read_text(encoding="utf-8")
    return Response(body=_assets[name], status_code=200,
                    headers={"Content-Type": media_type, "Cache-Control": "public, max-age=86400"})

"""The API's own documentation: the OpenAPI 3.1 document (openapi.yaml, served by openapi:
/openapi.yaml) and the interactive page over it (docs_page: /docs)."""

"""The Intellimeter API's logic, in rooms by concern (chalicelib/README.md maps each route to its module).

    platform/   the ground floor: AWS clients, DynamoDB access, settings, time, errors, input checks,
                the HTTP glue (web), responseType rendering and the XML/YAML answer documents
    tables/     one schema module per DynamoDB table: its name and the keys of every item it holds
    identity/   projects and accounts, login and sessions, account and scoped keys, passwords, throttle
    metering/   meters, readings storage, POST /data ingest, consumption rollups and periods, status
    billing/    tariffs in the OpenEI URDB shape (/tariffs) and each meter's monthly bill (/bill)
    outputs/    what the API hands out as files: exports and export jobs, charts, S3 downloads
    apidocs/    the OpenAPI document and the interactive /docs page

Each room imports only rooms listed above it, never one below (so platform/ imports no other room).
A new concern gets a room of its own beside these (alerts/ for alert rules and their delivery), with
any new table's schema module in tables/.
"""

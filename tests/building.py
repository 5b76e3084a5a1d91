"""A building's worth of meters and readings, built through the product's own functions, fast enough for a test.

The first meter's readings go through POST /data's own function (chalicelib.metering.ingest.ingest), so
they are stored exactly as ingest stores them, whatever the storage layout; the other meters get copies
of the items ingest wrote under their own series key (BatchWriteItem, 25 a call), which takes seconds
where ingesting 300 meters would take many minutes. Consumption rollups, where asked for, are rebuilt
from those items by chalicelib.metering.rollups.rebuild (the code ingest runs).
"""
from datetime import datetime, timezone

DAY = 86400


def stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def ingest_all(project_id: int, readings: list[dict]) -> None:
    """readings through chalicelib.metering.ingest.ingest, 1,000 a call; every one must be stored."""
    from chalicelib.metering import ingest

    for at in range(0, len(readings), 1000):
        answer = ingest.ingest(project_id, readings[at:at + 1000])
        assert answer["accepted"] + answer["duplicates"] == len(readings[at:at + 1000]), answer


def build(project_id: int, count: int, first: int, days: int, every: int = 300, save_every: int = 5,
          prefix: str = "suite-", rollups: bool = False) -> list[dict]:
    """count meters (prefix000, …) with `days` days of readings from epoch `first`, every `every` seconds;
    their GET /point views."""
    from chalicelib.identity import accounts
    from chalicelib.metering import meters
    from chalicelib.metering import rollups as rollup_module
    from chalicelib.platform import aws, db
    from chalicelib.tables import readings_table

    made = [meters.register(project_id, {"MeterId": f"{prefix}{i:03d}", "SaveEvery": save_every})
            for i in range(count)]
    ingest_all(project_id, [{"MeterId": made[0]["MeterId"], "TimeStamping": stamp(t), "value": 1000 + k * 0.37}
                            for k, t in enumerate(range(first, first + days * DAY, every))])
    source = readings_table.series_key(project_id, made[0]["id"])
    items = list(db.query(readings_table.NAME, "meter = :m", {":m": source}))
    writes = [{"PutRequest": {"Item": db.to_ddb({**item, "meter": readings_table.series_key(project_id, m["id"])})}}
              for m in made[1:] for item in items]
    client, table = aws.dynamodb(), db.table(readings_table.NAME)
    for at in range(0, len(writes), 25):
        request: dict | None = {table: writes[at:at + 25]}
        while request:
            request = client.batch_write_item(RequestItems=request).get("UnprocessedItems") or None
    if rollups:
        zone = accounts.project_zone(project_id)
        for meter in made[1:]:
            rollup_module.rebuild(project_id, zone, meter["id"])
    return made

"""Meters and what they measure: metering points (meters: /point, and the latest reading and
interval behind /data and /interval), readings storage and range reads (readings), POST /data
(ingest), consumption rollups kept at ingest (rollups), energy per period (consumption:
/consumption), local days (days) and the fleet's status (status: /status)."""

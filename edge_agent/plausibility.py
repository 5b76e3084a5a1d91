"""Plausibility of a meter's total: readings no meter could have given are held back.

A reading is suspect when, against the meter's previous reading kept in the outbox,

* its step implies an average power above what the meter can carry: the meter's
  ``max_power_kw`` in the agent config, else its map's ``max_power_kw`` (the
  numbers are in each map file and docs/edge-agent.md "Faults on site"); or
* its total jumped by two orders of magnitude or more (x100, from at least 10 kWh),
  whatever the time between: a map reading the wrong register (an older EM24's power
  factors at 0x0034 read as 6,494,716.7 kWh) or a misdecoded word order.

* its total went down (not a rollover: the counter module unwraps those first): a meter reset or
  replaced, or a wrong read. Passed on, a wrong low value would book the next true reading's
  step back up as consumption (or hold the true readings back as a jump); held back, the meter
  is accepted again as soon as it reads right. A meter that really was replaced or reset is
  recognised by its model code where its map has one (the poller then starts a new series), or
  released by the operator (``release-suspect``), which starts a new series in the cloud.

The first reading of a meter has nothing to compare with and is accepted.
"""

from __future__ import annotations

from .clock import from_iso

MAGNITUDE_FACTOR = 100.0
MAGNITUDE_FLOOR_KWH = 10.0


def suspect_reason(prev: tuple[str, float] | None, ts: str, value: float, max_power_kw: float | None) -> str | None:
    """Why (ts, value) cannot follow ``prev`` = (ts, value), or None when it can."""
    if prev is None:
        return None
    prev_ts, prev_value = prev
    step = value - prev_value
    if step < 0:
        return (f"total went down from {prev_value:g} kWh ({prev_ts}) to {value:g} kWh: a meter reset or replaced, "
                f"or a wrong read")
    if step == 0:
        return None
    if value >= MAGNITUDE_FACTOR * max(prev_value, MAGNITUDE_FLOOR_KWH):
        return f"total jumped from {prev_value:g} kWh ({prev_ts}) to {value:g} kWh: by orders of magnitude"
    hours = (from_iso(ts) - from_iso(prev_ts)) / 3600.0
    if max_power_kw and hours > 0 and step / hours > max_power_kw:
        return (f"step of {step:g} kWh since {prev_ts} implies {step / hours:,.0f} kW, above the "
                f"{max_power_kw:g} kW this meter can carry")
    return None

"""Turning a meter's raw energy register into a continuous total in kWh.

A rollover register (the i-meter 45's UINT32 in 0.001 kWh wraps after
4,294,967.295 kWh) is unwrapped: a step down from the top quarter of its range
into the bottom quarter is a wrap, and adds one full range. Any other step down
(meter reset or replaced) is passed on as read, the wrap count restarts, and the
caller logs it: the cloud treats a decrease as a reset. The state (last raw value,
wraps) is stored in the outbox in the same transaction as the reading.
"""

from __future__ import annotations

from .regmap import Register


def energy_kwh(reg: Register, raw: int | float, state: tuple[int, int] | None) -> tuple[float, tuple, str]:
    """(value in kWh, new state (last_raw, wraps), note '' | 'rollover' | 'decrease')."""
    last, wraps = state if state else (None, 0)
    note = ""
    if last is not None and raw < last:
        if reg.rollover and last >= reg.modulus * 3 // 4 and raw < reg.modulus // 4:
            wraps += 1
            note = "rollover"
        else:
            wraps = 0
            note = "decrease"
    total = (wraps * reg.modulus + raw) if reg.rollover else raw
    value = round(total * reg.scale, 6)
    return value, (raw, wraps), note

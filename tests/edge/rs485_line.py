"""A 2-wire RS-485 line between pseudo-terminals: wire time at the baud, slow meters, colliding masters.

Each party on the line (the agent, a second master such as a BMS, a pymodbus ``ModbusSerialServer``
standing for the meters) gets a pseudo-terminal of its own; what one party writes reaches every
other party, as on a shared pair of wires, but only once it has crossed the wire:

* **Wire time.** A transmission of n bytes occupies the line for n x (bits per character) / baud
  seconds and is delivered to the others when its last byte has arrived.
* **Turnaround.** A party with ``delay`` starts transmitting that long after it wrote (a meter
  that answers 600 ms after the request: ``line.attach("meters", delay=0.6)``); ``delay`` may be
  changed while the line runs. A party never transmits two frames at once: the next one waits
  for the end of the last one.
* **Echo.** A party attached with ``echo=True`` also receives what it sends (an RS-485 adapter
  whose receiver stays on while it transmits).
* **Collisions.** Two transmissions that overlap in time garble each other: every party receives
  both, each byte XORed with 0xA5 (so CRCs fail), and ``line.collisions`` counts them.

``line.frames`` records every transmission: (party name, start, end, bytes as sent, garbled).
Nothing here imports ``edge_agent``.
"""

from __future__ import annotations

import os
import select
import threading
import time
import tty
from dataclasses import dataclass, field


@dataclass
class Party:
    name: str
    path: str
    master: int
    slave: int
    delay: float = 0.0
    echo: bool = False
    busy_until: float = 0.0


@dataclass
class _Tx:
    party: Party
    start: float
    end: float
    data: bytes
    garbled: bool = False
    sent: list = field(default_factory=list)


class Line:
    """An RS-485 line at ``baudrate`` (``bits`` per character: 10 for 8N1, 11 for 8E1)."""

    def __init__(self, baudrate: int = 9600, bits: int = 10):
        self.char_time = bits / baudrate
        self.parties: list[Party] = []
        self.frames: list[tuple[str, float, float, bytes, bool]] = []
        self.collisions = 0
        self._pending: list[_Tx] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="rs485-line", daemon=True)
        self._started = False

    def attach(self, name: str, delay: float = 0.0, echo: bool = False) -> Party:
        """A new party: open ``party.path`` as its serial port."""
        master, slave = os.openpty()
        tty.setraw(slave)
        tty.setraw(master)
        os.set_blocking(master, False)
        p = Party(name, os.ttyname(slave), master, slave, delay, echo)
        with self._lock:
            self.parties.append(p)
        if not self._started:
            self._started = True
            self._thread.start()
        else:
            os.write(self._wake_w, b"x")
        return p

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                fds = {p.master: p for p in self.parties}
                due = min((t.end for t in self._pending), default=None)
            wait = 0.05 if due is None else max(0.0, min(0.05, due - time.monotonic()))
            try:
                r, _, _ = select.select([*fds, self._wake_r], [], [], wait)
            except (OSError, ValueError):
                return
            now = time.monotonic()
            for fd in r:
                if fd == self._wake_r:
                    os.read(self._wake_r, 64)
                    continue
                try:
                    data = os.read(fd, 4096)
                except (BlockingIOError, OSError):
                    continue
                if data:
                    self._transmit(fds[fd], data, now)
            self._deliver(time.monotonic())

    def _transmit(self, p: Party, data: bytes, now: float) -> None:
        start = max(now + p.delay, p.busy_until)
        tx = _Tx(p, start, start + len(data) * self.char_time, data)
        p.busy_until = tx.end
        with self._lock:
            for other in self._pending:
                if other.party is not p and other.start < tx.end and tx.start < other.end:
                    if not other.garbled:
                        self.collisions += 1
                    other.garbled = tx.garbled = True
            self._pending.append(tx)

    def _deliver(self, now: float) -> None:
        with self._lock:
            due = sorted((t for t in self._pending if t.end <= now), key=lambda t: t.end)
            self._pending = [t for t in self._pending if t.end > now]
            parties = list(self.parties)
        for tx in due:
            data = bytes(b ^ 0xA5 for b in tx.data) if tx.garbled else tx.data
            self.frames.append((tx.party.name, tx.start, tx.end, tx.data, tx.garbled))
            for p in parties:
                if p is not tx.party or p.echo:
                    try:
                        os.write(p.master, data)
                    except OSError:
                        pass  # nobody reads that end (yet): the bytes are lost, as on a wire

    def wait_idle(self, quiet: float = 0.3, timeout: float = 30.0) -> None:
        """Wait until nothing has been on the line for ``quiet`` seconds (late answers included)."""
        give_up = time.monotonic() + timeout
        while time.monotonic() < give_up:
            with self._lock:
                busy = bool(self._pending)
                last = max((p.busy_until for p in self.parties), default=0.0)
            if not busy and time.monotonic() - last >= quiet:
                return
            time.sleep(0.05)
        raise TimeoutError("the line never went quiet")

    def close(self) -> None:
        self._stop.set()
        os.write(self._wake_w, b"x")
        if self._started:
            self._thread.join(5)
        for p in self.parties:
            for fd in (p.master, p.slave):
                try:
                    os.close(fd)
                except OSError:
                    pass
        os.close(self._wake_r)
        os.close(self._wake_w)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

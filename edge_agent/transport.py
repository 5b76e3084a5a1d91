"""The Modbus line: one request at a time, and an answer is only ever taken for the request it answers.

Why not pymodbus's own request handling: its sync clients (3.16) match an answer to a request
by device id alone over RTU, where the transaction id is always 0: not by function, byte count
or the time the answer came in. After a timeout they send the retry at once, so a slow meter's
late answer to the first send is taken for the retry, and the retry's answer for whatever is
sent next (issue 19: a power register's value delivered as the energy total). Over TCP they
check the transaction id, but a gateway that closed the idle connection fails the request
("Connection unexpectedly closed") and the retry goes over the same dead socket. Configuring
them cannot add what is missing and wrapping them cannot see when bytes came in, so this
module owns the exchange; pymodbus still builds every frame (its PDUs and framers, its CRC)
and decodes every answer, and pyserial opens the port.

Serial RTU (no transaction id), per request:

* **Settle.** Drain what is waiting on the line; keep the 3.5-character silence before a frame;
  when another master (a BMS) sent a request to the same unit lately, wait until its answer
  has passed.
* **Match.** The answer is the frame with the request's unit, function (or its exception) and
  byte count and a good CRC that is complete within the request's timeout after the request
  left. A request from another master to the same unit seen before it voids the exchange
  (its answer could be that one). Everything else is counted: garbled bytes (CRC, collisions),
  frames for other units, other masters' requests.
* **Late answers.** When no answer came in time, the line listens one timeout more before
  anything else is sent. A matching frame then is a late answer: the meter fails with
  ``answers after 620 ms; timeout 500 ms`` and no value is taken from it.
* **Echo watch.** A retry answered after an unanswered send may have been answered by the
  first send's late answer; the line then listens as long again (plus one timeout) for the
  retry's own answer. If it comes, the meter answers late and fails the same way.
* **Unsettled shapes.** After a request that got no answer, no *other* request with the same
  unit, function and count is sent for ``UNSETTLED_TIMEOUTS`` timeouts: its late answer could
  not be told from that request's. Retries of the same request (the same registers) are sent.

Timeouts come from the line (``LineTiming``): the wire time of the request and of the
expected answer at the bus's baud rate, plus the meter's turnaround, and never less than
the bus's configured ``timeout``.

TCP: the same matching, plus the transaction id (a new one per send). A connection found
closed before a request, or closed or reset while waiting for its answer, is opened again and
the request sent again in the same poll. An answer later than the timeout (listened for one
timeout more) fails the meter as late; a send that got none is retried over a new connection
(a NAT or firewall that forgot the connection drops packets without a word).
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import select
import socket
import time
from collections import Counter
from dataclasses import dataclass

import serial
from pymodbus.framer import FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU, ModbusPDU
from pymodbus.pdu.register_message import ReadHoldingRegistersRequest, ReadInputRegistersRequest

from .config import Bus

REQUEST_BYTES = 8  # unit, function, address (2), count (2), CRC (2)
SLACK = 0.05  # scheduling and USB-adapter latency added to a derived timeout (s)
UNSETTLED_TIMEOUTS = 10  # how long (in timeouts) an unanswered request's shape stays blocked for other addresses
READ_FUNCTIONS = (1, 2, 3, 4, 5, 6)  # requests of another master recognised on the line (8-byte frames)


def answer_bytes(count: int) -> int:
    """RTU frame length of the answer to a read of ``count`` registers."""
    return 5 + 2 * count


def bits_per_char(bus: Bus) -> int:
    """Start bit, data bits, parity bit, stop bits."""
    return 1 + bus.bytesize + (0 if bus.parity == "N" else 1) + bus.stopbits


@dataclass(frozen=True)
class LineTiming:
    """Timeouts that fit the line: wire time of request and answer, the meter's turnaround, a minimum."""

    minimum: float  # the bus's configured timeout (s): never less
    char_time: float = 0.0  # seconds per character on the wire (0: not known, TCP)
    turnaround: float = 0.0  # the meter's time from the end of a request to its answer (s)

    @classmethod
    def of(cls, bus: Bus) -> "LineTiming":
        if bus.type != "serial":
            return cls(bus.timeout)
        return cls(bus.timeout, bits_per_char(bus) / bus.baudrate, bus.turnaround_ms / 1000.0)

    def exchange(self, count: int) -> float:
        """Expected time from sending a read of ``count`` registers to the end of its answer (s)."""
        return (REQUEST_BYTES + answer_bytes(count)) * self.char_time + self.turnaround

    def timeout(self, count: int) -> float:
        """How long to wait for the answer to a read of ``count`` registers."""
        if not self.char_time:
            return self.minimum
        return max(self.minimum, self.exchange(count) + SLACK)

    def silence(self) -> float:
        """The RTU inter-frame gap: 3.5 characters, 1.75 ms above 19200 baud."""
        return 0.00175 if self.char_time < 11 / 19200 else 3.5 * self.char_time


def bus_budget(bus: Bus, counts: list[int]) -> tuple[float, float]:
    """What one poll costs a serial bus whose meters are each read with one request of these
    register counts: (seconds on the line when every meter answers within its turnaround, seconds
    one meter that does not answer adds: each try waits its timeout and one more). (0, 0) over TCP,
    where the wire is the gateway's."""
    timing = LineTiming.of(bus)
    if not timing.char_time:
        return 0.0, 0.0
    busy = sum(timing.exchange(c) + timing.silence() for c in counts)
    silent = (bus.retries + 1) * 2 * max((timing.timeout(c) for c in counts), default=timing.minimum)
    return busy, silent


# -- errors: each says what the line saw ---------------------------------------------------------

class LineError(Exception):
    """A request got no usable answer; the text says why."""


class Unavailable(LineError):
    """The bus cannot be opened (the OS's reason is in the text)."""


class NoAnswer(LineError):
    """Nothing matching came in time (``garbled``: bytes came, but no frame with a good CRC)."""

    def __init__(self, msg: str, garbled: bool = False):
        super().__init__(msg)
        self.garbled = garbled


class LateAnswer(LineError):
    """The meter answers, but after its timeout: no value is taken from it."""


class OtherMaster(LineError):
    """Another master on the line is talking to the same unit: answers cannot be told apart."""


class Unsettled(LineError):
    """Not sent: an earlier request of the same shape to this unit is unanswered and could still be answered."""


class Refused(LineError):
    """The meter answered with a Modbus exception."""

    def __init__(self, msg: str, code: int):
        super().__init__(msg)
        self.code = code


# -- frames ---------------------------------------------------------------------------------------

def _crc_ok(frame: bytes) -> bool:
    return len(frame) >= 4 and FramerRTU.check_CRC(frame[:-2], int.from_bytes(frame[-2:], "big"))


def _request_pdu(unit: int, function: int, address: int, count: int) -> ModbusPDU:
    cls = ReadHoldingRegistersRequest if function == 3 else ReadInputRegistersRequest
    return cls(address=address, count=count, dev_id=unit)


@dataclass(frozen=True)
class Frame:
    start: int
    end: int
    unit: int
    function: int
    kind: str  # answer | exception | request


def rtu_frames(buf: bytes) -> list[Frame]:
    """Every frame with a good CRC in ``buf``: read answers, exceptions, and 8-byte requests, left to right."""
    out, i, n = [], 0, len(buf)
    while i + 4 <= n:
        unit, fn = buf[i], buf[i + 1]
        found = None
        if fn & 0x80 and i + 5 <= n and _crc_ok(buf[i:i + 5]):
            found = Frame(i, i + 5, unit, fn & 0x7F, "exception")
        elif fn in (1, 2, 3, 4) and i + 5 + buf[i + 2] <= n and _crc_ok(buf[i:i + 5 + buf[i + 2]]):
            found = Frame(i, i + 5 + buf[i + 2], unit, fn, "answer")
        if found is None and fn in READ_FUNCTIONS and i + REQUEST_BYTES <= n and _crc_ok(buf[i:i + REQUEST_BYTES]):
            found = Frame(i, i + REQUEST_BYTES, unit, fn, "request")
        if found is not None:
            out.append(found)
            i = found.end
        else:
            i += 1
    return out


@dataclass
class _Seen:
    """A frame from or to one unit that bears on which answers may still come: another master's
    request, our own unanswered request, or an answer (``request`` False)."""

    t: float
    function: int
    size: int | None  # the answer's byte count (None: any, e.g. an exception or a write's echo)
    request: bool
    ours: bool = False
    until: float = 0.0  # a request: after this it counts as lost (garbled, ignored), no answer is paired with it


class _Rx:
    """What came in after one send: the answer to it, if any, and what else was on the line."""

    def __init__(self, unit: int, function: int, count: int, sent: bytes = b""):
        self.unit, self.function, self.count = unit, function, count
        self.sent = sent  # our request: an adapter that echoes what it sends gives it back first
        self.echoed = 0  # leading bytes that were that echo
        self.buf = bytearray()
        self.times: list[tuple[int, float]] = []  # (bytes received so far, when)
        self.answer: Frame | None = None
        self.t_answer = 0.0
        self.foreign = False  # another master asked this unit with this function before any answer came
        self.covered = 0

    def feed(self, data: bytes, t: float) -> None:
        self.buf += data
        self.times.append((len(self.buf), t))
        if self.answer is not None or self.foreign:
            return
        covered = 0
        for f in rtu_frames(bytes(self.buf)):
            covered += f.end - f.start
            if f.unit != self.unit:
                continue
            if f.kind == "request" and f.start == 0 and self.buf[:f.end] == self.sent:
                self.echoed = f.end  # our own request, echoed by the adapter
                continue
            if f.kind == "request":
                if f.function == self.function:  # its answer could not be told from ours
                    self.foreign = True
                    break
                continue
            if f.function == self.function and (
                    f.kind == "exception" or self.buf[f.start + 2] == 2 * self.count):
                self.answer = f
                self.t_answer = next(t for n, t in self.times if n >= f.end)
                break
        self.covered = covered

    def garbled(self) -> int:
        """Bytes that belong to no frame with a good CRC."""
        return len(self.buf) - self.covered if self.answer is None else 0


# -- the lines ------------------------------------------------------------------------------------

class Line:
    """One bus's connection; ``read`` is one request (with its retries), answered or failed with a reason."""

    def __init__(self, bus: Bus, timing: LineTiming | None = None):
        self.bus = bus
        self.timing = timing or LineTiming.of(bus)
        self.retries = bus.retries
        self.counts: Counter[str] = Counter()  # requests, sends, answers, silent, garbled_bytes, late, ...

    def open(self) -> None:
        """Open the port or connection (``Unavailable`` with the OS's reason when it cannot be)."""
        raise NotImplementedError

    def read(self, unit: int, function: int, address: int, count: int) -> list[int]:
        """The words of one read of holding (3) or input (4) registers; a LineError says why not."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _words(self, pdu_bytes: bytes, address: int, count: int) -> list[int]:
        pdu = DecodePDU(False).decode(pdu_bytes)
        if pdu is None:
            raise NoAnswer(f"undecodable answer reading {count} registers at {address}", garbled=True)
        if pdu.isError():
            code = getattr(pdu, "exception_code", 0)
            raise Refused(f"modbus exception {code} reading {count} registers at {address} "
                          f"(function {pdu_bytes[0] & 0x7F})", code)
        self.counts["answers"] += 1
        return list(pdu.registers)


class RtuLine(Line):
    """A serial RTU bus (see the module docstring for how answers are matched)."""

    def __init__(self, bus: Bus, timing: LineTiming | None = None):
        super().__init__(bus, timing)
        self._ser: serial.Serial | None = None
        self._framer = FramerRTU(DecodePDU(False))
        self._sniffed = bytearray()  # bytes seen outside our own exchanges: other masters' traffic
        self._last_rx = 0.0
        # unit -> what was seen on the line to and from it lately, in order (see ``_pending``)
        self._seen: dict[int, list[_Seen]] = {}
        self._unsettled: dict[tuple[int, int, int], dict[int, float]] = {}  # (unit, fn, count) -> {address: when}

    def open(self) -> None:
        if self._ser is not None:
            return
        b = self.bus
        s = serial.Serial()
        s.port, s.baudrate, s.bytesize, s.parity, s.stopbits = b.device, b.baudrate, b.bytesize, b.parity, b.stopbits
        s.timeout, s.write_timeout, s.exclusive = 0, 2.0, True
        try:
            s.open()
        except OSError as exc:  # pyserial's SerialException carries the errno
            raise Unavailable(why_not_open(b.device, exc)) from None
        self._ser = s

    def close(self) -> None:
        if self._ser is not None:
            try:
                self._ser.close()
            except Exception:  # noqa: BLE001 - closing a port that went away must not raise
                pass
            self._ser = None

    def read(self, unit: int, function: int, address: int, count: int) -> list[int]:
        self.open()
        shape = (unit, function, count)
        t_out = self.timing.timeout(count)
        self._check_settled(shape, address, t_out)
        frame = self._framer.buildFrame(_request_pdu(unit, function, address, count))
        self.counts["requests"] += 1
        sends: list[float] = []
        silent: list[float] = []  # sends that got no answer in time: their answers could still come, late
        what = f"{count} register{'' if count == 1 else 's'} at {address}"
        garbled = voided = 0
        for _attempt in range(self.retries + 1):
            self._settle(unit, t_out)
            if self._unpaired(unit, function):
                voided += 1  # another master's answer from this unit is still due: ours could not be told from it
                self.counts["voided"] += 1
                continue
            t0 = self._send(frame)
            sends.append(t0)
            rx = _Rx(unit, function, count, frame)
            self._receive(rx, t0 + t_out)
            if rx.answer is not None:
                self._absorb(rx, t0)
                if silent:
                    self._echo_watch(rx, silent[0], t0, t_out, shape, address)
                self._unsettled.get(shape, {}).pop(address, None)
                return self._words(bytes(rx.buf[rx.answer.start + 1:rx.answer.end - 2]), address, count)
            if rx.foreign:  # another master asked this unit before it answered us: whichever answer comes is void
                voided += 1
                self.counts["voided"] += 1
                self._absorb(rx, t0)
                self._listen(t0 + 2 * t_out)
                continue
            self._receive(rx, t0 + 2 * t_out)  # one timeout more before anything else is sent
            self._mark_unsettled(shape, address)
            self._absorb(rx, t0)
            if rx.answer is not None:
                self.counts["late"] += 1
                late = round((rx.t_answer - t0) * 1000)
                raise LateAnswer(f"answers after {late} ms; timeout {round(t_out * 1000)} ms (reading {what})")
            self._listen(t0 + 2 * t_out)
            silent.append(t0)
            g = rx.garbled()
            self.counts["garbled_bytes"] += g
            self.counts["silent" if not rx.buf else "garbled"] += 1
            garbled += bool(g)
        self._mark_unsettled(shape, address)
        tries = f"{len(sends)} {'try' if len(sends) == 1 else 'tries'}"
        if voided:
            raise OtherMaster(f"another master on the line is reading unit {unit}: its answers cannot be told "
                              f"from ours ({voided} of {self.retries + 1} attempts at reading {what} spoiled)")
        if garbled:
            raise NoAnswer(f"garbled answer reading {what}: bytes with a bad CRC or a collision, no valid frame "
                           f"({garbled} of {tries}, timeout {round(t_out * 1000)} ms)", garbled=True)
        raise NoAnswer(f"no answer reading {what} (timeout {round(t_out * 1000)} ms, {tries})")

    def _check_settled(self, shape: tuple[int, int, int], address: int, t_out: float) -> None:
        pending = self._unsettled.get(shape)
        if not pending:
            return
        now = time.monotonic()
        for a, t in list(pending.items()):
            if now - t > UNSETTLED_TIMEOUTS * t_out:
                del pending[a]
        others = [(a, t) for a, t in pending.items() if a != address]
        if others:
            a, t = others[0]
            self.counts["unsettled"] += 1
            raise Unsettled(f"not sent: the read of {shape[2]} registers at {a} of unit {shape[0]} went unanswered "
                            f"{now - t:.1f} s ago, and its late answer could not be told from this one's")

    def _mark_unsettled(self, shape: tuple[int, int, int], address: int) -> None:
        self._unsettled.setdefault(shape, {})[address] = time.monotonic()

    def _fd(self) -> int:
        assert self._ser is not None
        return self._ser.fileno()

    def _read_now(self) -> bytes:
        try:
            data = os.read(self._fd(), 4096)
        except BlockingIOError:
            return b""
        except OSError as exc:
            self.close()
            raise LineError(f"bus error: {self.bus.device}: {exc.strerror or exc}") from None
        if not data:
            self.close()
            raise LineError(f"bus error: {self.bus.device} hung up (adapter removed?)")
        self._last_rx = time.monotonic()
        return data

    def _wait(self, until: float) -> bool:
        """Wait for bytes until ``until``; True when some are waiting."""
        left = until - time.monotonic()
        if left <= 0:
            return False
        r, _, _ = select.select([self._fd()], [], [], left)
        return bool(r)

    def _receive(self, rx: _Rx, until: float) -> None:
        while rx.answer is None and not rx.foreign and self._wait(until):
            rx.feed(self._read_now(), time.monotonic())

    def _listen(self, until: float) -> None:
        """Read until ``until``, following other masters' traffic."""
        while self._wait(until):
            self._sniff(self._read_now())

    def _sniff(self, data: bytes) -> None:
        """Follow other masters' traffic: a request to a unit awaits its answer, which the unit sends
        in turn (one request at a time, in order); an answer is paired with the first request it fits."""
        self._sniffed += data
        buf, now = bytes(self._sniffed), time.monotonic()
        frames = rtu_frames(buf)
        for f in frames:
            seen = self._seen.setdefault(f.unit, [])
            if f.kind == "request" and not (f.function in (5, 6) and any(
                    e.request and e.function == f.function for e in self._pending(f.unit, now))):
                self.counts["foreign_requests"] += 1
                count = int.from_bytes(buf[f.start + 4:f.start + 6], "big") if f.function <= 4 else None
                size = None if count is None else (2 * count if f.function >= 3 else (count + 7) // 8)
                seen.append(_Seen(now, f.function, size, True, until=now + 2 * self.timing.timeout(count or 1)))
            else:  # an answer (a write's echo looks like its request)
                seen.append(_Seen(now, f.function, buf[f.start + 2] if f.kind == "answer" else None, False))
        if frames:
            del self._sniffed[:frames[-1].end]
        del self._sniffed[:-300]

    def _pending(self, unit: int, now: float) -> list[_Seen]:
        """The requests to ``unit`` whose answers may still come. The unit takes requests one at a
        time, in order: each answer is paired with the first earlier request of its shape still
        open. A request older than two timeouts is lost (garbled, ignored) and drops out, and the
        pairing is worked out again each time, so one lost request cannot shift it for long."""
        seen = self._seen.get(unit, [])
        keep = 2 * self.timing.timeout(125)  # no request is open longer; older answers pair with nothing open
        seen[:] = [e for e in seen if e.t > now - keep]
        open_: list[_Seen] = []
        for e in seen:
            if e.request:
                if e.until > now:
                    open_.append(e)
                continue
            for i, r in enumerate(open_):
                if r.function == e.function and (e.size is None or r.size is None or e.size == r.size):
                    del open_[i]
                    break
        return open_

    def _unpaired(self, unit: int, function: int) -> bool:
        """Whether another master's request to ``unit`` with this function still awaits its answer."""
        return any(e.function == function and not e.ours for e in self._pending(unit, time.monotonic()))

    def _absorb(self, rx: _Rx, t0: float) -> None:
        """Follow what else came in during an exchange. Unanswered, our request joins the requests
        awaiting an answer from the unit (ahead of another master's that came after it), so the
        answers that still come are paired in the order the unit takes the requests."""
        if rx.answer is None:
            t_out = self.timing.timeout(rx.count)
            self._seen.setdefault(rx.unit, []).append(
                _Seen(t0, rx.function, 2 * rx.count, True, ours=True, until=t0 + 2 * t_out))
            self._sniff(bytes(rx.buf[rx.echoed:]))
            return
        self._sniff(bytes(rx.buf[rx.echoed:rx.answer.start]))
        self._sniffed.clear()
        self._sniff(bytes(rx.buf[rx.answer.end:]))

    def _settle(self, unit: int, t_out: float) -> None:
        """Drain the input; wait for the inter-frame silence, and until the answers to another master's
        requests to this unit have passed (or two timeouts after them; at most two timeouts in all)."""
        gap = self.timing.silence()
        give_up = time.monotonic() + 2 * t_out + gap
        while True:
            while self._wait(time.monotonic() + 1e-4):
                self._sniff(self._read_now())
            now = time.monotonic()
            due = [e.until for e in self._pending(unit, now) if not e.ours]
            quiet_at = max([self._last_rx + gap, *due])
            if now >= quiet_at or now >= give_up:
                self._sniffed.clear()
                return
            if self._wait(min(quiet_at, give_up)):
                self._sniff(self._read_now())

    def _send(self, frame: bytes) -> float:
        """Send a frame; the time its last byte is on the wire."""
        assert self._ser is not None
        t = time.monotonic()
        try:
            self._ser.write(frame)
            self._ser.flush()
        except (serial.SerialException, OSError) as exc:
            self.close()
            raise LineError(f"bus error: cannot write to {self.bus.device}: {exc}") from None
        self.counts["sends"] += 1
        return max(time.monotonic(), t + len(frame) * self.timing.char_time)

    def _echo_watch(self, rx: _Rx, first: float, last: float, t_out: float, shape, address: int) -> None:
        """After a retry answered following a send that got no answer in time (at ``first``): if
        the answer was that send's, late, the retry's own answer (sent at ``last``) follows as
        late; listen for it before anything else is sent."""
        first_late = rx.t_answer - first
        until = last + first_late + t_out
        echo = _Rx(rx.unit, rx.function, rx.count)
        self._receive(echo, until)
        if echo.answer is None and not echo.foreign:
            self._sniff(bytes(echo.buf))  # no echo: the retry was answered
            return
        self._mark_unsettled(shape, address)
        self._absorb(echo, last)
        self._listen(until)
        what = f"{shape[2]} register{'' if shape[2] == 1 else 's'} at {address}"
        if echo.foreign:  # another master asked the unit the same: an echo could not be told from its answer
            self.counts["voided"] += 1
            raise OtherMaster(f"another master on the line is reading unit {rx.unit}: the answer to a retry "
                              f"reading {what} could not be checked")
        self.counts["late"] += 1
        raise LateAnswer(f"answers after {round(first_late * 1000)} ms; timeout {round(t_out * 1000)} ms "
                         f"(reading {what}: two answers to one request and its retry)")


class TcpLine(Line):
    """A Modbus TCP gateway or meter: answers matched by transaction id, unit, function and byte count."""

    def __init__(self, bus: Bus, timing: LineTiming | None = None):
        super().__init__(bus, timing)
        self._sock: socket.socket | None = None
        self._framer = FramerSocket(DecodePDU(False))
        self._tid = 0

    def open(self) -> None:
        if self._sock is not None:
            return
        try:
            s = socket.create_connection((self.bus.host, self.bus.port), timeout=self.timing.minimum)
        except OSError as exc:
            raise Unavailable(_os_reason(exc)) from None
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = s
        self.counts["connects"] += 1

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None

    def _fresh(self) -> None:
        """Open, or check the open connection: drain stale bytes (answers to timed-out sends), and
        open again when the other end closed it while idle."""
        self.open()
        assert self._sock is not None
        while select.select([self._sock], [], [], 0)[0]:
            try:
                data = self._sock.recv(4096)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.close()
                self.counts["closed_idle"] += 1
                self.open()
                return
            self.counts["stale_bytes"] += len(data)

    def read(self, unit: int, function: int, address: int, count: int) -> list[int]:
        t_out = self.timing.timeout(count)
        what = f"{count} register{'' if count == 1 else 's'} at {address}"
        self.counts["requests"] += 1
        closed = 0
        tries = 0
        while tries <= self.retries:
            self._fresh()
            self._tid = self._tid % 65535 + 1
            pdu = _request_pdu(unit, function, address, count)
            pdu.transaction_id = self._tid
            frame = self._framer.buildFrame(pdu)
            try:
                assert self._sock is not None
                self._sock.sendall(frame)
                self.counts["sends"] += 1
                t0 = time.monotonic()
                got = self._answer(self._tid, unit, function, count, t0 + t_out)
                late = None if got is not None else self._answer(self._tid, unit, function, count, t0 + 2 * t_out)
            except (ConnectionError, OSError) as exc:
                self.close()
                closed += 1
                self.counts["reconnects"] += 1
                if closed > 1 + self.retries:
                    raise LineError(f"connection to {self.bus.host}:{self.bus.port} closed on every request "
                                    f"({_os_reason(exc)})") from None
                continue  # the gateway closed it (idle, NAT): the same request over a new connection
            tries += 1
            if got is not None:
                return self._words(got, address, count)
            if late is not None:  # one timeout more on the same connection: the answer, late
                self.counts["late"] += 1
                self.close()
                raise LateAnswer(f"answers after {round((time.monotonic() - t0) * 1000)} ms; timeout "
                                 f"{round(t_out * 1000)} ms (reading {what})")
            self.counts["silent"] += 1
            self.close()  # the retry goes over a new connection (a forgotten NAT entry drops packets)
        raise NoAnswer(f"no answer reading {what} (timeout {round(t_out * 1000)} ms, {tries} "
                       f"{'try' if tries == 1 else 'tries'})")

    def _answer(self, tid: int, unit: int, function: int, count: int, until: float) -> bytes | None:
        """The PDU of the answer with this transaction id, unit, function and byte count, or None at ``until``."""
        assert self._sock is not None
        buf = b""
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return None
            if not select.select([self._sock], [], [], left)[0]:
                continue
            data = self._sock.recv(4096)
            if not data:
                raise ConnectionResetError(errno.ECONNRESET, "connection closed by the other end")
            buf += data
            while len(buf) >= 8:
                length = int.from_bytes(buf[4:6], "big")
                if int.from_bytes(buf[2:4], "big") != 0 or not 2 <= length <= 254:
                    self.counts["garbled_bytes"] += len(buf)
                    buf = b""
                    break
                if len(buf) < 6 + length:
                    break
                frame, buf = buf[:6 + length], buf[6 + length:]
                f_tid, f_unit, pdu = int.from_bytes(frame[:2], "big"), frame[6], frame[7:]
                if f_tid != tid:
                    self.counts["stray_frames"] += 1  # an answer to an earlier send
                    continue
                ok = f_unit == unit and (pdu[0] == function | 0x80 or (
                    pdu[0] == function and len(pdu) >= 2 and pdu[1] == 2 * count and len(pdu) == 2 + 2 * count))
                if ok:
                    return pdu
                self.counts["mismatched"] += 1  # our transaction id, but not an answer to this request


def open_line(bus: Bus) -> Line:
    """The line of a bus (not opened yet: the first read opens it)."""
    return RtuLine(bus) if bus.type == "serial" else TcpLine(bus)


# -- why a port cannot be opened -------------------------------------------------------------------

def _os_reason(exc: OSError) -> str:
    e = exc.errno
    if e:
        return f"{os.strerror(e)} ({errno.errorcode.get(e, e)})"
    return str(exc) or type(exc).__name__


def why_not_open(device: str, exc: OSError) -> str:
    """The OS's reason a serial port cannot be opened, with what to do about it."""
    e = exc.errno
    if e == errno.ENOENT:
        return "no such device (ENOENT): is the RS-485 adapter plugged in? `ls -l /dev/serial/by-id/` lists the adapters present"
    if e in (errno.EACCES, errno.EPERM):
        try:
            st = os.stat(device)
            group, mode = _group_name(st.st_gid), f"{st.st_mode & 0o777:04o}"
        except OSError:
            group, mode = "dialout", "?"
        user = _user_name(os.geteuid())
        return (f"permission denied ({errno.errorcode[e]}): the port is group {group}, mode {mode}; "
                f"add the user {user} to group {group} (usermod -aG {group} {user}), then restart the service")
    if e in (errno.EAGAIN, errno.EBUSY):
        holders = _holders(device)
        by = f" by {', '.join(holders)}" if holders else " by another process"
        return f"in use{by}: is the service running? (stop it before `read`: systemctl stop intellimeter-agent)"
    return _os_reason(exc) if e else str(exc)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _holders(device: str, limit: int = 3) -> list[str]:
    """Other processes that hold ``device`` open: ``pid 812 (python3)`` (those this user may see)."""
    try:
        target = os.path.realpath(device)
        pids = [p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]
    except OSError:
        return []
    out = []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == target for fd in fds):
                with open(f"/proc/{pid}/comm") as f:
                    out.append(f"pid {pid} ({f.read().strip()})")
        except OSError:
            continue
        if len(out) >= limit:
            break
    return out

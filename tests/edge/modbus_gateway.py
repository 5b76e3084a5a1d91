"""A Modbus TCP gateway's misbehaviours, as a proxy in front of any Modbus TCP server.

``GatewayProxy(upstream_port, mode=..., idle=...)`` listens on 127.0.0.1, port 0 (``.port``
says which), and forwards each client connection to the server:

* ``close``     - a connection idle for ``idle`` seconds is closed by the gateway (FIN), as many
                  gateways, NATs and firewalls do.
* ``blackhole`` - a connection idle for ``idle`` seconds is forgotten: bytes the client sends on
                  it are dropped without a word (a NAT entry that expired), the socket stays open.
* ``reset``     - a connection idle for ``idle`` seconds is reset (RST) when the next request
                  arrives on it, which is not forwarded (a gateway that dropped its state: the
                  client learns only after sending).
* ``duplicate`` - every answer is sent twice, the copy ``dup_delay`` seconds later (a gateway
                  that repeats an answer: the copy carries the earlier transaction id).
* ``delay``     - every answer is held ``delay`` seconds before it is sent.

``closed_idle``, ``blackholed``, ``connections`` and ``duplicated`` count what happened.
Nothing here imports ``edge_agent``.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

MODES = ("close", "blackhole", "reset", "duplicate", "delay")


class GatewayProxy:
    def __init__(self, upstream_port: int, mode: str = "close", idle: float = 0.3, dup_delay: float = 0.03,
                 delay: float = 0.0):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.upstream = ("127.0.0.1", upstream_port)
        self.mode, self.idle, self.dup_delay, self.delay = mode, idle, dup_delay, delay
        self.connections = self.closed_idle = self.blackholed = self.resets = self.duplicated = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._srv = socket.create_server(("127.0.0.1", 0))
        self._srv.settimeout(0.1)
        self.port = self._srv.getsockname()[1]
        self._conns: list[dict] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True),
                         threading.Thread(target=self._watch, daemon=True)]
        for t in self._threads:
            t.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                c, _ = self._srv.accept()
            except (TimeoutError, OSError):
                continue
            try:
                u = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                c.close()
                continue
            conn = {"client": c, "server": u, "last": time.monotonic(), "dead": False, "hole": False}
            with self._lock:
                self.connections += 1
                self._conns.append(conn)
            threading.Thread(target=self._pump, args=(conn, c, u, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(conn, u, c, False), daemon=True).start()

    def _pump(self, conn: dict, src: socket.socket, dst: socket.socket, upward: bool) -> None:
        while not self._stop.is_set() and not conn["dead"]:
            try:
                src.settimeout(0.1)
                data = src.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            if conn["hole"]:
                continue  # a forgotten connection: dropped without a word
            if upward and self.mode == "reset" and time.monotonic() - conn["last"] >= self.idle:
                with self._lock:
                    self.resets += 1
                src.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                break  # closed with linger 0: the client gets a reset instead of an answer
            conn["last"] = time.monotonic()
            try:
                if not upward and self.mode == "delay":
                    time.sleep(self.delay)
                dst.sendall(data)
                if not upward and self.mode == "duplicate":
                    time.sleep(self.dup_delay)
                    dst.sendall(data)
                    with self._lock:
                        self.duplicated += 1
            except OSError:
                break
        self._end(conn)

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            now = time.monotonic()
            with self._lock:
                conns = list(self._conns)
            for conn in conns:
                if conn["dead"] or conn["hole"] or now - conn["last"] < self.idle:
                    continue
                if self.mode == "close":
                    with self._lock:
                        self.closed_idle += 1
                    self._end(conn)
                elif self.mode == "blackhole":
                    conn["hole"] = True
                    with self._lock:
                        self.blackholed += 1

    def _end(self, conn: dict) -> None:
        if conn["dead"]:
            return
        conn["dead"] = True
        for s in (conn["client"], conn["server"]):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(2)
        self._srv.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            self._end(conn)

"""Loopback ports for the local stack, the tests and the benchmarks, outside the kernel's ephemeral range.

A port found free by bind(0) comes from the ephemeral range (Linux: /proc/sys/net/ipv4/ip_local_port_range),
which every outgoing connection on the machine also draws from: between the probe and the server's
own bind, another process's connection can take it. So a server that is ours binds port 0 itself and
reports the port it got; where a port must be chosen first (a process of another's making, a
configuration written before the server starts), free_port() picks one outside that range, where
only servers that chose it deliberately can be, and the caller retries on EADDRINUSE.
"""
import random
import socket

LOWEST = 10000          # below: the well-known and registered ports people run things on (8000, 5000, 5432...)
HIGHEST = 65535
_FALLBACK = (32768, 60999)


def ephemeral_range():
    """(first, last) port the kernel hands to outgoing connections and bind(0)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as handle:
            first, last = (int(part) for part in handle.read().split())
        return first, last
    except (OSError, ValueError):
        return _FALLBACK


def candidates():
    """Every port free_port() may pick, in random order."""
    first, last = ephemeral_range()
    ports = [p for p in range(LOWEST, HIGHEST + 1) if not first <= p <= last]
    random.shuffle(ports)
    return ports


def bindable(port, host="127.0.0.1"):
    """True when a server could bind the port now: nothing listens on it nor holds it for a connection.

    Probed with SO_REUSEADDR, as the stack's servers bind (http.server, werkzeug, pymodbus): connections a
    stopped server closed wait on its port in TIME_WAIT for a minute, which a plain bind counts as taken
    and a server's does not (a make run stopped and started again would have moved to other ports).
    """
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(count=1):
    """The first of `count` consecutive loopback ports outside the ephemeral range, each bindable now.

    Nothing holds them after this returns: a server that then fails with EADDRINUSE (another
    session chose the same port at the same moment) should be started on another one.
    """
    first, last = ephemeral_range()
    for port in candidates():
        span = range(port, port + count)
        if span[-1] <= HIGHEST and not any(first <= p <= last for p in span) and all(bindable(p) for p in span):
            return port
    raise RuntimeError(f"no {count} free consecutive loopback ports outside {first}-{last}")


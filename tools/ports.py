"""Loopback ports for the local stack, the tests and the benchmarks."""
import socket


def free_port():
    """A loopback port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]

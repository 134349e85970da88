"""Free loopback ports for the servers a stack starts (tests, benchmarks, the edge stack on free ports)."""

import secrets
import socket
from pathlib import Path


def _ports_to_pick() -> range:
    """Ports below the kernel's ephemeral range. The kernel gives ports of that range to outgoing connections, so
    a free one picked there (as binding port 0 does) may become some connection's source port before the server
    meant to bind it starts; daprd then exits with "could not listen on any endpoint"."""
    try:
        lowest = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        lowest = 32768  # Linux's default
    return range(max(1024, lowest - 12000), lowest)


_PORTS = _ports_to_pick()
_handed_out: set[int] = set()  # a port is free until its server binds it: never hand it out twice


def free_port() -> int:
    """A loopback port that nothing listens on, outside the ephemeral range when there is room below it."""
    if len(_PORTS) < 1000:  # an unusual range: let the kernel choose
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]
    while True:
        port = secrets.choice(_PORTS)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port

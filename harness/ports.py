"""Free TCP ports on the loopback interface, for servers started on demand."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on now (another process could take it before the caller binds it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

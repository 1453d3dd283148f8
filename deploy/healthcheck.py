"""The container's health probe: is this Lapse process answering on its health path?

One image runs both ``lapse api`` and ``lapse worker``, and a container runs one of them, so the probe asks
the API's port and then the worker's ops port, both on the loopback, and is healthy when either answers
200. Standard library only: the image has no curl, and importing Lapse's settings would cost more than the
probe itself. ``python healthcheck.py /readyz`` asks readiness instead of liveness (``/healthz``).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def ports() -> list[int]:
    """The API's port, then the worker's ops port (0 = off), as the process itself reads them."""
    found: list[int] = []
    for name, default in (("LAPSE_API_PORT", "8000"), ("LAPSE_OPS_PORT", "9464")):
        value = os.environ.get(name, default).strip()
        if value.isdigit() and int(value) > 0:
            found.append(int(value))
    return found


def answers(port: int, path: str, timeout: float = 2.0) -> str | None:
    """None when ``path`` answers 200 on ``port``; else what went wrong."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return None if response.status == 200 else f"{port}{path} answered {response.status}"
    except urllib.error.HTTPError as error:
        return f"{port}{path} answered {error.code}"
    except OSError as error:
        return f"{port}{path}: {error}"


def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else "/healthz"
    problems: list[str] = []
    for port in ports():
        problem = answers(port, path)
        if problem is None:
            return 0
        problems.append(problem)
    print("unhealthy: " + ("; ".join(problems) or "no port to ask (LAPSE_API_PORT and LAPSE_OPS_PORT)"))
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))

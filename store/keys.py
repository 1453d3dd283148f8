"""Key material Lapse keeps outside its app DB: key files made on first use, and ``kid:base64key`` rings.

The credential seal (``secret.key``), the audit MAC (``audit.key``) and the payload codec (``codec.key``)
each keep their key this way; their messages never quote a key.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path

_KID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def read_or_create_key_file(path: Path, make: Callable[[], str]) -> str:
    """The key file's text; made with ``make()`` (mode 0600) if it does not exist yet.

    The new key is written beside ``path`` and linked into place, so of processes racing to make it,
    all keep the first one.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-")  # mkstemp: 0600
        try:
            with os.fdopen(descriptor, "w") as file:
                file.write(make() + "\n")
            with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
                os.link(temporary, path)
        finally:
            os.unlink(temporary)
    return path.read_text()


def new_ring_entry(prefix: str) -> str:
    """A new ``kid:base64key`` entry holding a random 256-bit key."""
    return f"{prefix}{secrets.token_hex(4)}:{base64.b64encode(secrets.token_bytes(32)).decode()}"


def parse_ring(
    text: str, *, source: str, error: type[ValueError], check: Callable[[str, bytes], str | None]
) -> list[tuple[str, bytes]]:
    """``kid:base64key`` entries separated by commas or line breaks (``#`` starts a comment), in order.

    ``check(kid, key)`` says what is wrong with a key (its length, say), or None; every problem is
    raised as ``error`` naming ``source`` and the entry, never the key.
    """
    ring: list[tuple[str, bytes]] = []
    entries = [e.strip() for e in re.split(r"[,\n]", text) if e.strip() and not e.strip().startswith("#")]
    for number, entry in enumerate(entries, start=1):
        kid, colon, encoded = entry.partition(":")
        kid = kid.strip()
        if not colon or not _KID.fullmatch(kid):
            raise error(f"{source}: entry {number} is not `kid:base64key` (kid: letters, digits, . _ -)")
        try:
            key = base64.b64decode(encoded.strip().replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            raise error(f"{source}: the key of {kid!r} is not base64") from None
        why = check(kid, key)
        if why is not None:
            raise error(f"{source}: {why}")
        if any(known == kid for known, _ in ring):
            raise error(f"{source}: key id {kid!r} appears twice")
        ring.append((kid, key))
    return ring

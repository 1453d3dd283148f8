"""What makes the audit log tamper-evident from outside the app DB: the HMAC key ring and the head checkpoint.

Each audit event carries an HMAC-SHA256 over its content and the previous event's MAC, made with a key
the app DB does not hold (``LAPSE_AUDIT_KEY``, else ``audit.key`` in the data dir); the event records
the id of the key it was MACed with, so keys can be rotated while old events stay verifiable. After each
commit that appends events, the chain's head (sequence number and MAC) is written to ``audit.head`` in
the data dir, so deleting the newest events, or all of them, no longer leaves a chain that verifies.

Whoever can write the app DB but not the data dir (or the environment holding the key) can no longer
edit, remove or forge events unnoticed. Identical refusals are coalesced here too, so that a script
hammering the API cannot fill the log (see :class:`RefusalCoalescer`).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from access.checkpoint import Head
from access.types import AuditEntry
from store.keys import new_ring_entry, parse_ring, read_or_create_key_file
from store.settings import Settings

KEY_FILE = "audit.key"
HEAD_FILE = "audit.head"
LEGACY_KEY_ID = ""
"""The key id of events written before migration 0005, chained by an unkeyed SHA-256."""


class AuditKeyError(ValueError):
    """The audit key setting or file is malformed (the message never quotes a key)."""


class AuditHeadError(ValueError):
    """The head checkpoint file exists but cannot be read."""


@dataclass(frozen=True)
class AuditKeyring:
    """The audit MAC keys by id; ``current`` MACs new events, every key verifies."""

    current: str
    keys: Mapping[str, bytes] = field(repr=False)

    def mac(self, key_id: str, body: bytes) -> str:
        return hmac.new(self.keys[key_id], body, hashlib.sha256).hexdigest()

    def __repr__(self) -> str:  # never print a key
        return f"AuditKeyring(current={self.current!r}, ids={sorted(self.keys)!r})"


def generate_key(kid: str | None = None) -> str:
    """A new ``kid:base64key`` entry (256-bit key)."""
    entry = new_ring_entry("a")
    return f"{kid}:{entry.partition(':')[2]}" if kid else entry


def parse_keys(text: str, *, source: str) -> AuditKeyring:
    """``kid:base64key`` entries separated by commas or line breaks; the first one MACs new events."""

    def check(kid: str, key: bytes) -> str | None:
        return f"the key of {kid!r} is {len(key)} bytes; an audit key has at least 32" if len(key) < 32 else None

    ring = parse_ring(text, source=source, error=AuditKeyError, check=check)
    if not ring:
        raise AuditKeyError(
            f"{source} holds no key; make one with `python -c 'import store.audit as a; print(a.generate_key())'`"
        )
    return AuditKeyring(ring[0][0], dict(ring))


def load_keyring(settings: Settings) -> AuditKeyring:
    """``LAPSE_AUDIT_KEY``, else ``audit.key`` in the data dir, created (mode 0600) on first use."""
    if settings.audit_key is not None:
        return parse_keys(settings.audit_key.get_secret_value(), source="LAPSE_AUDIT_KEY")
    path = settings.data_dir / KEY_FILE
    return parse_keys(read_or_create_key_file(path, generate_key), source=str(path))


# --- the head checkpoint ---------------------------------------------------------------------


class HeadFile:
    """``audit.head``: a JSON file holding one head per app DB (by its URL, password hidden).

    Written atomically (a temporary file renamed over it) and only forwards: a writer that committed
    earlier but checkpoints later never moves the head back. A head lagging behind the DB (a crash
    between commit and checkpoint, another host's writes) is fine: it is a lower bound. So commits only
    note their head, and a background thread writes the newest at most every ``FLUSH_EVERY`` seconds
    (and at exit, and before this process reads the file): writing the file on every commit was a fifth
    of a busy worker's CPU.
    """

    FLUSH_EVERY = 0.5
    _thread_lock = threading.Lock()

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pending: dict[str, Head] = {}
        self._pending_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._flusher: threading.Thread | None = None

    def advance(self, chain: str, head: Head) -> None:
        """Note a committed head; it reaches the file within ``FLUSH_EVERY`` seconds."""
        with self._pending_lock:
            current = self._pending.get(chain)
            if current is None or head.seq > current.seq:
                self._pending[chain] = head
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_forever, name="audit-head", daemon=True)
                self._flusher.start()
                atexit.register(self.flush)
        self._wake.set()

    def flush(self) -> None:
        """Write the heads noted so far (forwards only). Held while writing, so that a reader flushing
        first never finds the file between the background thread taking a head and writing it."""
        with self._flush_lock:
            with self._pending_lock:
                pending, self._pending = self._pending, {}
            for chain, head in pending.items():
                self._write(chain, head)

    def _flush_forever(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            try:
                self.flush()
            except Exception as error:  # the events are committed; a lagging head is only a weaker check
                logging.getLogger(__name__).warning("could not checkpoint the audit head to %s: %s", self.path, error)
            time.sleep(self.FLUSH_EVERY)

    def read(self, chain: str) -> Head | None:
        self.flush()
        heads = self._read_all()
        raw = heads.get(chain)
        if raw is None:
            return None
        try:
            return Head(seq=int(raw["seq"]), mac=str(raw["mac"]), key_id=str(raw["key_id"]), at=str(raw.get("at", "")))
        except (KeyError, TypeError, ValueError):
            raise AuditHeadError(f"{self.path}: the checkpoint of {chain} is malformed") from None

    def _write(self, chain: str, head: Head) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with self._thread_lock, open(lock_path, "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                try:
                    heads = self._read_all()
                except AuditHeadError:
                    heads = {}  # overwrite garbage with a true head; verify reported it meanwhile
                current = heads.get(chain)
                if isinstance(current, dict) and int(current.get("seq", 0)) >= head.seq:
                    return
                heads[chain] = {"seq": head.seq, "mac": head.mac, "key_id": head.key_id, "at": head.at}
                descriptor, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".audit-head-")
                try:
                    with os.fdopen(descriptor, "w") as file:
                        json.dump({"version": 1, "heads": heads}, file, indent=1, sort_keys=True)
                    os.replace(temporary, self.path)
                except BaseException:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(temporary)
                    raise
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def _read_all(self) -> dict[str, Any]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(text)
            heads = data["heads"]
            if not isinstance(heads, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise AuditHeadError(f"{self.path} is not a Lapse audit checkpoint") from None
        return heads


@dataclass(frozen=True)
class AuditConfig:
    keyring: AuditKeyring
    head: HeadFile


_configs: dict[tuple[str, str], AuditConfig] = {}
_configs_lock = threading.Lock()


def audit_config(settings: Settings) -> AuditConfig:
    """The key ring and head file for these settings (loaded once per data dir and key setting)."""
    secret = settings.audit_key.get_secret_value() if settings.audit_key else ""
    cache_key = (str(settings.data_dir.resolve()), hashlib.sha256(secret.encode()).hexdigest())
    with _configs_lock:
        config = _configs.get(cache_key)
        if config is None:
            config = AuditConfig(load_keyring(settings), HeadFile(settings.data_dir / HEAD_FILE))
            _configs[cache_key] = config
        return config


# --- coalescing refusals --------------------------------------------------------------------


@dataclass
class _Window:
    closes: float
    first_at: datetime
    entry: AuditEntry
    repeats: int = 0
    last_at: datetime | None = None


class RefusalCoalescer:
    """Bounds the audit events a stream of identical refusals writes, without leaving any unaccounted for.

    The first refusal of a kind (same actor, action, target and reason) is written at once; identical
    ones within ``window`` seconds are only counted, and written as one event with their count when the
    window closes (the next refusal after it, the flusher, or the process ending). A caller hammering
    one refusal writes at most two events per window instead of one per call.
    """

    MAX_OPEN = 10_000

    def __init__(self, on_first_repeat: Callable[[], None] | None = None) -> None:
        self._on_first_repeat = on_first_repeat
        """Called when a window gets its first repeat, i.e. now has an event to write when it closes."""
        self._lock = threading.Lock()
        # Per app DB, in the order the windows opened (so the expired ones are always at the front).
        self._windows: dict[str, dict[tuple[str, str, str, str], _Window]] = {}

    def admit(self, url: str, entry: AuditEntry, window: float, now: float) -> list[AuditEntry]:
        """The events to write now for this refusal (possibly none)."""
        key = (entry.actor, entry.action, entry.target, entry.reason)
        at = entry.at or datetime.now(UTC)
        with self._lock:
            windows = self._windows.setdefault(url, {})
            due = self._close(windows, now)
            open_ = windows.get(key)
            if open_ is not None:
                open_.repeats += 1
                open_.last_at = at
                if open_.repeats == 1 and self._on_first_repeat is not None:
                    self._on_first_repeat()
                return due
            if len(windows) >= self.MAX_OPEN:  # memory bound: close the oldest tenth early
                due += self._close(windows, float("inf"), limit=self.MAX_OPEN // 10)
            windows[key] = _Window(closes=now + window, first_at=at, entry=entry)
            return [*due, entry.model_copy(update={"at": at})]

    def due(self, now: float, *, everything: bool = False) -> dict[str, list[AuditEntry]]:
        """The summaries of closed windows, by app DB URL (of all open windows with ``everything``)."""
        with self._lock:
            result: dict[str, list[AuditEntry]] = {}
            for url, windows in list(self._windows.items()):
                events = self._close(windows, float("inf") if everything else now)
                if events:
                    result[url] = events
                if not windows:
                    del self._windows[url]
            return result

    def next_deadline(self) -> float | None:
        """When the first window with repeats not yet written closes."""
        with self._lock:
            pending = [w.closes for ws in self._windows.values() for w in ws.values() if w.repeats]
            return min(pending) if pending else None

    def _close(
        self, windows: dict[tuple[str, str, str, str], _Window], now: float, limit: int | None = None
    ) -> list[AuditEntry]:
        due: list[AuditEntry] = []
        closed = 0
        while windows and (limit is None or closed < limit):
            key, open_ = next(iter(windows.items()))
            if now < open_.closes:
                break
            del windows[key]
            closed += 1
            if open_.repeats:
                due.append(self._summary(open_))
        return due

    @staticmethod
    def _summary(window: _Window) -> AuditEntry:
        last_at = window.last_at or window.first_at
        return window.entry.model_copy(
            update={
                "at": last_at,
                "details": {
                    **window.entry.details,
                    "count": window.repeats,
                    "coalesced": "identical refusals after the first, which has its own event",
                    "first_at": window.first_at.isoformat(),
                    "last_at": last_at.isoformat(),
                },
            }
        )

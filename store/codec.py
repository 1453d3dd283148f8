"""Authenticated Temporal payloads: every payload Lapse hands to Temporal is encrypted with AES-256-GCM.

Whoever can reach the Temporal frontend can read and write workflow histories; without the key they
can neither read a justification nor craft an input (a plan with no steps, an approval "from" someone,
an admin flag) that a Lapse worker or the API would accept.

An encoded payload is the original payload (metadata and data, serialised) sealed under the first key;
its outer metadata says which key (``lapse-kid``). The whole outer metadata is the AEAD's associated
data, so no field of it can be changed, added or removed.

The codec does not bind a payload to its workflow (the SDK's serialization context): that path made
every workflow task about five times slower (bench/RESULTS.md). The binding that matters is in the
messages instead: every decision, cancel, revoke and extension names its request, and the workflow
refuses one naming another, so bob's sealed approval of request A cannot be replayed into request B.

Not used by workflow code: the SDK applies the codec outside the sandbox.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    PayloadCodec,
)

from store.keys import new_ring_entry, parse_ring, read_or_create_key_file
from store.settings import Settings

ENCODING = b"binary/lapse-aesgcm-v1"
REJECTED = b"binary/lapse-rejected"
"""What a quarantining codec decodes a refused payload to: no payload converter reads it."""
KID = "lapse-kid"
KEY_FILE = "codec.key"
NONCE_BYTES = 12
_AAD_PREFIX = b"lapse-codec-v1\x00"
log = logging.getLogger("lapse.codec")


class PayloadRejected(ValueError):
    """A payload that no holder of the key produced for this place: plaintext, tampered, unknown key, misplaced."""


class CodecKeyError(ValueError):
    """The configured codec keys cannot be used (the message never contains key material)."""


@dataclass(frozen=True)
class CodecKey:
    kid: str
    key: bytes

    def __repr__(self) -> str:  # never print the key
        return f"CodecKey(kid={self.kid!r})"


def generate_key(kid: str | None = None) -> str:
    """A new ``kid:base64key`` entry (256-bit key)."""
    entry = new_ring_entry("k")
    return f"{kid}:{entry.partition(':')[2]}" if kid else entry


def parse_keys(text: str, *, source: str = "LAPSE_CODEC_KEY") -> list[CodecKey]:
    """``kid:base64key`` entries separated by commas or line breaks; the first one encrypts."""

    def check(kid: str, key: bytes) -> str | None:
        return f"the key of {kid!r} is {len(key)} bytes, not 32 (AES-256)" if len(key) != 32 else None

    keys = [CodecKey(kid, key) for kid, key in parse_ring(text, source=source, error=CodecKeyError, check=check)]
    if not keys:
        raise CodecKeyError(f"{source} holds no key")
    return keys


def codec_keys(settings: Settings) -> list[CodecKey]:
    """``codec_key``, else ``codec_key_file``, else ``codec.key`` in the data dir, created (mode 0600) on first use."""
    if settings.codec_key is not None:
        return parse_keys(settings.codec_key.get_secret_value())
    if settings.codec_key_file is not None:
        try:
            text = settings.codec_key_file.read_text()
        except OSError as error:
            raise CodecKeyError(f"LAPSE_CODEC_KEY_FILE {settings.codec_key_file}: {error.strerror}") from None
        return parse_keys(text, source=str(settings.codec_key_file))
    path = settings.data_dir / KEY_FILE
    return parse_keys(read_or_create_key_file(path, generate_key), source=str(path))


def _aad(metadata: Mapping[str, bytes]) -> bytes:
    """The outer metadata, canonical and length-prefixed: every entry is bound to the ciphertext."""
    parts = [_AAD_PREFIX]
    for name in sorted(metadata):
        value = metadata[name]
        parts += [struct.pack(">I", len(name)), name.encode(), struct.pack(">I", len(value)), value]
    return b"".join(parts)


class LapseCodec(PayloadCodec):
    """AES-256-GCM over whole payloads, keys by id; see the module's docstring.

    ``accept_plaintext`` lets unencrypted payloads through on decode (the migration window for runs
    started before the codec); encoding always encrypts.

    By default a refused payload raises :class:`PayloadRejected`. With ``quarantine`` (what workers and
    clients use) it decodes to a :data:`REJECTED` payload instead, which no converter can read: the one
    input that carried it fails on its own — a forged update is rejected, a forged signal dropped, a
    forged start input fails every workflow task so the run makes no progress — rather than failing the
    whole workflow task, which would let one forged update wedge a genuine run.
    """

    def __init__(
        self,
        keys: Sequence[CodecKey],
        *,
        accept_plaintext: bool = False,
        quarantine: bool = False,
    ) -> None:
        if not keys:
            raise CodecKeyError("the payload codec needs at least one key")
        self._keys = list(keys)
        self._ciphers = {k.kid: AESGCM(k.key) for k in keys}
        self.accept_plaintext = accept_plaintext
        self.quarantine = quarantine

    @property
    def key_ids(self) -> list[str]:
        return [k.kid for k in self._keys]

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.seal(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        if not self.quarantine:
            return [self.open(p) for p in payloads]
        decoded = []
        for payload in payloads:
            try:
                decoded.append(self.open(payload))
            except PayloadRejected as error:
                log.warning("%s", error)
                decoded.append(Payload(metadata={"encoding": REJECTED, "lapse-reason": str(error).encode()}))
        return decoded

    def seal(self, payload: Payload) -> Payload:
        primary = self._keys[0]
        metadata = {"encoding": ENCODING, KID: primary.kid.encode()}
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[primary.kid].encrypt(nonce, payload.SerializeToString(), _aad(metadata))
        return Payload(metadata=metadata, data=nonce + sealed)

    def open(self, payload: Payload) -> Payload:
        metadata = dict(payload.metadata)
        if metadata.get("encoding") != ENCODING:
            if self.accept_plaintext:
                return payload
            encoding = metadata.get("encoding", b"").decode(errors="replace")[:60] or "none"
            raise PayloadRejected(
                f"refused an unencrypted payload (encoding {encoding!r}): it was not made with Lapse's codec key "
                "(runs started before the codec need LAPSE_CODEC_ACCEPT_PLAINTEXT during the migration)"
            )
        kid = metadata.get(KID, b"").decode(errors="replace")
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise PayloadRejected(f"refused a payload sealed with key {kid[:64]!r}, which is not configured")
        nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
        try:
            plain = cipher.decrypt(nonce, sealed, _aad(metadata))
            inner = Payload.FromString(plain)
        except (InvalidTag, ValueError, DecodeError):
            raise PayloadRejected("refused a payload that fails authentication (tampered or forged)") from None
        return inner


def is_sealed(payload: Payload) -> bool:
    return payload.metadata.get("encoding") == ENCODING

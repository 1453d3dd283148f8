"""The Temporal remote codec endpoint, so the Temporal Web UI shows decoded payloads to admins.

The Web UI (``temporal server start-dev --ui-codec-endpoint``, or the UI's "Codec Server" setting)
posts ``{"payloads": [{"metadata": {k: base64}, "data": base64}]}`` to ``/codec/decode`` and gets the
same shape back: admins only, and browsers from the Web UI's origin only. There is no ``/codec/encode``:
only the API seals input, so an admin cannot seal a decision "from" someone else.
"""

from __future__ import annotations

import base64
import binascii

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field, model_validator
from temporalio.api.common.v1 import Payload

from starter.api.deps import AdminUser, SettingsDep
from starter.api.problems import Problem
from store.codec import CodecKeyError, LapseCodec, PayloadRejected, codec_keys
from store.settings import Settings

router = APIRouter(prefix="/codec", tags=["codec"])

MAX_PAYLOADS = 1000
MAX_TOTAL_CHARS = 8 * 1024 * 1024
"""Temporal caps one payload at 2 MB by default; one UI call carries one event's or memo's payloads."""


class PayloadJSON(BaseModel):
    metadata: dict[str, str] = {}
    """Each value base64-encoded, as in Temporal's proto JSON."""
    data: str = ""
    """Base64-encoded."""


class PayloadsJSON(BaseModel):
    payloads: list[PayloadJSON] = []


class PayloadsIn(PayloadsJSON):
    payloads: list[PayloadJSON] = Field(default=[], max_length=MAX_PAYLOADS)

    @model_validator(mode="after")
    def _bounded(self) -> PayloadsIn:
        size = sum(len(p.data) + sum(len(k) + len(v) for k, v in p.metadata.items()) for p in self.payloads)
        if size > MAX_TOTAL_CHARS:
            raise ValueError(f"the payloads exceed {MAX_TOTAL_CHARS} characters")
        return self


def ui_origins(settings: Settings) -> list[str]:
    """The browser origins allowed to call the codec: the configured ones, else the embedded Web UI's."""
    port = settings.temporal_ui_port
    return settings.codec_ui_origins or [f"http://localhost:{port}", f"http://127.0.0.1:{port}"]


def _allow_origin(request: Request, response: Response, settings: Settings) -> bool:
    origin = request.headers.get("origin")
    response.headers["Vary"] = "Origin"
    if origin is None or origin not in ui_origins(settings):
        return False
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Allow-Credentials"] = "true"
    return True


def _codec(settings: Settings) -> LapseCodec:
    try:
        # Plain payloads (runs from before the codec) are shown as they are stored; forged seals are refused.
        return LapseCodec(codec_keys(settings), accept_plaintext=True)
    except CodecKeyError as error:
        raise Problem(503, f"the payload codec is not configured: {error}") from None


def _to_protos(body: PayloadsIn) -> list[Payload]:
    payloads = []
    for index, item in enumerate(body.payloads):
        try:
            payloads.append(
                Payload(
                    metadata={k: base64.b64decode(v, validate=True) for k, v in item.metadata.items()},
                    data=base64.b64decode(item.data, validate=True),
                )
            )
        except (binascii.Error, ValueError):
            raise Problem(422, "metadata values and data must be base64", field=f"payloads.{index}") from None
    return payloads


def _to_json(payloads: list[Payload]) -> PayloadsJSON:
    return PayloadsJSON(
        payloads=[
            PayloadJSON(
                metadata={k: base64.b64encode(v).decode() for k, v in p.metadata.items()},
                data=base64.b64encode(p.data).decode(),
            )
            for p in payloads
        ]
    )


@router.options("/{operation}", include_in_schema=False)
def preflight(operation: str, request: Request, settings: SettingsDep) -> Response:
    """CORS preflight: answered for the Web UI's origin only."""
    response = Response(status_code=204)
    if operation == "decode" and _allow_origin(request, response, settings):
        response.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
        # The Web UI sends X-Namespace; payloads are not bound to one, so it is allowed and not read.
        response.headers["Access-Control-Allow-Headers"] = "Content-Type, X-Namespace, Authorization"
        response.headers["Access-Control-Max-Age"] = "600"
    return response


@router.post("/decode")
async def decode(
    body: PayloadsIn,
    _: AdminUser,
    settings: SettingsDep,
    request: Request,
    response: Response,
) -> PayloadsJSON:
    """Decrypt payloads for display (admins): what the Temporal Web UI calls."""
    _allow_origin(request, response, settings)
    codec = _codec(settings)
    decoded = []
    for index, payload in enumerate(_to_protos(body)):
        try:
            decoded.append(codec.open(payload))
        except PayloadRejected as error:
            raise Problem(422, str(error), field=f"payloads.{index}") from None
    return _to_json(decoded)

"""Authenticated Temporal payloads (issue 8, finding 4): the payload codec, its keys, its endpoint, and
a workflow started by a client without the key going nowhere."""

from __future__ import annotations

import asyncio
import base64
import itertools
import stat
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from access import names
from access.requests import AccessRequestInput
from starter.api.app import create_app
from store.codec import (
    ENCODING,
    KID,
    REJECTED,
    CodecKeyError,
    LapseCodec,
    PayloadRejected,
    codec_keys,
    generate_key,
    parse_keys,
)
from store.settings import Settings
from store.temporal import data_converter
from tests.conftest import TEST_CODEC_KEY, Api, FakeTarget
from tests.support import eventually

JUSTIFICATION = "fixing INC-4711 in the payments ledger, see runbook"


def _codec(spec: str = TEST_CODEC_KEY, **kwargs: Any) -> LapseCodec:
    return LapseCodec(parse_keys(spec), **kwargs)


def _payload(text: str = JUSTIFICATION) -> Payload:
    return pydantic_data_converter.payload_converter.to_payloads([{"justification": text}])[0]


# --- the codec ---------------------------------------------------------------------------------


async def test_round_trip_hides_the_payload_and_its_metadata() -> None:
    codec = _codec()
    original = _payload()
    [sealed] = await codec.encode([original])
    assert sealed.metadata["encoding"] == ENCODING and sealed.metadata[KID] == b"test-key"
    assert b"INC-4711" not in sealed.SerializeToString() and b"json/plain" not in sealed.SerializeToString()
    assert await codec.decode([sealed]) == [original]


async def test_every_payload_gets_a_fresh_nonce() -> None:
    codec = _codec()
    first, second = await codec.encode([_payload(), _payload()])
    assert first.data != second.data


@pytest.mark.parametrize("position", [0, 5, 12, 20, -1])
async def test_tampered_ciphertext_is_rejected(position: int) -> None:
    codec = _codec()
    [sealed] = await codec.encode([_payload()])
    data = bytearray(sealed.data)
    data[position] ^= 0x01
    sealed.data = bytes(data)
    with pytest.raises(PayloadRejected, match="fails authentication"):
        await codec.decode([sealed])


async def test_truncated_or_empty_ciphertext_is_rejected() -> None:
    codec = _codec()
    [sealed] = await codec.encode([_payload()])
    for data in (b"", sealed.data[:11], sealed.data[:-1]):
        sealed.data = data
        with pytest.raises(PayloadRejected):
            await codec.decode([sealed])


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.__setitem__("encoding", b"json/plain"),
        lambda m: m.__setitem__("extra", b"x"),
    ],
    ids=["encoding-swapped", "entry-added"],
)
async def test_metadata_is_bound_to_the_ciphertext(change: Any) -> None:
    codec = _codec()
    [sealed] = await codec.encode([_payload()])
    change(sealed.metadata)
    with pytest.raises(PayloadRejected):
        await codec.decode([sealed])


async def test_wrong_key_is_rejected() -> None:
    [sealed] = await _codec().encode([_payload()])
    same_id_other_key = _codec("test-key:" + generate_key().split(":")[1])
    with pytest.raises(PayloadRejected, match="fails authentication"):
        await same_id_other_key.decode([sealed])
    with pytest.raises(PayloadRejected, match="not configured"):
        await _codec(generate_key("other")).decode([sealed])


async def test_plaintext_is_rejected_unless_the_migration_window_is_open() -> None:
    plain = _payload()
    with pytest.raises(PayloadRejected, match="unencrypted"):
        await _codec().decode([plain])
    assert await _codec(accept_plaintext=True).decode([plain]) == [plain]
    # The window only relaxes reading: what is written is still sealed, and forged seals still fail.
    [sealed] = await _codec(accept_plaintext=True).encode([plain])
    assert sealed.metadata["encoding"] == ENCODING
    sealed.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    with pytest.raises(PayloadRejected):
        await _codec(accept_plaintext=True).decode([sealed])


async def test_the_converter_quarantines_what_it_refuses() -> None:
    """Workers and clients decode a refused payload to one nothing can read, so only that input fails."""
    converter = data_converter(Settings(codec_key=TEST_CODEC_KEY))
    assert converter.payload_codec is not None
    [good] = await converter.payload_codec.encode([_payload()])
    good_value, refused = await converter.payload_codec.decode([good, _payload("forged")])
    assert good_value == _payload()
    assert refused.metadata["encoding"] == REJECTED and b"forged" not in refused.SerializeToString()
    with pytest.raises(Exception, match="lapse-rejected"):
        converter.payload_converter.from_payloads([refused])


async def test_key_rotation() -> None:
    old, new = generate_key("2026-old"), generate_key("2026-new")
    [before] = await _codec(old).encode([_payload("before")])
    rotated = _codec(f"{new},{old}")
    [after] = await rotated.encode([_payload("after")])
    assert after.metadata[KID] == b"2026-new"
    assert await rotated.decode([before, after]) == [_payload("before"), _payload("after")]
    retired = _codec(new)  # the old key dropped once no open run holds its payloads
    assert await retired.decode([after]) == [_payload("after")]
    with pytest.raises(PayloadRejected, match="not configured"):
        await retired.decode([before])


def test_key_parsing_errors_never_echo_the_key() -> None:
    secret = base64.b64encode(b"s" * 31).decode()
    for spec, message in (
        (f"k1:{secret}", "31 bytes"),
        ("k1:not base64!", "not base64"),
        ("no-colon", "kid:base64key"),
        (f"{generate_key('a')},{generate_key('a')}", "twice"),
        (" , ", "no key"),
    ):
        with pytest.raises(CodecKeyError, match=message) as raised:
            parse_keys(spec)
        assert secret not in str(raised.value)
    assert [k.kid for k in parse_keys(f"{generate_key('a')}\n# old:\n{generate_key('b')}\n")] == ["a", "b"]
    assert "key=" not in repr(parse_keys(generate_key("a"))[0])


def test_key_file_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    first = codec_keys(settings)
    path = tmp_path / "data" / "codec.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert codec_keys(settings) == first
    explicit = Settings(data_dir=tmp_path, codec_key=TEST_CODEC_KEY)
    assert [k.kid for k in codec_keys(explicit)] == ["test-key"]
    referenced = tmp_path / "mounted.key"
    referenced.write_text(generate_key("from-file") + "\n")
    assert [k.kid for k in codec_keys(Settings(data_dir=tmp_path, codec_key_file=referenced))] == ["from-file"]


# --- the remote codec endpoint (for the Temporal Web UI) -----------------------------------------


def _payloads_json(*payloads: Payload) -> dict[str, Any]:
    return {
        "payloads": [
            {
                "metadata": {k: base64.b64encode(v).decode() for k, v in p.metadata.items()},
                "data": base64.b64encode(p.data).decode(),
            }
            for p in payloads
        ]
    }


async def _endpoint(settings: Settings) -> httpx.AsyncClient:
    app = create_app(settings, client=object())  # type: ignore[arg-type]  # the codec routes never call Temporal
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://lapse.test")


async def test_codec_endpoint_decodes_for_admins_only(tmp_path: Path) -> None:
    from tests.conftest import make_settings

    settings = make_settings(tmp_path, "localhost:1")
    [sealed] = await _codec().encode([_payload()])
    body = _payloads_json(sealed)
    async with await _endpoint(settings) as http:
        for headers, status in (({}, 401), ({"X-Forwarded-Email": "alan@example.com"}, 403)):
            response = await http.post("/codec/decode", json=body, headers=headers)
            assert response.status_code == status, response.text
            assert "INC-4711" not in response.text
        admin = {"X-Forwarded-Email": "ada@example.com", "X-Namespace": "default"}
        response = await http.post("/codec/decode", json=body, headers=admin)
        assert response.status_code == 200, response.text
        [decoded] = response.json()["payloads"]
        assert base64.b64decode(decoded["metadata"]["encoding"]) == b"json/plain"
        assert JUSTIFICATION in base64.b64decode(decoded["data"]).decode()

        # Nobody seals input through the API: that would let an admin forge a decision "from" someone else.
        encoded = await http.post("/codec/encode", json=_payloads_json(_payload()), headers=admin)
        assert encoded.status_code in (404, 405)

        # Plaintext is shown as it is (the UI shows what is in history); forged seals are a 422.
        plain = await http.post("/codec/decode", json=_payloads_json(_payload("plain")), headers=admin)
        assert plain.status_code == 200 and "plain" in base64.b64decode(plain.json()["payloads"][0]["data"]).decode()
        sealed.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
        forged = await http.post("/codec/decode", json=_payloads_json(sealed), headers=admin)
        assert forged.status_code == 422 and forged.headers["content-type"].startswith("application/problem+json")
        assert forged.json()["field"] == "payloads.0"

        # Bad input is a 4xx naming the field, never a 500.
        not_base64 = {"payloads": [{"metadata": {"encoding": "%%%"}, "data": ""}]}
        response = await http.post("/codec/decode", json=not_base64, headers=admin)
        assert response.status_code == 422 and response.json()["field"] == "payloads.0"
        too_many = {"payloads": [{"data": ""}] * 1001}
        response = await http.post("/codec/decode", json=too_many, headers=admin)
        assert response.status_code == 422 and response.json()["field"].startswith("payloads")


async def test_codec_endpoint_cors_allows_only_the_web_ui(tmp_path: Path) -> None:
    from tests.conftest import make_settings

    settings = make_settings(tmp_path, "localhost:1", temporal_ui_port=8233)
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-namespace",
    }
    async with await _endpoint(settings) as http:
        ui = await http.options("/codec/decode", headers={"Origin": "http://localhost:8233", **preflight})
        assert ui.status_code == 204
        assert ui.headers["access-control-allow-origin"] == "http://localhost:8233"
        assert ui.headers["access-control-allow-credentials"] == "true"
        assert "x-namespace" in ui.headers["access-control-allow-headers"].lower()
        evil = await http.options("/codec/decode", headers={"Origin": "https://evil.example", **preflight})
        assert "access-control-allow-origin" not in evil.headers
        posted = await http.post(
            "/codec/decode",
            json={"payloads": []},
            headers={"Origin": "https://evil.example", "X-Forwarded-Email": "ada@example.com"},
        )
        assert "access-control-allow-origin" not in posted.headers
        # Other routes get no CORS at all.
        other = await http.options("/api/requests", headers={"Origin": "http://localhost:8233", **preflight})
        assert "access-control-allow-origin" not in other.headers


# --- end to end, against the real dev server ------------------------------------------------------


async def _raw_history(env: WorkflowEnvironment, workflow_id: str) -> bytes:
    """The run's history as the server stores it (no codec applied)."""
    plain = Client(env.client.service_client, namespace=env.client.namespace)
    history = await plain.get_workflow_handle(workflow_id).fetch_history()
    return history.to_json().encode() + b"".join(e.SerializeToString() for e in history.events)


async def test_f4_justifications_are_not_readable_in_the_servers_history(api: Api, env: WorkflowEnvironment) -> None:
    created = await api.request("alan@example.com", "ledger/payments-api/deploy", "PT1S", JUSTIFICATION)
    await api.ok("linus@example.com", "POST", f"/api/requests/{created['id']}/approve", {"comment": "LGTM-ZEBRA-42"})
    await api.wait_for(created["id"], "expired", timeout=20)
    raw = await _raw_history(env, names.request_workflow_id(created["id"]))
    encoded = [base64.b64encode(JUSTIFICATION.encode()[i:]).decode()[4:40] for i in range(3)]
    assert b"INC-4711" not in raw and b"LGTM-ZEBRA-42" not in raw
    assert not any(e.encode() in raw for e in encoded)  # not even base64'd in the JSON form
    assert ENCODING in raw
    # ... while Lapse's own client (the key holder) reads them.
    assert (await api.status(created["id"]))["justification"] == JUSTIFICATION


async def test_f4_payload_without_key_is_rejected(
    env: WorkflowEnvironment, settings: Settings, worker: None, target: FakeTarget, api: Api
) -> None:
    """Someone who can reach Temporal but has no key starts a request whose plan has no approval step:
    the worker refuses the input, the run makes no progress, nothing is ever granted."""
    from temporalio.api.enums.v1 import EventType

    from workflows.access_request import AccessRequestWorkflow

    # A real request gives a well-formed input to copy; the forged one drops every approval step.
    created = await api.request("alan@example.com", "ledger/payments-api/deploy", "PT1H")
    genuine = env.client.get_workflow_handle(names.request_workflow_id(created["id"]))
    genuine_input = await _start_input(env, genuine.id)
    forged_input = genuine_input.model_copy(update={"plan": genuine_input.plan.model_copy(update={"steps": []})})

    for name, converter in (
        ("plain", pydantic_data_converter),
        ("wrong-key", data_converter(Settings(codec_key=generate_key("test-key")))),
    ):
        intruder = Client(env.client.service_client, namespace=env.client.namespace, data_converter=converter)
        workflow_id = f"access-request-forged-{name}-{uuid.uuid4().hex[:6]}"
        handle = await intruder.start_workflow(
            AccessRequestWorkflow.run,
            forged_input,
            id=workflow_id,
            task_queue=settings.task_queue,
            execution_timeout=timedelta(minutes=5),
        )
        history = await eventually(
            env.client.get_workflow_handle(workflow_id).fetch_history,
            until=lambda history: any(
                e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED for e in history.events
            ),
            what=f"the worker to refuse the {name} input",
        )
        kinds = {e.event_type for e in history.events}
        assert EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED not in kinds, name
        assert EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED not in kinds, name
        await handle.terminate("forged by the test")
    assert [c for c in target.calls if c[0] == "grant"] == []

    # An approval sent without the key does not count either; the genuine request is unharmed.
    intruder = Client(env.client.service_client, namespace=env.client.namespace, data_converter=pydantic_data_converter)
    with pytest.raises(WorkflowUpdateFailedError):  # rejected, without failing the run's workflow task
        await asyncio.wait_for(
            intruder.get_workflow_handle(genuine.id).execute_update("approve", {"actor": "linus@example.com"}),
            timeout=15,
        )
    assert (await api.status(created["id"]))["state"] == "pending"
    await api.ok("linus@example.com", "POST", f"/api/requests/{created['id']}/approve", {})
    await api.wait_for(created["id"], "active", timeout=20)


async def _start_input(env: WorkflowEnvironment, workflow_id: str) -> AccessRequestInput:
    history = await env.client.get_workflow_handle(workflow_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    [value] = await env.client.data_converter.decode(started.input.payloads, [AccessRequestInput])
    assert isinstance(value, AccessRequestInput)
    return value


async def test_runs_from_before_the_codec_replay_only_in_the_migration_window() -> None:
    """The upgrade path: a plain history (recorded before the codec) replays with
    ``codec_accept_plaintext`` on, and is refused with it off (the default)."""
    from temporalio.client import WorkflowHistory
    from temporalio.worker import Replayer

    from worker import WORKFLOWS

    path = Path(__file__).parent / "histories" / "v1-one-step-expired.json"
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    window = Settings(codec_key=TEST_CODEC_KEY, codec_accept_plaintext=True)
    await Replayer(workflows=list(WORKFLOWS), data_converter=data_converter(window)).replay_workflow(history)
    strict = Replayer(workflows=list(WORKFLOWS), data_converter=data_converter(Settings(codec_key=TEST_CODEC_KEY)))
    result = await strict.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is not None


# --- the embedded server -----------------------------------------------------------------------


def test_embedded_server_and_its_ui_listen_on_loopback_and_decode_through_the_api(tmp_path: Path) -> None:
    from starter.stack import temporal_server_command

    def flags(**overrides: Any) -> dict[str, str]:
        command = temporal_server_command(Settings(data_dir=tmp_path, **overrides))
        return {a: b for a, b in itertools.pairwise(command) if a.startswith("--")}

    default = flags()
    assert default["--ip"] == "127.0.0.1" and default["--ui-ip"] == "127.0.0.1"
    assert default["--ui-codec-endpoint"] == "http://127.0.0.1:8000/codec"
    assert flags(temporal_address="[::1]:7233")["--ip"] == "::1"
    assert flags(api_host="0.0.0.0", api_port=9000)["--ui-codec-endpoint"] == "http://localhost:9000/codec"
    for address in ("0.0.0.0:7233", "10.1.2.3:7233", "temporal.example.com:7233"):
        with pytest.raises(SystemExit, match="loopback"):
            temporal_server_command(Settings(data_dir=tmp_path, temporal_address=address))

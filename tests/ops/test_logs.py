"""How a line is written: JSON or text, with what it is about (request, activity, integration), never a secret."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from store import logs
from store.logs import ContextFilter, JsonLines, RequestContext, Scrubber, Text, note_actor, secret_values
from store.settings import Settings

KEY = "k1:bGFwc2UtdGVzdC1vbmx5LWF1ZGl0LWtleS0zMmJ5dGVzIQ=="


def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.getLogger("lapse.test").makeRecord("lapse.test", logging.INFO, __file__, 1, message, args, None)
    for name, value in extra.items():
        setattr(record, name, value)
    ContextFilter().filter(record)
    return record


def _json(record: logging.LogRecord, secrets: list[str] | None = None) -> dict[str, object]:
    line = JsonLines("api", Scrubber(secrets or [])).format(record)
    assert "\n" not in line
    parsed: dict[str, object] = json.loads(line)
    return parsed


def test_a_json_line_says_when_what_where_and_any_extra() -> None:
    line = _json(_record("granted %s to %s", "pg/db/read", "alan", status=201))
    assert {k: line[k] for k in ("level", "logger", "process", "msg", "status")} == {
        "level": "INFO",
        "logger": "lapse.test",
        "process": "api",
        "msg": "granted pg/db/read to alan",
        "status": 201,
    }
    assert str(line["ts"]).endswith("+00:00")
    assert "request_id" not in line and "workflow_id" not in line  # only what is known


def test_a_line_of_a_request_names_it_and_its_caller_once_known() -> None:
    token = logs.current_request.set(RequestContext(id="req-1"))
    try:
        assert _json(_record("before"))["request_id"] == "req-1"
        assert "actor" not in _json(_record("before"))
        note_actor("alan@example.com")
        line = _json(_record("after"))
        assert (line["request_id"], line["actor"]) == ("req-1", "alan@example.com")
    finally:
        logs.current_request.reset(token)
    assert "request_id" not in _json(_record("outside"))


def test_a_line_of_an_activity_names_its_run_and_integration() -> None:
    def provision() -> dict[str, object]:
        token = logs.integration.set("pg")
        try:
            return _json(_record("granted"))
        finally:
            logs.integration.reset(token)

    environment = ActivityEnvironment()
    environment.info = dataclasses.replace(
        environment.info, workflow_id="access-request-abc", activity_type="provision_grant"
    )
    line = environment.run(provision)
    assert (line["workflow_id"], line["activity_type"], line["integration"]) == (
        "access-request-abc",
        "provision_grant",
        "pg",
    )
    assert "workflow_id" not in _json(_record("outside any activity"))


def test_secrets_are_scrubbed_from_messages_and_tracebacks(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        audit_key=KEY,  # type: ignore[arg-type]
        metrics_token="scrape-0123456789",  # type: ignore[arg-type]
        database_url="postgresql://lapse:db-Pa55word@db.example/lapse",
    )
    secrets = secret_values(settings)
    try:
        raise RuntimeError("connect postgresql://ops:t0p-secret@pg.example/x failed; dsn password=other-secret")
    except RuntimeError:
        record = _record("scrape with %s and key %s", "scrape-0123456789", KEY.partition(":")[2])
        record.exc_info = sys.exc_info()
    line = json.dumps(_json(record, secrets))
    for secret in ("t0p-secret", "other-secret", "scrape-0123456789", KEY.partition(":")[2]):
        assert secret not in line
    assert "postgresql://ops:***@pg.example/x" in line
    text = Text("worker", Scrubber(secrets)).format(_record("app DB postgresql://lapse:db-Pa55word@db.example/lapse"))
    assert "db-Pa55word" not in text and " worker INFO app DB postgresql://lapse:***@db.example/lapse" in text


def test_configure_logging_writes_the_format_asked_for(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    kept = (list(root.handlers), root.level)
    try:
        logs.configure_logging(Settings(data_dir=tmp_path, log_format="json", log_level="warning"), "worker")
        logging.getLogger("lapse.test").info("not shown")
        logging.getLogger("uvicorn.error").warning("shown")
        written = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
        assert [(line["logger"], line["msg"], line["process"]) for line in written] == [
            ("uvicorn.error", "shown", "worker")
        ]
    finally:
        root.handlers[:] = kept[0]
        root.setLevel(kept[1])
        logging.captureWarnings(False)


def test_a_log_level_is_checked_as_it_is_read() -> None:
    with pytest.raises(ValueError, match="log_level"):
        Settings(log_level="chatty")


def test_a_text_line_cannot_be_forged_through_a_callers_words() -> None:
    """A request path (or any caller's text) with a newline in it stays on its own line, escaped: nobody reading
    the text log can be shown an "approve" line Lapse never wrote."""
    forged = "GET /x\n2026-12-02 07:00:00,000 api INFO POST /api/requests/abc/approve 200 [actor=ceo@example.com]"
    line = Text("api", Scrubber([])).format(_record("%s 404", forged))
    assert "\n" not in line and "\\n2026-12-02" in line


def test_http_clients_never_log_a_url_that_carries_a_signature(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Teams Workflows URL is its own secret (``sig=``): the HTTP clients' request lines stay out of the log."""
    root = logging.getLogger()
    kept = (list(root.handlers), root.level)
    try:
        logs.configure_logging(Settings(data_dir=tmp_path, log_level="info"), "worker")
        for name in logs.QUIET_CLIENTS:
            logging.getLogger(name).info("HTTP Request: POST https://prod.logic.azure.com/invoke?sig=SECRETSIG")
        assert "SECRETSIG" not in capsys.readouterr().err
    finally:
        root.handlers[:] = kept[0]
        root.setLevel(kept[1])
        logging.captureWarnings(False)

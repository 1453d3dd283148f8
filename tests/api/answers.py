"""What the API tests read in an answer: a problem document's status, detail and the field it names."""

from __future__ import annotations

import httpx

ANY_FIELD = object()
"""``field=ANY_FIELD``: the problem may name any field, or none."""


def problem(response: httpx.Response, status: int, field: str | object | None = ANY_FIELD) -> str:
    """Assert ``response`` is an RFC 9457 problem with ``status`` (naming ``field``, or none when ``None``)
    and return its ``detail``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"], body
    if field is not ANY_FIELD:
        assert body.get("field") == field, body
    return str(body["detail"])

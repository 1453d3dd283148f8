"""GET /api/approvals: the requests and extensions the caller can decide now."""

from __future__ import annotations

from fastapi import APIRouter

from access.requests import RequestStatus
from starter.api.deps import CurrentUser, SettingsDep
from starter.api.problems import responses
from starter.services import requests

router = APIRouter(prefix="/api/approvals", tags=["approvals"], responses=responses(401))


@router.get("")
def list_approvals(user: CurrentUser, settings: SettingsDep) -> list[RequestStatus]:
    """Pending requests, and pending extensions of active grants, awaiting your decision."""
    return requests.awaiting_decision(settings, user)

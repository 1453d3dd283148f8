"""GET /api/catalog: the roles the caller can request, how long for, and who approves."""

from __future__ import annotations

from fastapi import APIRouter

from starter.api.deps import CurrentUser, SettingsDep
from starter.api.problems import responses
from starter.services import catalog
from starter.services.catalog import CatalogEntry

router = APIRouter(prefix="/api/catalog", tags=["catalog"], responses=responses(401))


@router.get("")
def list_catalog(user: CurrentUser, settings: SettingsDep) -> list[CatalogEntry]:
    return catalog.list_catalog(settings, user)

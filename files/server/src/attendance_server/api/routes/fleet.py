"""The kiosks as the operator sees them (admin token): `GET /api/kiosks` (each with its last heartbeat, last heard
and whether it is silent) and `GET /metrics` (the same for Prometheus)."""
# No `from __future__ import annotations`: FastAPI reads the dependencies from the annotations at run time.

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from ...fleet import kiosk_states
from ...metrics import exposition
from ..deps import AdminDep, SettingsDep, StoreDep

router = APIRouter(tags=["fleet"])


@router.get("/api/kiosks")
def kiosks(_: AdminDep, settings: SettingsDep, store: StoreDep) -> dict[str, Any]:
    states = kiosk_states(settings, store, datetime.now(UTC))
    return {"silent_after_seconds": settings.silent_after_seconds, "kiosks": [s.as_json() for s in states]}


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(_: AdminDep, settings: SettingsDep, store: StoreDep) -> Response:
    return Response(exposition(kiosk_states(settings, store, datetime.now(UTC))), media_type=CONTENT_TYPE_LATEST)

"""The kiosks' API: the gallery sync (`GET /api/employees/embeddings`, ETag and If-None-Match -> 304; `erased`: the
ids erased lately, which each kiosk erases from everything it stores),
attendance events (`POST /toon/attendance`, once per Idempotency-Key) and heartbeats (`POST /api/kiosk/heartbeat`,
the last one kept per kiosk)."""
# No `from __future__ import annotations`: FastAPI reads the dependencies from the annotations at run time.

from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse

from ...schemas import SHA256, AttendanceEvent, Heartbeat
from ...store import Conflict
from ..deps import GalleryReaderDep, KioskDep, StoreDep

router = APIRouter(tags=["kiosk"])


# Not only a kiosk's token: the admin may read what the kiosks receive.
@router.get("/api/employees/embeddings", responses={304: {"description": "unchanged"}})
def embeddings(request: Request, _: GalleryReaderDep, store: StoreDep,
               model: Annotated[str, Query(pattern=SHA256, description="the kiosk's model sha256")]) -> Response:
    gallery = store.gallery(model)
    headers = {"ETag": gallery.etag, "Cache-Control": "no-cache"}
    if request.headers.get("If-None-Match") == gallery.etag:
        return Response(status_code=304, headers=headers)
    body = {"model": model, "employees": [{"id": emp, "embeddings": vectors}
                                          for emp, vectors in gallery.employees.items()],
            "erased": gallery.erased}
    return JSONResponse(body, headers=headers)


@router.post("/toon/attendance", status_code=201,
             responses={200: {"description": "a replay of a recorded event (same Idempotency-Key), or an event of a "
                                             "person erased since (`erased`: true): nothing added"},
                        400: {"description": "no Idempotency-Key"},
                        422: {"description": "an invalid event, or a key reused for another event"}})
def attendance(event: AttendanceEvent, response: Response, name: KioskDep, store: StoreDep,
               idempotency_key: Annotated[str | None, Header(max_length=255)] = None) -> dict[str, Any]:
    if not idempotency_key:
        raise HTTPException(400, "an Idempotency-Key header is required (the kiosk's outbox sends one per event)")
    try:
        new = store.record(idempotency_key, name, event.E1, event.S1, event.TS1.isoformat(), event.TS1_estimated)
    except Conflict as exc:
        raise HTTPException(422, str(exc)) from None
    if new is None:  # the person was erased: nothing stored, and the kiosk erases its copy at its next sync
        response.status_code = 200
        return {"recorded": False, "erased": True, "kiosk": name, "employee": event.E1}
    if not new:
        response.status_code = 200  # a replay: the kiosk lost the first answer and gets one now
    return {"recorded": new, "kiosk": name, "employee": event.E1}


@router.post("/api/kiosk/heartbeat", status_code=204, response_class=Response,
             responses={422: {"description": "a body out of the heartbeat's bounds"}})
def heartbeat(body: Heartbeat, name: KioskDep, store: StoreDep) -> Response:
    # The kiosk is its token's: a body cannot speak for another kiosk. Kept as validated (unknown fields dropped).
    store.heartbeat(name, body.model_dump(mode="json"))
    return Response(status_code=204)

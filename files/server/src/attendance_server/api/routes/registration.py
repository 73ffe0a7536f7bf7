"""The Pis that register themselves at first boot: `POST /api/register` (the registration token; one registration
per serial, a hostname held by one serial), and for the operator (admin token) `GET /api/registrations` (what an
Ansible inventory reads) and `DELETE /api/registrations/{serial}` (a Pi gone, its hostname free again)."""
# No `from __future__ import annotations`: FastAPI reads the dependencies from the annotations at run time.

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Response
from fastapi import Path as PathParam

from ...schemas import Registration, Serial
from ...store import Conflict
from ..deps import AdminDep, RegistrarDep, StoreDep

router = APIRouter(tags=["registration"])


@router.post("/api/register", status_code=201,
             responses={200: {"description": "a serial registered before: its registration updated (a card flashed "
                                             "again, a new address)"},
                        409: {"description": "the hostname is another serial's: nothing changed"},
                        422: {"description": "a body out of the registration's bounds"}})
def register(body: Registration, response: Response, _: RegistrarDep, store: StoreDep) -> dict[str, Any]:
    try:
        registered = store.register(body.serial, body.hostname, body.model, body.revision, body.address,
                                    body.host_key)
    except Conflict as exc:
        raise HTTPException(409, str(exc)) from None
    if registered == "updated":
        response.status_code = 200
    return {"registered": registered, "hostname": body.hostname, "serial": body.serial}


@router.get("/api/registrations")
def registrations(_: AdminDep, store: StoreDep) -> dict[str, Any]:
    return {"registrations": [dataclasses.asdict(r) for r in store.registrations()]}


@router.delete("/api/registrations/{serial}", status_code=204, response_class=Response,
               responses={404: {"description": "no Pi of that serial is registered"}})
def unregister(serial: Annotated[Serial, PathParam(description="the Pi's serial number, hex")], _: AdminDep,
               store: StoreDep) -> Response:
    if not store.unregister(serial):
        raise HTTPException(404, f"no Pi of serial {serial} is registered (GET /api/registrations lists them)")
    return Response(status_code=204)

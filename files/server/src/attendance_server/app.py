"""The HTTP API (FastAPI; the contract is published as OpenAPI at /docs):

- kiosks (each with its own bearer token): `GET /api/employees/embeddings?model=<sha256>` (ETag,
  If-None-Match -> 304) and `POST /toon/attendance` ({"E1", "S1", "TS1"} with an Idempotency-Key);
- the admin token: enrollment (`POST /api/employees/{id}/embeddings`, `.../photos`), the employee list,
  `DELETE /api/employees/{id}`, `GET /api/attendance` and the attendance page at `/` (a browser logs in
  with HTTP Basic, any user name and the admin token as password).
"""
# No `from __future__ import annotations`: FastAPI reads the dependencies from the annotations at run time.

import base64
import binascii
import tempfile
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Header, HTTPException, Query, Request, Response, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import AwareDatetime, BaseModel, Field

from . import __version__, page
from .config import Settings
from .store import Conflict, Store

EMPLOYEE_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
SHA256 = r"^[0-9a-f]{64}$"
EmployeeId = Annotated[str, PathParam(pattern=EMPLOYEE_ID, description="employee id, e.g. E001")]


class AttendanceEvent(BaseModel):
    """The deployment guide's message; extra fields are refused (a typo must not pass silently)."""
    model_config = {"extra": "forbid"}
    E1: str = Field(pattern=EMPLOYEE_ID, description="employee id")
    S1: str = Field(min_length=1, max_length=16, description="status, e.g. IN")
    TS1: AwareDatetime = Field(description="when, ISO 8601 with its UTC offset")


class Enrollment(BaseModel):
    model_config = {"extra": "forbid"}
    model: str = Field(pattern=SHA256, description="sha256 of the embedding model's ONNX file")
    embeddings: list[list[float]] = Field(min_length=1, max_length=100)
    name: str = Field(default="", max_length=200)
    replace: bool = Field(default=False, description="replace this person's earlier embeddings of this model")


def create_app(settings: Settings, store: Store | None = None) -> FastAPI:
    store = store or Store(settings.database)
    app = FastAPI(title="pi-fleet attendance server", version=__version__,
                  description=(__doc__ or "").split("\n\n", 1)[1])

    def principal(authorization: Annotated[str, Header()] = "") -> str:
        scheme, _, credential = authorization.partition(" ")
        if scheme.lower() == "basic":
            try:
                credential = base64.b64decode(credential, validate=True).decode().partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                credential = ""
        elif scheme.lower() != "bearer":
            credential = ""
        who = settings.principal(credential.strip()) if credential else None
        if who is None:
            raise HTTPException(401, "a valid token is required (Authorization: Bearer <token>)",
                                headers={"WWW-Authenticate": 'Bearer, Basic realm="pi-fleet attendance"'})
        return who

    def kiosk(who: Annotated[str, Depends(principal)]) -> str:
        if not who.startswith("kiosk:"):
            raise HTTPException(403, "only a kiosk's token may report attendance")
        return who.removeprefix("kiosk:")

    def admin(who: Annotated[str, Depends(principal)]) -> str:
        if who != "admin":
            raise HTTPException(403, "this needs the admin token")
        return who

    def reader(who: Annotated[str, Depends(principal)]) -> str:
        return who

    @app.get("/healthz", tags=["server"])
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/api/employees/embeddings", tags=["kiosk"], responses={304: {"description": "unchanged"}})
    def embeddings(request: Request, _: Annotated[str, Depends(reader)],
                   model: Annotated[str, Query(pattern=SHA256, description="the kiosk's model sha256")]) -> Response:
        gallery = store.gallery(model)
        headers = {"ETag": gallery.etag, "Cache-Control": "no-cache"}
        if request.headers.get("If-None-Match") == gallery.etag:
            return Response(status_code=304, headers=headers)
        body = {"model": model, "employees": [{"id": emp, "embeddings": vectors}
                                              for emp, vectors in gallery.employees.items()]}
        return JSONResponse(body, headers=headers)

    @app.post("/toon/attendance", tags=["kiosk"], status_code=201,
              responses={200: {"description": "a replay of a recorded event (same Idempotency-Key): nothing added"},
                         400: {"description": "no Idempotency-Key"},
                         422: {"description": "an invalid event, or a key reused for another event"}})
    def attendance(event: AttendanceEvent, response: Response, name: Annotated[str, Depends(kiosk)],
                   idempotency_key: Annotated[str | None, Header(max_length=255)] = None) -> dict[str, Any]:
        if not idempotency_key:
            raise HTTPException(400, "an Idempotency-Key header is required (the kiosk's outbox sends one per event)")
        try:
            new = store.record(idempotency_key, name, event.E1, event.S1, event.TS1.isoformat())
        except Conflict as exc:
            raise HTTPException(422, str(exc)) from None
        if not new:
            response.status_code = 200
        return {"recorded": new, "kiosk": name, "employee": event.E1}

    @app.post("/api/employees/{employee}/embeddings", tags=["enrollment"], status_code=201)
    def enroll(employee: EmployeeId, body: Enrollment, _: Annotated[str, Depends(admin)]) -> dict[str, Any]:
        try:
            count = store.enroll(employee, body.model, body.embeddings, body.name, body.replace)
        except Conflict as exc:
            raise HTTPException(422, str(exc)) from None
        return {"employee": employee, "model": body.model, "embeddings": count}

    @app.post("/api/employees/{employee}/photos", tags=["enrollment"], status_code=201)
    def enroll_photos(employee: EmployeeId, _: Annotated[str, Depends(admin)],
                      photos: Annotated[list[UploadFile], File(description="photos, each of exactly one face")],
                      name: Annotated[str, Query(max_length=200)] = "", replace: bool = False) -> dict[str, Any]:
        from . import photos as photo_enrollment  # the kiosk's pipeline: only with the photos extra
        if not settings.models:
            raise HTTPException(422, "no [models] in the server's configuration: photos cannot be embedded here; "
                                     "send embeddings (POST .../embeddings) or configure the kiosks' models")
        # The photos exist only for this request: embeddings are kept, never the images.
        with tempfile.TemporaryDirectory() as tmp:
            paths = []
            for n, upload in enumerate(photos):
                path = Path(tmp) / f"{n}{Path(upload.filename or '').suffix.lower() or '.jpg'}"
                path.write_bytes(upload.file.read())
                paths.append(path)
            try:
                vectors = photo_enrollment.embed(settings.models, paths)
            except photo_enrollment.PhotoError as exc:
                raise HTTPException(422, str(exc).replace(tmp + "/", "photo ")) from None
        counts = {model: store.enroll(employee, model, rows, name, replace) for model, rows in vectors.items()}
        return {"employee": employee, "embeddings": counts}

    @app.get("/api/employees", tags=["enrollment"])
    def employees(_: Annotated[str, Depends(admin)]) -> dict[str, Any]:
        return {"employees": store.employees()}

    @app.delete("/api/employees/{employee}", tags=["enrollment"], status_code=204)
    def remove(employee: EmployeeId, _: Annotated[str, Depends(admin)]) -> Response:
        if not store.remove(employee):
            raise HTTPException(404, f"no employee {employee}")
        return Response(status_code=204)

    @app.get("/api/attendance", tags=["attendance"])
    def events(_: Annotated[str, Depends(admin)], kiosk: str | None = None, employee: str | None = None,
               limit: Annotated[int, Query(ge=1, le=10000)] = 500) -> dict[str, Any]:
        return {"events": [asdict(e) for e in store.events(kiosk, employee, limit)]}

    @app.get("/", response_class=HTMLResponse, tags=["attendance"])
    def attendance_page(_: Annotated[str, Depends(admin)], kiosk: str | None = None,
                        employee: str | None = None) -> str:
        return page.render(store.events(kiosk, employee), store.employees(), datetime.now().astimezone())

    return app

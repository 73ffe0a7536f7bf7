"""Employees and their enrollment (admin token): embeddings sent as vectors, or computed from photos with
the kiosk's pipeline; the employee list (counts per model, never the vectors); removal."""
# No `from __future__ import annotations`: FastAPI reads the dependencies from the annotations at run time.

import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, HTTPException, Query, Response, UploadFile
from fastapi import Path as PathParam

from ...schemas import EMPLOYEE_ID, Enrollment
from ...store import Conflict
from ..deps import AdminDep, SettingsDep, StoreDep

EmployeeId = Annotated[str, PathParam(pattern=EMPLOYEE_ID, description="employee id, e.g. E001")]

router = APIRouter(tags=["enrollment"])


@router.post("/api/employees/{employee}/embeddings", status_code=201)
def enroll(employee: EmployeeId, body: Enrollment, _: AdminDep, store: StoreDep) -> dict[str, Any]:
    try:
        count = store.enroll(employee, body.model, body.embeddings, body.name, body.replace)
    except Conflict as exc:
        raise HTTPException(422, str(exc)) from None
    return {"employee": employee, "model": body.model, "embeddings": count}


@router.post("/api/employees/{employee}/photos", status_code=201)
def enroll_photos(employee: EmployeeId, _: AdminDep, settings: SettingsDep, store: StoreDep,
                  photos: Annotated[list[UploadFile], File(description="photos, each of exactly one face")],
                  name: Annotated[str, Query(max_length=200)] = "", replace: bool = False) -> dict[str, Any]:
    from ... import photos as photo_enrollment  # the kiosk's pipeline: only with the photos extra
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


@router.get("/api/employees")
def employees(_: AdminDep, store: StoreDep) -> dict[str, Any]:
    return {"employees": store.employees()}


@router.delete("/api/employees/{employee}", status_code=204)
def remove(employee: EmployeeId, _: AdminDep, store: StoreDep) -> Response:
    if not store.remove(employee):
        raise HTTPException(404, f"no employee {employee}")
    return Response(status_code=204)

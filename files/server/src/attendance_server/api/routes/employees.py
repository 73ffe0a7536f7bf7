"""Employees and their enrollment (admin token): embeddings sent as vectors, or computed from photos with
the kiosk's pipeline (`uploads`: a router of its own, its bodies may be larger); the employee list (counts per
model, never the vectors); a person marked as having left; erasure (embeddings, events unless kept, a tombstone
for the kiosks). The employees page (employee_pages.py) enrolls through `enroll_uploads`."""
# No `from __future__ import annotations`: FastAPI reads the dependencies from the annotations at run time.

import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, HTTPException, Query, Response, UploadFile
from fastapi import Path as PathParam

from ...config import Limits, Settings
from ...photos import image_size
from ...schemas import EMPLOYEE_ID, Enrollment
from ...store import Conflict, Store, iso
from ..deps import AdminDep, SettingsDep, StoreDep

EmployeeId = Annotated[str, PathParam(pattern=EMPLOYEE_ID, description="employee id, e.g. E001")]

router = APIRouter(tags=["enrollment"])
uploads = APIRouter(tags=["enrollment"])


@router.post("/api/employees/{employee}/embeddings", status_code=201)
def enroll(employee: EmployeeId, body: Enrollment, _: AdminDep, store: StoreDep) -> dict[str, Any]:
    try:
        count = store.enroll(employee, body.model, body.embeddings, body.name, body.replace)
    except Conflict as exc:
        raise HTTPException(422, str(exc)) from None
    return {"employee": employee, "model": body.model, "embeddings": count}


@uploads.post("/api/employees/{employee}/photos", status_code=201,
              responses={413: {"description": "more photos, or a photo of more bytes or pixels, than [limits] allow"},
                         415: {"description": "a photo that is not a JPEG or PNG image"},
                         422: {"description": "a photo without exactly one usable face, or no [models]"}})
def enroll_photos(employee: EmployeeId, _: AdminDep, settings: SettingsDep, store: StoreDep,
                  photos: Annotated[list[UploadFile], File(description="photos, each of exactly one face")],
                  name: Annotated[str, Query(max_length=200)] = "", replace: bool = False) -> dict[str, Any]:
    return {"employee": employee, "embeddings": enroll_uploads(employee, photos, name, replace, settings, store)}


def enroll_uploads(employee: str, photos: list[UploadFile], name: str, replace: bool, settings: Settings,
                   store: Store) -> dict[str, int]:
    """Enrolls the photos with every configured model (the photo API's and the employees page's one path): the
    count per model, or an HTTPException naming the photo and what is wrong with it, with nothing stored."""
    from ... import photos as photo_enrollment  # the kiosk's pipeline: only with the photos extra
    if not settings.models:
        raise HTTPException(422, "no [models] in the server's configuration: photos cannot be embedded here; "
                                 "send embeddings (POST .../embeddings) or configure the kiosks' models")
    if len(photos) > settings.limits.photos:
        raise HTTPException(413, f"{len(photos)} photos: at most {settings.limits.photos} per request "
                                 "(limits.photos); send the others in another request")
    # The photos exist only for this request: embeddings are kept, never the images.
    with tempfile.TemporaryDirectory() as tmp:
        paths: list[Path] = []
        labels: dict[str, str] = {}  # each photo's temporary path: how messages name it
        for n, upload in enumerate(photos):
            path = Path(tmp) / f"{n}{Path(upload.filename or '').suffix.lower() or '.jpg'}"
            labels[str(path)] = f"photo {path.name} ({upload.filename})"
            path.write_bytes(checked_photo(upload, labels[str(path)], settings.limits))
            paths.append(path)
        try:
            vectors = photo_enrollment.embed(settings.models, paths)
        except photo_enrollment.PhotoError as exc:
            message = str(exc)
            for path_name, label in labels.items():
                message = message.replace(path_name, label)
            raise HTTPException(422, message) from None
    try:
        return store.enroll_models(employee, vectors, name, replace)
    except Conflict as exc:  # e.g. a model whose stored embeddings have another length: the settings changed
        raise HTTPException(422, str(exc)) from None


def checked_photo(upload: UploadFile, label: str, limits: Limits) -> bytes:
    """The photo's bytes, if it may be decoded: a JPEG or PNG whose header declares no more pixels than allowed
    (a small file can declare gigapixels, and a decoder allocates what the header says)."""
    data = upload.file.read(limits.photo_bytes + 1)
    if len(data) > limits.photo_bytes:
        raise HTTPException(413, f"{label}: more than {limits.photo_bytes} bytes (limits.photo_bytes)")
    size = image_size(data)
    if size is None:
        raise HTTPException(415, f"{label}: not a JPEG or PNG image (the formats photos are taken in)")
    width, height = size
    if width * height > limits.photo_pixels:
        raise HTTPException(413, f"{label}: {width}x{height} pixels, more than {limits.photo_pixels} "
                                 "(limits.photo_pixels); scale it down")
    return data


@router.get("/api/employees")
def employees(_: AdminDep, store: StoreDep) -> dict[str, Any]:
    return {"employees": store.employees()}


@router.post("/api/employees/{employee}/left", responses={404: {"description": "no such employee"}})
def left(employee: EmployeeId, _: AdminDep, settings: SettingsDep, store: StoreDep) -> dict[str, Any]:
    """Marks the person as having left: out of every gallery at once (the kiosks' next sync drops them), their
    embeddings deleted `[retention] left_days` after the first mark (`null`: kept until the person is deleted).
    Marking again keeps the first time; enrolling them again brings them back."""
    at = store.mark_left(employee)
    if at is None:
        raise HTTPException(404, f"no employee {employee}")
    days = settings.retention.left_days
    until = None if days is None else iso(datetime.fromisoformat(at) + timedelta(days=days))
    return {"employee": employee, "left": at, "embeddings_deleted_after": until}


@router.delete("/api/employees/{employee}", status_code=204, responses={404: {"description": "no such employee"}})
def remove(employee: EmployeeId, _: AdminDep, store: StoreDep,
           keep_events: Annotated[bool, Query(description=(
               "keep the person's attendance events (a law requires them kept, e.g. for payroll); by default they "
               "are erased with the person"))] = False) -> Response:
    """Erase a person: their embeddings at once, their attendance events unless keep_events, and a tombstone that
    every kiosk's next gallery sync carries (`erased`), so that each erases its own copies."""
    if store.remove(employee, keep_events) is None:
        raise HTTPException(404, f"no employee {employee}")
    return Response(status_code=204)

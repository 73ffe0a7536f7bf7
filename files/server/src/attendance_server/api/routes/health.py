"""`GET /healthz`: anyone may ask whether the server runs (and which version)."""
from fastapi import APIRouter

from ... import __version__

router = APIRouter(tags=["server"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok", "version": __version__}

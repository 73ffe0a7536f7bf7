"""`GET /healthz`: anyone may ask whether the server runs (and which version)."""
from fastapi import APIRouter

from ... import __version__

PATH = "/healthz"  # public: the guard lets anyone ask (app.py)

router = APIRouter(tags=["server"])


@router.get(PATH)
def healthz() -> dict[str, str]:
    return {"status": "ok", "version": __version__}

"""What routes depend on: the app's settings and store, and who is asking.

Every route names what it needs with one of the `...Dep` types: `KioskDep` (a kiosk's token; the kiosk's name),
`AdminDep` (the admin token), `GalleryReaderDep` (a kiosk's or the admin's), `RegistrarDep` (the registration
token). No valid token: 401 with `WWW-Authenticate`, answered by the guard (api/guard.py) before the body is
read; a valid token that may not do this: 403.
"""
# No `from __future__ import annotations`: FastAPI reads the dependencies from the annotations at run time.

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from ..config import Settings
from ..store import Store


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings  # set by create_app
    return settings


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store  # set by create_app
    return store


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]


def principal(request: Request) -> str:
    """"admin", "kiosk:<name>" or "registrar": whose token this is. The guard found it from the Authorization
    header (with `Settings.principal`, the one place tokens are compared) and refused the request itself without
    one."""
    who: str = request.state.principal
    return who


PrincipalDep = Annotated[str, Depends(principal)]


def kiosk(who: PrincipalDep) -> str:
    """The kiosk's name: the server records which kiosk reported an event (or a heartbeat) from its token, not from
    the body."""
    if not who.startswith("kiosk:"):
        raise HTTPException(403, "only a kiosk's token may report attendance or heartbeats")
    return who.removeprefix("kiosk:")


def admin(who: PrincipalDep) -> str:
    if who != "admin":
        raise HTTPException(403, "this needs the admin token")
    return who


def gallery_reader(who: PrincipalDep) -> str:
    """The kiosks, and the admin who may read what they receive: not the registrar, whose token is on every card
    flashed for a new Pi and must not open the galleries (biometric data)."""
    if who != "admin" and not who.startswith("kiosk:"):
        raise HTTPException(403, "the galleries are for the kiosks' tokens and the admin token only")
    return who


def registrar(who: PrincipalDep) -> str:
    if who != "registrar":
        raise HTTPException(403, "only the registration token may register a Pi")
    return who


KioskDep = Annotated[str, Depends(kiosk)]
AdminDep = Annotated[str, Depends(admin)]
GalleryReaderDep = Annotated[str, Depends(gallery_reader)]
RegistrarDep = Annotated[str, Depends(registrar)]

"""What routes depend on: the app's settings and store, and who is asking (from the Authorization header).

Every route names what it needs with one of the `...Dep` types: `PrincipalDep` (any valid token),
`KioskDep` (a kiosk's token; the kiosk's name), `AdminDep` (the admin token). No valid token: 401 with
`WWW-Authenticate`; a valid token that may not do this: 403.
"""
# No `from __future__ import annotations`: FastAPI reads the dependencies from the annotations at run time.

import base64
import binascii
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

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


def credential(authorization: str) -> str:
    """The token an Authorization header carries: `Bearer <token>`, or HTTP Basic with the token as the
    password (a browser's login to the attendance page; the user name is not read). "" for anything else."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value, validate=True).decode().partition(":")[2].strip()
        except (binascii.Error, UnicodeDecodeError):
            return ""
    return value.strip() if scheme.lower() == "bearer" else ""


def principal(settings: SettingsDep, authorization: Annotated[str, Header()] = "") -> str:
    """"admin" or "kiosk:<name>": whose token this is (`Settings.principal` compares it, the one place tokens are)."""
    token = credential(authorization)
    who = settings.principal(token) if token else None
    if who is None:
        raise HTTPException(401, "a valid token is required (Authorization: Bearer <token>)",
                            headers={"WWW-Authenticate": 'Bearer, Basic realm="pi-fleet attendance"'})
    return who


PrincipalDep = Annotated[str, Depends(principal)]


def kiosk(who: PrincipalDep) -> str:
    """The kiosk's name: the server records which kiosk reported an event from its token, not from the event."""
    if not who.startswith("kiosk:"):
        raise HTTPException(403, "only a kiosk's token may report attendance")
    return who.removeprefix("kiosk:")


def admin(who: PrincipalDep) -> str:
    if who != "admin":
        raise HTTPException(403, "this needs the admin token")
    return who


KioskDep = Annotated[str, Depends(kiosk)]
AdminDep = Annotated[str, Depends(admin)]

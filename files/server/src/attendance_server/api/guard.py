"""What is decided from a request's headers alone, before its body is read: FastAPI reads a body before any
dependency runs, so a 400 MB upload without a token would be in memory before a dependency could refuse it.

- A state-changing request (POST, PUT, PATCH, DELETE) a browser sends from another site's page (but a trusted
  origin's): 403. The admin's HTTP Basic login is resent by the browser on its own, so without this a hostile
  page could post a form that replaces someone's embeddings. Requests that carry neither Sec-Fetch-Site nor
  Origin (the kiosks, curl, scripts) are not a browser's and pass.
- Any request but to a public path, without a valid token: 401 with `WWW-Authenticate`.

Whose token it is, the routes find in `request.state.principal` (api/deps.py). The body's size is limited per
route where the routes are joined (api/main.py), after these checks.
"""
from __future__ import annotations

import base64
import binascii

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ..config import Settings, origin_of

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Sec-Fetch-Site of a request from one of the server's own pages, or of one the user made (a typed URL, a bookmark).
OWN_SITE = frozenset({"same-origin", "none"})


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


def from_another_site(scope: Scope, headers: Headers, trusted_origins: frozenset[str]) -> str | None:
    """The header that shows a state-changing request comes from another site's page, or None. A trusted origin's
    pages may send them. Else browsers send Sec-Fetch-Site (the page's relation to the server, whatever proxy is
    between them); older ones only Origin, compared with the server's own origin as the request names it."""
    origin = headers.get("origin")
    if scope["method"] not in STATE_CHANGING or origin in trusted_origins:
        return None
    site = headers.get("sec-fetch-site")
    if site is not None:
        return None if site in OWN_SITE else f"Sec-Fetch-Site: {site}"
    if origin is None or origin == origin_of(scope["scheme"], headers.get("host", "")):
        return None
    return f"Origin: {origin}"


class Guard:
    """The checks above as a pure ASGI middleware: it answers a refused request itself and never reads its body."""

    def __init__(self, app: ASGIApp, settings: Settings, public_paths: frozenset[str]) -> None:
        self.app = app
        self.settings = settings
        self.public_paths = public_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = self.refusal(scope, Headers(scope=scope)) if scope["type"] == "http" else None
        if refusal is None:
            await self.app(scope, receive, send)
        else:
            await refusal(scope, receive, send)

    def refusal(self, scope: Scope, headers: Headers) -> JSONResponse | None:
        """403 or 401 for a request refused from its headers; None lets it through, its principal in its state."""
        sign = from_another_site(scope, headers, self.settings.trusted_origins)
        if sign is not None:
            return JSONResponse({"detail": f"refused: a state-changing request from another site's page ({sign}); "
                                           "send it from the server's own pages, or without a browser"}, 403)
        if scope["path"] in self.public_paths:
            return None
        token = credential(headers.get("authorization", ""))
        who = self.settings.principal(token) if token else None
        if who is None:
            unauthorized = JSONResponse({"detail": "a valid token is required (Authorization: Bearer <token>)"}, 401)
            # One challenge per header: a browser reads no second one from the same header (Chromium then shows
            # no login, and the attendance page could not be opened).
            for scheme in ("Bearer", "Basic"):
                unauthorized.headers.append("WWW-Authenticate", f'{scheme} realm="pi-fleet attendance"')
            return unauthorized
        scope.setdefault("state", {})["principal"] = who
        return None

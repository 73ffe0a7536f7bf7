"""The HTTP API (FastAPI; the contract is published as OpenAPI at /docs):

- kiosks (each with its own bearer token): `GET /api/employees/embeddings?model=<sha256>` (ETag,
  If-None-Match -> 304), `POST /toon/attendance` ({"E1", "S1", "TS1"} with an Idempotency-Key) and
  `POST /api/kiosk/heartbeat` (the kiosk's state; the last one is kept);
- the admin token: enrollment (`POST /api/employees/{id}/embeddings`, `.../photos`), the employee list,
  `POST /api/employees/{id}/left` (out of the galleries; embeddings deleted after `[retention] left_days`),
  `DELETE /api/employees/{id}`, `GET /api/attendance`, the kiosks' state (`GET /api/kiosks`, and `GET /metrics`
  for Prometheus), the registered Pis (`GET /api/registrations`, `DELETE /api/registrations/{serial}`) and the
  attendance page at `/` (a browser logs in with HTTP Basic, any user name and the admin token as password);
- the registration token (a fresh Pi's first boot): `POST /api/register` (its serial, hostname, model, revision,
  address and SSH host key).

Without a valid token: 401; a state-changing request a browser sends from another site's page: 403; a body
above its limit: 413 (the `[limits]` setting).
"""
# This module builds the app; the routes are in api/routes/, the auth in api/guard.py and api/deps.py.
# Everything in the docstring after its first paragraph is the API's description in the OpenAPI document (/docs).
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from . import __version__, retention
from .api.guard import Guard
from .api.main import api_router
from .api.routes import health
from .config import Settings
from .store import Store


def create_app(settings: Settings, store: Store | None = None) -> FastAPI:
    """The app on `store`, or on a store of the settings' database that it closes when it stops."""
    own = store is None
    store = store or Store(settings.database, settings.database_password)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with retention.pruning(store, settings.retention):
            yield
        if own:
            store.close()

    app = FastAPI(title="pi-fleet attendance server", version=__version__,
                  description=(__doc__ or "").split("\n\n", 1)[1], lifespan=lifespan)
    # The routes find these through api.deps (get_settings, get_store).
    app.state.settings = settings
    app.state.store = store
    app.include_router(api_router(settings.limits))
    # Anyone may ask these: the health check and the published contract (the OpenAPI document and its pages).
    public = {health.PATH, app.openapi_url, app.docs_url, app.swagger_ui_oauth2_redirect_url, app.redoc_url}
    app.add_middleware(Guard, settings=settings, public_paths=frozenset(p for p in public if p))
    return app

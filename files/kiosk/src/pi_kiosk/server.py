"""The HTTP session both the outbox and the gallery sync use to talk to the attendance server."""
from __future__ import annotations

import requests


def server_session(token: str = "", session: requests.Session | None = None) -> requests.Session:
    """A session (the given one, for tests) that sends the bearer token when one is configured."""
    session = session or requests.Session()
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    return session

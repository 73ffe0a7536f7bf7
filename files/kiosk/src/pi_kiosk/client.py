"""The attendance server as the kiosk sees it: its three endpoints, one session with the bearer
token, one timeout. The gallery sync, the outbox's sender and the heartbeat all talk through it."""
from __future__ import annotations

from typing import Any

import requests

EMBEDDINGS_PATH = "/api/employees/embeddings"
ATTENDANCE_PATH = "/toon/attendance"
HEARTBEAT_PATH = "/api/kiosk/heartbeat"


class ServerClient:
    def __init__(self, url: str, *, token: str = "", timeout: float = 5.0,
                 session: requests.Session | None = None) -> None:
        base = url.rstrip("/")
        self.embeddings_url = base + EMBEDDINGS_PATH
        self.attendance_url = base + ATTENDANCE_PATH
        self.heartbeat_url = base + HEARTBEAT_PATH
        self.timeout = timeout
        self.session = session or requests.Session()  # a given one: tests
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def get_embeddings(self, model: str, etag: str = "", *, stream: bool = False) -> requests.Response:
        """The gallery of `model` (its sha256); with the last ETag a 304 costs nothing."""
        headers = {"If-None-Match": etag} if etag else {}
        return self.session.get(self.embeddings_url, params={"model": model}, headers=headers,
                                timeout=self.timeout, stream=stream)

    def post_attendance(self, payload: dict[str, Any], key: str) -> requests.Response:
        # Not redirected: a redirected POST becomes a GET, and a 2xx to that GET (a login page)
        # would delete an event the server never received.
        return self.session.post(self.attendance_url, json=payload, timeout=self.timeout,
                                 headers={"Idempotency-Key": key}, allow_redirects=False)

    def post_heartbeat(self, body: dict[str, Any]) -> requests.Response:
        # Not redirected either: a redirected POST becomes a GET, whose 2xx would pass for a heartbeat taken.
        return self.session.post(self.heartbeat_url, json=body, timeout=self.timeout, allow_redirects=False)

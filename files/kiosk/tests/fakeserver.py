"""A real HTTP attendance server on 127.0.0.1 for the tests (see the `server` fixture)."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class FakeServer:
    """The attendance server: records posts, dedupes on Idempotency-Key, serves embeddings, takes heartbeats
(kept apart from the attendance posts)."""

    url: str = ""
    # Events the server recorded (answered 2xx): (Idempotency-Key, body).
    posts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # The Idempotency-Key of every POST, whatever the answer.
    attempts: list[str] = field(default_factory=list)
    # Status codes to answer the next posts with (then post_status); "hang" holds the request until
    # `release` is set (past any client timeout), then records it and answers 200; "redirect" answers
    # 302 to the embeddings URL (which a GET answers with 200).
    post_script: list[int | str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    post_status: int = 200
    embeddings: dict[str, Any] = field(default_factory=lambda: {"employees": []})
    etag: str = '"v1"'
    # Headers and query parameters of every GET.
    gets: list[dict[str, str]] = field(default_factory=list)
    get_queries: list[dict[str, list[str]]] = field(default_factory=list)
    get_status: int = 200  # answer embeddings GETs with this status instead (e.g. 401, 503)
    get_body: bytes | None = None  # answer embeddings GETs with these bytes instead of `embeddings` (a bad server)
    # Called after a post is recorded, before answering (used to kill the client mid-request).
    on_post: Callable[[], None] | None = None
    # Heartbeats taken (answered 2xx): (Authorization header, body); every heartbeat POST's time.monotonic(),
    # whatever the answer; the answers to the next ones ("hang" as for posts), then heartbeat_status.
    heartbeats: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    heartbeat_attempts: list[float] = field(default_factory=list)
    heartbeat_script: list[int | str] = field(default_factory=list)
    heartbeat_status: int = 200
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def unique_events(self) -> dict[str, dict[str, Any]]:
        return {key: body for key, body in self.posts}


def handler(state: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path == "/api/kiosk/heartbeat":
                self.heartbeat(body)
                return
            with state.lock:
                state.attempts.append(self.headers.get("Idempotency-Key", ""))
                action = state.post_script.pop(0) if state.post_script else state.post_status
            if action == "hang":
                state.release.wait(timeout=60)
                action = 200
            if action == "redirect":
                self.send_response(302)
                self.send_header("Location", "/api/employees/embeddings")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if isinstance(action, int) and 200 <= action < 300:
                with state.lock:
                    state.posts.append((self.headers.get("Idempotency-Key", ""), body))
                if state.on_post:
                    state.on_post()
            self.send_response(int(action))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def heartbeat(self, body: dict[str, Any]) -> None:
            with state.lock:
                state.heartbeat_attempts.append(time.monotonic())
                action = state.heartbeat_script.pop(0) if state.heartbeat_script else state.heartbeat_status
            if action == "hang":
                state.release.wait(timeout=60)
                action = 200
            if 200 <= int(action) < 300:
                with state.lock:
                    state.heartbeats.append((self.headers.get("Authorization", ""), body))
            self.send_response(int(action))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            state.gets.append(dict(self.headers))
            state.get_queries.append(parse_qs(url.query))
            status = state.get_status if url.path == "/api/employees/embeddings" else 404
            if status != 200:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.headers.get("If-None-Match") == state.etag:
                self.send_response(304)
                self.end_headers()
                return
            data = json.dumps(state.embeddings).encode() if state.get_body is None else state.get_body
            self.send_response(200)
            self.send_header("ETag", state.etag)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler

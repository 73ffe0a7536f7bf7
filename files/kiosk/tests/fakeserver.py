"""A real HTTP attendance server on 127.0.0.1 for the tests (see the `server` fixture)."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any


@dataclass
class FakeServer:
    """The attendance server: records posts, dedupes on Idempotency-Key, serves embeddings."""

    url: str = ""
    posts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # Status codes to answer the next posts with (then 200); "hang" sleeps past client timeouts.
    post_script: list[int | str] = field(default_factory=list)
    embeddings: dict[str, Any] = field(default_factory=lambda: {"employees": []})
    etag: str = '"v1"'
    gets: list[dict[str, str]] = field(default_factory=list)
    # Called after a post is recorded, before answering (used to kill the client mid-request).
    on_post: Callable[[], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def unique_events(self) -> dict[str, dict[str, Any]]:
        return {key: body for key, body in self.posts}


def handler(state: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with state.lock:
                action = state.post_script.pop(0) if state.post_script else 200
            if action == "hang":
                time.sleep(1.5)
                action = 200
            if action == 200:
                with state.lock:
                    state.posts.append((self.headers.get("Idempotency-Key", ""), body))
                if state.on_post:
                    state.on_post()
            self.send_response(int(action))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            state.gets.append(dict(self.headers))
            if self.path != "/api/employees/embeddings":
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.headers.get("If-None-Match") == state.etag:
                self.send_response(304)
                self.end_headers()
                return
            data = json.dumps(state.embeddings).encode()
            self.send_response(200)
            self.send_header("ETag", state.etag)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler

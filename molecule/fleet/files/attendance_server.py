#!/usr/bin/env python3
"""A minimal attendance server for the fleet scenario (stdlib only, runs on the emulated Pi).

POST /toon/attendance records each Idempotency-Key once (events.jsonl beside this file) and answers
200; POST /api/kiosk/heartbeat keeps the last body per kiosk token (heartbeats.json beside this file,
{token: {"received": Unix time, "body": ...}}) and answers 204; GET /api/employees/embeddings answers
an empty gallery. All answer 401 to a token that is not a test bed kiosk's ("test-token-..."). Enough
to prove delivery end to end; the project's reference server is the real specification.
"""
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

EVENTS = Path(__file__).with_name("events.jsonl")
HEARTBEATS = Path(__file__).with_name("heartbeats.json")
LOCK = threading.Lock()  # the server's threads read, change and replace heartbeats.json one at a time


class Handler(BaseHTTPRequestHandler):
    def refused(self) -> bool:
        if self.headers.get("Authorization", "").startswith("Bearer test-token-"):
            return False
        self.answer(401, b'{"detail": "invalid token"}')
        return True

    def do_POST(self) -> None:
        if self.refused():
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/api/kiosk/heartbeat":
            self.heartbeat(body)
            return
        key = self.headers.get("Idempotency-Key", "")
        seen = {json.loads(line)["key"] for line in EVENTS.read_text().splitlines()} if EVENTS.exists() else set()
        if key not in seen:
            with EVENTS.open("a") as fh:
                fh.write(json.dumps({"key": key, "event": body}) + "\n")
        self.answer(200, b"{}")

    def heartbeat(self, body: object) -> None:
        token = self.headers["Authorization"].removeprefix("Bearer ")
        with LOCK:
            last = json.loads(HEARTBEATS.read_text()) if HEARTBEATS.exists() else {}
            last[token] = {"received": time.time(), "body": body}
            # Replaced whole, so a test reading it never sees half a file.
            staged = HEARTBEATS.with_suffix(".tmp")
            staged.write_text(json.dumps(last))
            os.replace(staged, HEARTBEATS)
        self.answer(204, b"")

    def do_GET(self) -> None:
        if self.refused():
            return
        self.answer(200, b'{"employees": []}')

    def answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()

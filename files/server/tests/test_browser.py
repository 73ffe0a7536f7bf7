"""Cross-site request forgery, tried by a real browser (Debian's chromium, headless): a hostile page on another
site posts a photo form to the server with the admin's HTTP Basic credentials, to replace an employee's
embeddings. The server listens on 127.0.0.1, the page comes from localhost: another site to the browser."""
from __future__ import annotations

import base64
import http.server
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
import uvicorn
from conftest import ADMIN, LOBBY, MODEL_A, bearer, png
from starlette.types import ASGIApp, Receive, Scope, Send

from attendance_server import photos
from attendance_server.app import create_app
from attendance_server.config import EmbeddingModel, Settings

# What the forged upload would enroll: a photo becomes this vector (the pipeline is replaced, see `attempt`).
FORGED = [0.0, 1.0]


def chromium() -> list[str]:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "Debian's chromium is needed (scripts/testbed-setup installs it: apt-get install chromium)"
    return [found, "--headless", "--no-sandbox", "--disable-gpu"]


def recording(app: ASGIApp, answers: list[dict[str, Any]]) -> ASGIApp:
    """The app, noting each HTTP request's method, path, browser headers and the status it was answered."""
    async def recorded(scope: Scope, receive: Receive, send: Send) -> None:
        async def note(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = {k.decode(): v.decode() for k, v in scope["headers"]}
                answers.append({"method": scope["method"], "path": scope["path"], "status": message["status"],
                                "sec-fetch-site": headers.get("sec-fetch-site"), "origin": headers.get("origin"),
                                "authorized": "authorization" in headers})
            await send(message)

        await app(scope, receive, note if scope["type"] == "http" else send)

    return recorded


@contextmanager
def listening(app: ASGIApp) -> Iterator[str]:
    """The app served by uvicorn on a port of its own on 127.0.0.1 until the block ends: its host:port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60  # bounds a server that hangs while starting
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the attendance server did not start"
            time.sleep(0.05)
        try:
            yield f"127.0.0.1:{sock.getsockname()[1]}"
        finally:
            server.should_exit = True
            thread.join(timeout=60)


@contextmanager
def hostile_page() -> Iterator[tuple[str, dict[str, str]]]:
    """A page on http://localhost:<port>/ that, once loaded, posts a photo form to the URL put in the dict's
    "action" (the server's, with the admin's credentials in it, as a browser that logged in sends them):
    its origin, and that dict."""
    photo = base64.b64encode(png(32, 32)).decode()
    form = {"action": ""}

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            page = f"""<!doctype html><html><body>
<form id=forged method=post enctype=multipart/form-data action="{form["action"]}"><input type=file name=photos></form>
<script>
const photo = new DataTransfer();
photo.items.add(new File([Uint8Array.from(atob("{photo}"), c => c.charCodeAt(0))], "face.png", {{type: "image/png"}}));
document.querySelector("input").files = photo.files;
document.getElementById("forged").submit();
</script></body></html>""".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *_: Any) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://localhost:{server.server_address[1]}", form
        finally:
            server.shutdown()
            thread.join(timeout=60)


def attack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trusted: bool) -> tuple[list[dict[str, Any]], Any]:
    """Opens the hostile page in chromium against a server where E001 is enrolled with [1, 0], the page's
    origin trusted or not: how the server answered the photo posts, and E001's embeddings afterwards."""
    monkeypatch.setattr(photos, "embed", lambda _, paths: {MODEL_A: [FORGED for _ in paths]})
    answers: list[dict[str, Any]] = []
    with hostile_page() as (origin, form):
        settings = Settings(tmp_path / "attendance.sqlite3", ADMIN, {"lobby": LOBBY},
                            {"m": EmbeddingModel(Path(__file__), "arcface")},
                            trusted_origins=frozenset({origin} if trusted else set()))
        with listening(recording(create_app(settings), answers)) as server:
            enrolled = requests.post(f"http://{server}/api/employees/E001/embeddings", headers=bearer(ADMIN),
                                     json={"model": MODEL_A, "embeddings": [[1.0, 0.0]]}, timeout=30)
            assert enrolled.status_code == 201
            form["action"] = f"http://ops:{ADMIN}@{server}/api/employees/E001/photos?replace=true"
            # The virtual time budget lets the page submit its form and the browser load the answer.
            browser = subprocess.run([*chromium(), "--dump-dom", "--virtual-time-budget=10000", origin],
                                     capture_output=True, text=True, timeout=120)
            assert browser.returncode == 0, browser.stderr[-2000:]
            gallery = requests.get(f"http://{server}/api/employees/embeddings", params={"model": MODEL_A},
                                   headers=bearer(LOBBY), timeout=30).json()["employees"]
    return [a for a in answers if a["method"] == "POST" and a["path"].endswith("/photos")], gallery


def test_the_attendance_page_opens_in_a_browser_with_the_admin_token_as_password(tmp_path: Path) -> None:
    settings = Settings(tmp_path / "attendance.sqlite3", ADMIN, {"lobby": LOBBY})
    with listening(create_app(settings)) as server:
        page = subprocess.run([*chromium(), "--dump-dom", f"http://ops:{ADMIN}@{server}/"], capture_output=True,
                              text=True, timeout=120)
    assert "<h1>Attendance</h1>" in page.stdout, page.stdout[-2000:] + page.stderr[-2000:]


def test_a_hostile_page_cannot_replace_embeddings_with_the_admins_login(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    posts, gallery = attack(tmp_path, monkeypatch, trusted=False)
    assert posts, "chromium posted nothing: the hostile page did not run"
    # Refused at once, from the browser's own Sec-Fetch-Site: not even asked to log in.
    assert [(p["status"], p["sec-fetch-site"], p["authorized"]) for p in posts] == [(403, "cross-site", False)]
    assert gallery == [{"id": "E001", "embeddings": [[1.0, 0.0]]}]


def test_the_same_page_from_a_trusted_origin_does_replace_them(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The control: the browser, the page and its credentials do carry the attack where the server lets them,
    so the refusal above is the server's."""
    posts, gallery = attack(tmp_path, monkeypatch, trusted=True)
    # Asked to log in, the browser sends the credentials it has for the server and the form again.
    assert [(p["status"], p["authorized"]) for p in posts] == [(401, False), (201, True)]
    assert gallery == [{"id": "E001", "embeddings": [FORGED]}]

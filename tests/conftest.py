"""Shared helpers for the controller-side tests."""
from __future__ import annotations

import importlib.util
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The project as the collection pi_fleet.kiosk (collections/ansible_collections/pi_fleet/kiosk is the root): its
# modules import their module_utils as ansible_collections.pi_fleet.kiosk.plugins.module_utils.*, here as in Ansible.
COLLECTIONS = ROOT / "collections"
sys.path.insert(0, str(COLLECTIONS))
STORE = "ansible_collections.pi_fleet.kiosk.plugins.module_utils.pi_kiosk_store"


def load_module(path: Path) -> ModuleType:
    """Import a project file that is not on sys.path (a filter plugin, a test-bed script)."""
    spec = importlib.util.spec_from_loader(path.stem.replace("-", "_"), loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__file__ = str(path)
    exec(compile(path.read_text(), str(path), "exec"), module.__dict__)
    return module


class QuietHandler(BaseHTTPRequestHandler):
    """A test server's request handler: `reply` sends a whole answer; nothing is logged."""

    def reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """`handler` served by a thread on a free port of 127.0.0.1 until the block ends: the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)

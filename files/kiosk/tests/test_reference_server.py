"""The kiosk against the reference attendance server (files/server), over real HTTP: what the fake
server cannot prove, because the guarantees live on both sides (a repeated key stored once, ETags,
embeddings per model, enrollment from a photo with the kiosk's own pipeline)."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import requests
import uvicorn
from attendance_server.app import create_app
from attendance_server.config import EmbeddingModel, Settings
from attendance_server.store import Store
from fakeclock import FakeTime

from pi_kiosk.cards import builtin
from pi_kiosk.client import ServerClient
from pi_kiosk.heartbeat import Heartbeat
from pi_kiosk.metrics import HealthServer, Metrics
from pi_kiosk.outbox import Outbox, Sender
from pi_kiosk.runtime import file_sha256
from pi_kiosk.sync import GallerySync
from pi_kiosk.timekeeping import ClockStatus

ADMIN = "admin-token-0123456789"
KIOSK = "lobby-token-0123456789"


@contextmanager
def bound_socket() -> Iterator[socket.socket]:
    """A port of our own on 127.0.0.1: bound but not listening, it refuses connections (a server
    that is down) until `serving` listens on it, and no other process can take it meanwhile."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock


def url_of(sock: socket.socket) -> str:
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


class _Server(uvicorn.Server):
    """uvicorn's server, saying when its startup is over (listening, or failed)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.startup_over = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self.startup_over.set()


@contextmanager
def serving(settings: Settings, sock: socket.socket) -> Iterator[str]:
    """The reference server listening on `sock` until the block ends (then it is down again)."""
    server = _Server(uvicorn.Config(create_app(settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    # Bounds only a server that hangs while starting; a failed start ends the thread at once.
    assert server.startup_over.wait(timeout=60) and server.started, "the reference server did not start"
    try:
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=60)


@pytest.fixture
def settings(tmp_path: Path, mobilefacenet: Path) -> Settings:
    return Settings(tmp_path / "server.sqlite3", ADMIN, {"lobby": KIOSK},
                    {"mobilefacenet": EmbeddingModel(mobilefacenet, "arcface")})


def test_server_down_for_20_events_then_up_records_exactly_20(tmp_path: Path, settings: Settings) -> None:
    with bound_socket() as sock:
        box = Outbox(tmp_path / "outbox.sqlite3")
        sender = Sender(box, ServerClient(url_of(sock), token=KIOSK, timeout=30), retry_initial=0.01, retry_max=0.05)
        start = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
        events = [box.add(f"E{i:03d}", "IN", start + timedelta(minutes=i)) for i in range(20)]
        assert sender.deliver_due() == 0 and box.depth() == 20  # nothing listens: all kept
        assert sender.status.detail == "ConnectionError"  # refused, not timed out

        with serving(settings, sock) as url:
            deadline = time.monotonic() + 60  # bounds a failing test only
            while box.depth() and time.monotonic() < deadline:
                time.sleep(sender.retry_in())
                sender.deliver_due()
            assert box.depth() == 0
            # An answer lost on the way: the kiosk sends the same event again with its key.
            replay = requests.post(f"{url}/toon/attendance", json=events[0].payload, timeout=5,
                                   headers={"Authorization": f"Bearer {KIOSK}", "Idempotency-Key": events[0].key})
            assert replay.status_code == 200

    rows = Store(settings.database).events(limit=100)
    assert len(rows) == 20
    assert [r.key for r in reversed(rows)] == [e.key for e in events]  # newest first, so in the kiosk's order
    assert {r.kiosk for r in rows} == {"lobby"}


def sync_for(tmp_path: Path, url: str, model: Path) -> GallerySync:
    return GallerySync(ServerClient(url, token=KIOSK, timeout=30), tmp_path / "gallery.npz", 512, file_sha256(model),
                       builtin("arcface"))


def test_a_photo_enrolled_on_the_server_reaches_the_kiosk_once(
        tmp_path: Path, settings: Settings, mobilefacenet: Path, other_mobilefacenet: Path,
        astronaut_path: Path) -> None:
    with bound_socket() as sock, serving(settings, sock) as url:
        with astronaut_path.open("rb") as photo:
            enrolled = requests.post(f"{url}/api/employees/E042/photos", params={"name": "Eileen"}, timeout=120,
                                     files=[("photos", ("astronaut.png", photo, "image/png"))],
                                     headers={"Authorization": f"Bearer {ADMIN}"})
        assert enrolled.status_code == 201, enrolled.text
        assert enrolled.json()["embeddings"] == {file_sha256(mobilefacenet): 1}

        sync = sync_for(tmp_path, url, mobilefacenet)
        gallery = sync.fetch()
        assert gallery is not None and list(gallery.ids) == ["E042"]
        assert np.isclose(np.linalg.norm(gallery.matrix[0]), 1.0, atol=1e-3)
        assert sync.fetch() is None  # the ETag: nothing changed, nothing sent

        # Another model's kiosk gets none of these vectors: they live in another space.
        other = GallerySync(ServerClient(url, token=KIOSK, timeout=30), tmp_path / "other.npz", 512,
                            file_sha256(other_mobilefacenet), builtin("arcface"))
        fetched = other.fetch()
        assert fetched is not None and len(fetched) == 0


def test_a_person_erased_on_the_server_is_erased_by_the_kiosk_s_next_sync(
        tmp_path: Path, settings: Settings, mobilefacenet: Path) -> None:
    model = file_sha256(mobilefacenet)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    erased: list[frozenset[str]] = []
    with bound_socket() as sock, serving(settings, sock) as url:
        for employee, seed in (("E001", 1), ("E002", 2)):
            vector = np.random.default_rng(seed).standard_normal(512).tolist()
            r = requests.post(f"{url}/api/employees/{employee}/embeddings", headers=admin, timeout=30,
                              json={"model": model, "embeddings": [vector]})
            assert r.status_code == 201, r.text
        sync = sync_for(tmp_path, url, mobilefacenet)
        sync.on_erased = erased.append
        first = sync.fetch()
        assert first is not None and first.ids == ("E001", "E002") and erased == []

        assert requests.delete(f"{url}/api/employees/E001", headers=admin, timeout=30).status_code == 204
        after = sync.fetch()  # a new ETag: the kiosk gets the answer and its tombstone
        assert after is not None and after.ids == ("E002",) and erased == [frozenset({"E001"})]
        assert sync.fetch() is None  # and then nothing until the next change
        assert requests.delete(f"{url}/api/employees/E001", headers=admin, timeout=30).status_code == 404


def test_a_photo_without_exactly_one_face_is_refused_and_nothing_is_stored(
        tmp_path: Path, settings: Settings) -> None:
    blank = tmp_path / "blank.png"
    import cv2
    cv2.imwrite(str(blank), np.full((480, 640, 3), 127, np.uint8))
    with bound_socket() as sock, serving(settings, sock) as url, blank.open("rb") as photo:
        r = requests.post(f"{url}/api/employees/E001/photos", files=[("photos", ("blank.png", photo, "image/png"))],
                          headers={"Authorization": f"Bearer {ADMIN}"}, timeout=120)
    assert r.status_code == 422 and "0 usable faces" in r.json()["detail"]
    assert Store(settings.database).employees() == {}



def test_the_kiosk_s_heartbeat_is_the_server_s_and_marks_it_heard(tmp_path: Path, settings: Settings) -> None:
    """Every field the kiosk sends passes the server's bounds, and the server lists the kiosk its token names."""
    (tmp_path / "temp").write_text("61500\n")
    (tmp_path / "get_throttled").write_text("50005\n")
    clock = FakeTime(boot_id="boot-3")
    health = HealthServer(Metrics(clock.monotonic), "127.0.0.1", 0, stale_seconds=30, auth_degraded_seconds=300,
                          threads=2, wall=clock.wall)
    health.metrics.track_clock(lambda: ClockStatus(False, 90.0, 1, "/run/systemd/timesync/synchronized"))
    health.metrics.frame_done()
    with bound_socket() as sock:
        heartbeat = Heartbeat(ServerClient(url_of(sock), token=KIOSK, timeout=30), health.metrics, clock, "ab" * 32,
                              60.0, lambda seconds: True, release="0.2.0-1a2b3c4d",
                              thermal_path=tmp_path / "temp", throttled_path=tmp_path / "get_throttled")
        assert not heartbeat.beat(health.healthy)  # the server is down: nothing kept to send later
        with serving(settings, sock) as url:
            assert heartbeat.beat(health.healthy), heartbeat.status
            listed = requests.get(f"{url}/api/kiosks", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
            metrics = requests.get(f"{url}/metrics", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30).text
    health._server.server_close()  # never started: nothing to shut down
    (lobby,) = listed.json()["kiosks"]
    assert (lobby["name"], lobby["silent"]) == ("lobby", False)
    assert str(lobby["state"]).startswith("clock not synchronised for 1 min 30 s")
    sent = lobby["heartbeat"]
    assert sent == {**heartbeat.body(health.healthy), "sent_at": sent["sent_at"]}  # every field kept as sent
    assert (sent["temperature_celsius"], sent["throttled"], sent["boot_id"]) == (61.5, 0x50005, "boot-3")
    assert datetime.fromisoformat(sent["sent_at"]).timestamp() == clock.wall()
    assert 'attendance_kiosk_throttled{kiosk="lobby"} 1.0' in metrics.splitlines()

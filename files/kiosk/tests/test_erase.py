"""Erasure: a tombstone in a gallery answer, and `pi-kiosk forget`, leave nothing of the person on the kiosk:
not in memory, not in any file under its state and cache directories (every file's bytes are scanned, SQLite's
included), while everyone else is kept. And the outbox's retention deletes only old delivered and rejected events."""
from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from fakeserver import FakeServer
from kioskcli import cli

from pi_kiosk import config
from pi_kiosk.cards import builtin
from pi_kiosk.client import ServerClient
from pi_kiosk.match import Gallery
from pi_kiosk.outbox import Outbox, Sender
from pi_kiosk.runtime import file_sha256
from pi_kiosk.service import Service
from pi_kiosk.store import load_gallery, save_gallery

ARCFACE = builtin("arcface")
GONE, KEPT = "PERSON-0042", "KEEP-0001"  # ids no random bytes would spell
WHEN = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def vector(seed: int) -> np.ndarray:
    """A 512-d float32 row as the kiosk stores it (L2-normalised, as the arcface card says)."""
    row = np.random.default_rng(seed).standard_normal(512).astype(np.float32)
    return Gallery(["x"], row[None], ARCFACE).matrix[0]


def traces(root: Path, needles: list[bytes]) -> list[str]:
    """Every file under `root` that holds one of `needles`."""
    return sorted(str(path.relative_to(root)) for path in root.rglob("*")
                  if path.is_file() and any(needle in path.read_bytes() for needle in needles))


def person(employee: str, *rows: np.ndarray) -> list[bytes]:
    """What would betray a person in a file: the id as text (SQLite's UTF-8, numpy's UTF-32) and each vector."""
    return [employee.encode(), employee.encode("utf-32-le"), *(row.tobytes() for row in rows)]


def kiosk_state(tmp_path: Path, cfg: config.Config) -> None:
    """Both people enrolled here and in the synced gallery, with events in every state in the outbox."""
    model = file_sha256(cfg.embedder.model_path)
    save_gallery(cfg.sync.cache_path, Gallery([GONE, KEPT], np.stack([vector(1), vector(2)]), ARCFACE), model, '"v1"')
    save_gallery(cfg.sync.enrolled_path, Gallery([GONE, KEPT], np.stack([vector(3), vector(4)]), ARCFACE), model)
    box = Outbox(cfg.outbox.path)
    for employee in (GONE, KEPT):
        box.delivered(box.add(employee, "IN", WHEN).key)
        box.reject(box.add(employee, "IN", WHEN).key, 422, f'{{"detail": "{employee}"}}')
        box.add(employee, "IN", WHEN)
    box.close()


def outbox_ids(path: Path) -> list[str]:
    box = Outbox(path)
    try:
        return sorted(employee for employee, _ in box.reported())
    finally:
        box.close()


def assert_gone_and_kept(tmp_path: Path, cfg: config.Config, service: Service) -> None:
    assert GONE not in service.pipeline.gallery and KEPT in service.pipeline.gallery
    assert GONE not in service.cooldown._last_seen and KEPT in service.cooldown._last_seen
    for path in (cfg.sync.cache_path, cfg.sync.enrolled_path):
        assert set(load_gallery(path, ARCFACE).gallery.ids) == {KEPT}
    assert outbox_ids(cfg.outbox.path) == [KEPT] * 3  # pending, delivered and rejected: all of GONE's went
    assert traces(tmp_path, person(GONE, vector(1), vector(3))) == []
    # The scan finds what is there: the kept person, in the gallery files and the outbox.
    assert {"gallery.npz", "enrolled.npz", "outbox.sqlite3"} <= set(traces(tmp_path, person(KEPT, vector(2))))


def test_a_tombstone_in_the_sync_answer_erases_the_person_from_everything(
        write_config: Callable[..., Path], tmp_path: Path, server: FakeServer) -> None:
    cfg = config.load(write_config(server.url))
    kiosk_state(tmp_path, cfg)
    service = Service(cfg)
    assert {GONE, KEPT} <= set(service.pipeline.gallery.ids)
    for employee in (GONE, KEPT):
        service.cooldown.should_report(employee)
    assert traces(tmp_path, person(GONE, vector(1), vector(3)))  # before: in the files

    # The server no longer holds GONE (a kiosk whose gallery never had her would learn of it all the same).
    server.embeddings = {"employees": [{"id": KEPT, "embeddings": [vector(2).tolist()]}], "erased": [GONE]}
    server.etag = '"v2"'
    service.sync_once()
    service._catch_up()  # the frame loop's part, before its next frame
    assert_gone_and_kept(tmp_path, cfg, service)
    service.outbox.close()


def test_forget_erases_at_once_beside_the_running_service(write_config: Callable[..., Path], tmp_path: Path) -> None:
    cfg_path = write_config()
    cfg = config.load(cfg_path)
    kiosk_state(tmp_path, cfg)
    service = Service(cfg)  # its files open, as when it runs
    for employee in (GONE, KEPT):
        service.cooldown.should_report(employee)

    done = cli("forget", "--config", str(cfg_path), GONE, "NOBODY-7")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"{GONE}: removed 1 synced embedding(s), 1 enrolled embedding(s), 3 outbox event(s) "
        "(1 pending, 1 delivered, 1 rejected)",
        "NOBODY-7: not found on this kiosk"]
    assert GONE not in done.stderr  # the journal gets counts only
    service._catch_up()  # the service sees the rewritten files and drops her from memory
    assert_gone_and_kept(tmp_path, cfg, service)
    service.outbox.close()

    again = cli("forget", "--config", str(cfg_path), GONE)
    assert (again.returncode, again.stdout) == (0, f"{GONE}: not found on this kiosk\n")
    empty = cli("forget", "--config", str(cfg_path), " ")
    assert empty.returncode == 2 and "an employee id must not be empty" in empty.stderr


def test_forget_never_creates_the_outbox(write_config: Callable[..., Path], tmp_path: Path) -> None:
    done = cli("forget", "--config", str(write_config()), GONE)
    assert (done.returncode, done.stdout) == (0, f"{GONE}: not found on this kiosk\n")
    assert not (tmp_path / "outbox.sqlite3").exists()


def test_retention_deletes_only_old_delivered_and_rejected_events(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.sqlite3")
    keys = {name: box.add(name, "IN", WHEN).key for name in ("pending", "delivered", "rejected", "new-d", "new-r")}
    for name in ("delivered", "new-d"):
        box.delivered(keys[name])
    for name in ("rejected", "new-r"):
        box.reject(keys[name], 422, "")
    now = time.time()
    assert box.prune(keep_delivered=60, keep_rejected=60, now=now + 30) == 0
    box._db.execute("UPDATE delivered SET delivered_at = ? WHERE idempotency_key = ?", (now - 120, keys["delivered"]))
    box._db.execute("UPDATE rejected SET rejected_at = ? WHERE idempotency_key = ?", (now - 120, keys["rejected"]))
    assert box.prune(keep_delivered=60, keep_rejected=60, now=now) == 2
    assert sorted(employee for employee, _ in box.reported()) == ["new-d", "new-r", "pending"]
    assert box.prune(keep_delivered=0, keep_rejected=0, now=now + 1e9) == 2
    assert [employee for employee, _ in box.reported()] == ["pending"]  # never pruned: not delivered yet


def test_keep_days_0_deletes_an_event_once_delivered(tmp_path: Path, server: FakeServer) -> None:
    box = Outbox(tmp_path / "outbox.sqlite3")
    box.add("E001", "IN", WHEN)
    assert Sender(box, ServerClient(server.url, timeout=30), keep_days=0).deliver_due() == 1
    assert box.reported() == [] and len(server.posts) == 1


def test_keep_days_is_validated(write_config: Callable[..., Path]) -> None:
    assert config.load(write_config(outbox={"keep_days": 0})).outbox.keep_days == 0
    done = cli("check", "--config-only", "--config", str(write_config(outbox={"keep_days": -1})))
    assert done.returncode == 2 and "outbox.keep_days = -1: expected an integer from 0 to 3650" in done.stderr

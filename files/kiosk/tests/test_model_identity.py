"""Embeddings are only compared with embeddings of the same model, named by its sha256."""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from fakeserver import FakeServer
from kioskcli import cli

from pi_kiosk import config, runtime
from pi_kiosk.align import Aligner
from pi_kiosk.cards import builtin
from pi_kiosk.client import ServerClient
from pi_kiosk.config import EmbedderConfig
from pi_kiosk.detect import MtcnnDetector
from pi_kiosk.embed import OnnxEmbedder, load_embedder
from pi_kiosk.enroll import enroll
from pi_kiosk.service import Service
from pi_kiosk.store import load_gallery
from pi_kiosk.sync import GallerySync

ARCFACE = builtin("arcface")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_embedder_is_named_by_its_onnx_files_hash(mobilefacenet: Path, tmp_path: Path) -> None:
    emb = OnnxEmbedder(mobilefacenet, ARCFACE, cache_dir=tmp_path, sha256=sha256(mobilefacenet).upper())
    assert emb.model_sha256 == sha256(mobilefacenet)
    (cached,) = tmp_path.glob("*.onnx")
    assert emb.model_sha256[:16] in cached.name  # the same hash names the optimised-model cache


def test_the_coral_fallback_carries_the_hash_and_reads_the_model_once(mobilefacenet: Path, tmp_path: Path) -> None:
    tflite = tmp_path / "model_edgetpu.tflite"
    tflite.write_bytes(b"TFL3")
    cfg = EmbedderConfig(model_path=mobilefacenet, card="arcface", backend="coral", coral_model_path=tflite,
                         cache_dir=tmp_path, model_sha256=sha256(mobilefacenet))
    runtime._sha256.cache_clear()
    emb = load_embedder(cfg)
    assert isinstance(emb, OnnxEmbedder) and emb.model_sha256 == sha256(mobilefacenet)
    info = runtime._sha256.cache_info()
    assert (info.misses, info.hits) == (1, 1)  # hashed for the Coral attempt, reused by the fallback


def test_enrollments_of_another_model_are_not_used_and_not_overwritten(
        write_config: Callable[..., Path], mobilefacenet: Path, other_mobilefacenet: Path, astronaut_path: Path,
        tmp_path: Path) -> None:
    first = write_config()
    assert cli("enroll", "--config", str(first), "--id", "E001", str(astronaut_path)).returncode == 0
    enrolled = tmp_path / "enrolled.npz"
    original = enrolled.read_bytes()
    other = write_config(embedder={"model_path": str(other_mobilefacenet)})

    check = cli("check", "--offline", "--config", str(other))
    assert check.returncode == 0, check.stderr
    assert "gallery 0 people" in check.stdout
    assert check.stderr.count("not used") == 1
    assert (f"holds embeddings of model {sha256(mobilefacenet)[:12]}, not of the configured model "
            f"{sha256(other_mobilefacenet)[:12]}: not used; re-enroll everyone with this model") in check.stderr

    refused = cli("enroll", "--config", str(other), "--id", "E002", str(astronaut_path))
    assert refused.returncode == 1
    assert f"holds enrollments made with model {sha256(mobilefacenet)[:12]}" in refused.stderr
    assert "add --new-model" in refused.stderr
    assert enrolled.read_bytes() == original

    switched = cli("enroll", "--config", str(other), "--id", "E002", "--new-model", str(astronaut_path))
    assert switched.returncode == 0, switched.stderr
    aside = tmp_path / f"enrolled.{sha256(mobilefacenet)[:12]}.npz"
    assert aside.read_bytes() == original  # nothing already recorded is lost
    new = load_gallery(enrolled, ARCFACE)
    assert new.model == sha256(other_mobilefacenet) and new.gallery.ids == ("E002",)


def test_a_0_1_enrollment_file_is_set_aside_under_its_own_name(write_config: Callable[..., Path],
                                                               astronaut_path: Path, tmp_path: Path) -> None:
    enrolled = tmp_path / "enrolled.npz"
    rows = np.random.default_rng(0).standard_normal((1, 512)).astype(np.float32)
    np.savez(enrolled, ids=np.asarray(["E001"]), vectors=rows, etag=np.str_(""))  # 0.1 recorded no model
    (tmp_path / "enrolled.no-model.npz").write_bytes(b"an earlier switch")
    done = cli("enroll", "--config", str(write_config()), "--id", "E002", "--new-model", str(astronaut_path))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "enrolled.no-model.npz").read_bytes() == b"an earlier switch"
    assert load_gallery(tmp_path / "enrolled.no-model.1.npz", ARCFACE).gallery.ids == ("E001",)


def test_a_new_model_never_matches_the_old_models_vectors(write_config: Callable[..., Path], astronaut: np.ndarray,
                                                          mobilefacenet: Path, other_mobilefacenet: Path,
                                                          server: FakeServer, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    old = OnnxEmbedder(mobilefacenet, ARCFACE)
    face = MtcnnDetector(min_face_size=40).detect(astronaut)[0]
    vector = old.embed(Aligner(ARCFACE).align(astronaut, face.landmarks))
    server.embeddings = {"employees": [{"id": "E777", "embeddings": [vector.tolist()]}]}
    video = tmp_path / "visit.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 5, (512, 512))
    for _ in range(3):
        writer.write(astronaut)
    writer.release()
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), astronaut)
    cfg = config.load(write_config(camera={"source": str(video)},
                                   embedder={"model_path": str(other_mobilefacenet)}, matching={"threshold": -1.0}))
    GallerySync(ServerClient(server.url), cfg.sync.cache_path, old.dim, old.model_sha256, ARCFACE).fetch()
    enroll("E001", [photo], MtcnnDetector(min_face_size=40), old, cfg.sync.enrolled_path)
    service = Service(cfg)
    # A threshold of -1 would match anyone against any vector: nobody is matched because there are none.
    assert len(service.pipeline.gallery) == 0
    service.run()
    assert service.metrics.faces._value.get() == 3 and service.metrics.matches._value.get() == 0
    assert sum("not used" in r.getMessage() for r in caplog.records) == 2  # one for the cache, one for enrollments

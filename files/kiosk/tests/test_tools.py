"""Random-weight model generation, INT8 quantisation, and the wheel the Pis install."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from pi_kiosk import quantize as quantize_module
from pi_kiosk import synthetic
from pi_kiosk.cards import builtin
from pi_kiosk.quantize import quantize

KIOSK = Path(__file__).resolve().parents[1]


def test_mobilefacenet_is_architecture_faithful(mobilefacenet: Path) -> None:
    model = onnx.load(str(mobilefacenet), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    assert props[synthetic.WEIGHTS_KEY] == "random" and "RANDOM weights" in model.doc_string
    assert 1.1e6 < int(props["pi_kiosk.params"]) < 1.3e6  # the paper: ~1M plus a 512-d head
    assert 0.20e9 < int(props["pi_kiosk.macs"]) < 0.24e9  # 0.22 GMAC
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    depthwise = [n for n in convs if next(a.i for a in n.attribute if a.name == "group") > 1]
    assert len(convs) == 50 and len(depthwise) == 17  # 15 bottlenecks, a depthwise stem, the GDConv


def test_resnet50_counts_match_arcface_iresnet50(tmp_path: Path) -> None:
    info = synthetic.build("resnet50", tmp_path / "r50.onnx")
    assert 43.0e6 < info.params < 44.0e6 and 6.2e9 < info.macs < 6.4e9
    assert info.path.stat().st_size > 170e6
    info.path.unlink()  # 170 MB: not kept around


def test_unknown_architecture(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expected one of mobilefacenet, resnet50"):
        synthetic.build("vgg", tmp_path / "x.onnx")


def test_quantize_reports_agreement_with_fp32(mobilefacenet: Path, astronaut_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "int8.onnx"
    report = quantize(mobilefacenet, out, builtin("arcface"), [astronaut_path])
    assert report.real_faces and report.faces == 2  # the face and its mirror image
    assert -1.0 <= report.cosine_min <= report.cosine_mean <= 1.0
    assert report.int8_bytes < report.fp32_bytes / 2
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert "cosine(FP32, INT8)" in str(report)
    assert report.activations == quantize_module.default_activations()


@pytest.mark.parametrize(("activations", "zero_point_type"), [("uint8", onnx.TensorProto.UINT8),
                                                              ("int8", onnx.TensorProto.INT8)])
def test_quantize_uses_the_activation_type_asked_for(mobilefacenet: Path, astronaut_path: Path, tmp_path: Path,
                                                     activations: str, zero_point_type: int) -> None:
    out = tmp_path / "int8.onnx"
    assert quantize(mobilefacenet, out, builtin("arcface"), [astronaut_path], activations=activations).activations \
        == activations
    graph = onnx.load(str(out)).graph
    # The model's input is quantized first: its zero point has the activations' type.
    first = next(n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == graph.input[0].name)
    zero_point = next(i for i in graph.initializer if i.name == first.input[2])
    assert zero_point.data_type == zero_point_type


def test_quantize_refuses_another_activation_type(mobilefacenet: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="activations = 'int4': expected one of uint8, int8"):
        quantize(mobilefacenet, tmp_path / "int8.onnx", builtin("arcface"), activations="int4")


def build_wheel(source: Path, out: Path) -> list[str]:
    # From a copy: setuptools reuses an in-tree build/ directory, stale files included.
    copy = out / "src"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "tests", "__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(out), str(copy)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    return zipfile.ZipFile(next(out.glob("*.whl"))).namelist()


def test_the_detector_ships_in_its_own_wheel_with_its_licence(tmp_path: Path) -> None:
    names = build_wheel(KIOSK.parent / "mtcnn", tmp_path)
    for name in ["pnet.onnx", "rnet.onnx", "onet.onnx", "LICENSE", "py.typed"]:
        assert f"pi_fleet_mtcnn/{name}" in names


def test_kiosk_wheel_is_code_and_needs_the_detector(tmp_path: Path) -> None:
    names = build_wheel(KIOSK, tmp_path)
    (wheel,) = tmp_path.glob("pi_fleet_kiosk-*.whl")
    assert "pi_kiosk/py.typed" in names
    assert {f"pi_kiosk/cards/{c}.toml" for c in ("arcface", "sface", "dlib-resnet-v1")} <= set(names)  # built-in cards
    assert not [n for n in names if n.endswith(".onnx")], "a code-only release would ship the networks again"
    assert wheel.stat().st_size < 200_000
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "Requires-Dist: pi-fleet-mtcnn==1.0.0" in meta.splitlines()
    (onnxruntime,) = [line for line in meta.splitlines() if line.startswith("Requires-Dist: onnxruntime")]
    assert "!=1.21.0" in onnxruntime  # dies with "Illegal instruction" on a Raspberry Pi 4
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "pi-kiosk = pi_kiosk.cli:main" in entry


def test_the_tiny_model_keeps_the_contract_at_a_fraction_of_the_cost(tmp_path: Path) -> None:
    info = synthetic.build("tiny", tmp_path / "tiny.onnx", dim=512)
    assert info.macs < 1_000_000 and info.params < 50_000
    session = ort.InferenceSession(str(info.path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.shape[1:], out.shape[1:]) == ([3, 112, 112], [512])
    vector = session.run(None, {inp.name: np.ones((1, 3, 112, 112), np.float32)})[0]
    assert vector.shape == (1, 512) and np.isfinite(vector).all() and np.abs(vector).sum() > 0

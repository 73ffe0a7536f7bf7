"""The PReLU rewrite: same outputs, no per-channel PRelu left, everything else untouched."""
from __future__ import annotations

from collections import Counter
from importlib import resources
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper, numpy_helper

from pi_kiosk import graph
from pi_kiosk.cards import builtin
from pi_kiosk.embed import OnnxEmbedder

MTCNN = resources.files("pi_fleet_mtcnn")


def run(model: bytes, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    outputs: list[np.ndarray] = session.run(None, {session.get_inputs()[0].name: x})
    return outputs


def ops(model: bytes) -> Counter[str]:
    return Counter(n.op_type for n in onnx.load_from_string(model).graph.node)


WEIGHT = np.random.default_rng(0).standard_normal((4, 3, 1, 1)).astype(np.float32)


def conv_prelu(slope: np.ndarray, opset: int = 17) -> bytes:
    """x -> 1x1 Conv (WEIGHT: 3 -> 4 channels) -> PRelu(slope) -> y."""
    graph_ = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("PRelu", ["c", "a"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 5, 5])],
        [numpy_helper.from_array(WEIGHT, "w"), numpy_helper.from_array(slope.astype(np.float32), "a")])
    model = helper.make_model(graph_, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    data: bytes = model.SerializeToString()
    return data


@pytest.mark.parametrize("slope", [
    np.array([-0.5, 0.0, 0.3, 1.7]).reshape(4, 1, 1),  # negative and above 1: trained MTCNN has both
    np.array([-0.5, 0.0, 0.3, 1.7]).reshape(1, 4, 1, 1),
    np.array([0.25]),  # one slope for all channels
])
def test_rewrite_is_exact_for_any_slope(slope: np.ndarray) -> None:
    model = conv_prelu(slope)
    fast = graph.fast_prelu(model)
    assert fast is not None and "PRelu" not in ops(fast)
    x = np.random.default_rng(1).standard_normal((1, 3, 5, 5)).astype(np.float32) * 10
    conv = np.einsum("oc,nchw->nohw", WEIGHT[:, :, 0, 0], x)
    expected = np.where(conv > 0, conv, conv * slope.reshape(-1, 1, 1))
    np.testing.assert_allclose(run(fast, x)[0], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(run(model, x)[0], expected, rtol=1e-5, atol=1e-5)  # ORT's PRelu agrees


@pytest.mark.parametrize("slope", [np.full((5, 1), 0.2), np.full((1, 1, 1, 5), 0.2)])  # along rows, columns
def test_other_broadcasts_are_left_alone(slope: np.ndarray) -> None:
    assert graph.fast_prelu(conv_prelu(slope)) is None


def test_older_opsets_external_data_and_non_onnx_bytes_are_left_alone() -> None:
    assert graph.fast_prelu(conv_prelu(np.full((4, 1, 1), 0.2), opset=8)) is None
    external = onnx.load_from_string(conv_prelu(np.full((4, 1, 1), 0.2)))
    weight = external.graph.initializer[0]
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="weights.bin")
    weight.ClearField("raw_data")
    assert graph.fast_prelu(external.SerializeToString()) is None  # its data file is next to the model
    with pytest.raises(DecodeError):
        graph.fast_prelu(b"\x00\x01 definitely not a protobuf " * 50)


@pytest.mark.parametrize(("name", "shape", "left"), [
    ("pnet.onnx", (1, 40, 30, 3), 0), ("rnet.onnx", (6, 24, 24, 3), 1), ("onet.onnx", (3, 48, 48, 3), 1)])
def test_mtcnn_networks_give_the_same_outputs(name: str, shape: tuple[int, ...], left: int) -> None:
    model = (MTCNN / name).read_bytes()
    fast = graph.fast_prelu(model)
    assert fast is not None
    assert ops(fast)["PRelu"] == left  # the one after a fully connected layer stays
    x = np.random.default_rng(2).uniform(-1, 1, shape).astype(np.float32)
    for before, after in zip(run(model, x), run(fast, x), strict=True):
        np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-5)


def test_mobilefacenet_keeps_its_outputs_and_metadata(mobilefacenet: Path) -> None:
    model = mobilefacenet.read_bytes()
    fast = graph.fast_prelu(model)
    assert fast is not None and ops(fast)["PRelu"] == 0 and ops(model)["PRelu"] == 33
    before, after = onnx.load_from_string(model), onnx.load_from_string(fast)
    # Everything but the rewritten nodes passes through untouched.
    assert after.metadata_props == before.metadata_props and after.doc_string == before.doc_string
    assert after.graph.input == before.graph.input and after.graph.output == before.graph.output
    x = np.random.default_rng(3).uniform(-1, 1, (1, 3, 112, 112)).astype(np.float32)
    (a,), (b,) = run(model, x), run(fast, x)
    assert float(a.ravel() @ b.ravel() / np.linalg.norm(a) / np.linalg.norm(b)) > 0.99999


def test_the_embedder_runs_the_rewritten_graph(mobilefacenet: Path, tmp_path: Path) -> None:
    OnnxEmbedder(mobilefacenet, builtin("arcface"), cache_dir=tmp_path)
    (cached,) = tmp_path.glob("*.onnx")
    assert f"-g{graph.VERSION}.onnx" in cached.name  # a rewrite change invalidates the cache
    assert "PRelu" not in ops(cached.read_bytes())

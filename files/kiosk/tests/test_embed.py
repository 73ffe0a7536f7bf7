from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from pi_kiosk.cards import CardError, builtin
from pi_kiosk.config import EmbedderConfig
from pi_kiosk.embed import OnnxEmbedder, load_embedder
from pi_kiosk.errors import ModelError

ARCFACE = builtin("arcface")


def tiny_model(path: Path, in_shape: list[int | str], out_dim: int | str = 128, *, in_type: int = TensorProto.FLOAT,
               extra_input: bool = False, extra_output: bool = False) -> Path:
    """Global average pool -> flatten -> MatMul to out_dim: cheap models with chosen contracts."""
    channels = in_shape[1] if len(in_shape) == 4 and isinstance(in_shape[1], int) else 3
    nodes = [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
             helper.make_node("GlobalAveragePool", ["xf"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("MatMul", ["f", "w"], ["y"])]
    dim = out_dim if isinstance(out_dim, int) else 128
    w = helper.make_tensor("w", TensorProto.FLOAT, [channels, dim], np.ones(channels * dim, np.float32))
    inputs = [helper.make_tensor_value_info("x", in_type, in_shape)]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", out_dim])]
    if extra_input:
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1]))
        nodes.append(helper.make_node("Identity", ["mask"], ["mask_out"]))
        outputs.append(helper.make_tensor_value_info("mask_out", TensorProto.FLOAT, [1]))
    if extra_output and not extra_input:
        nodes.append(helper.make_node("Identity", ["f"], ["pooled"]))
        outputs.append(helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["N", channels]))
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path))
    return path


def test_mobilefacenet_embeddings_are_unit_length_and_deterministic(mobilefacenet: Path, tmp_path: Path) -> None:
    emb = OnnxEmbedder(mobilefacenet, ARCFACE, cache_dir=tmp_path)
    assert emb.dim == 512
    face = np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    first = emb.embed(face).copy()
    assert first.dtype == np.float32 and first.shape == (512,)
    assert np.linalg.norm(first) == pytest.approx(1.0, abs=1e-5)
    other = emb.embed(np.zeros_like(face)).copy()
    assert not np.allclose(first, other)
    np.testing.assert_array_equal(emb.embed(face), first)


def test_preprocessing_matches_the_contract(mobilefacenet: Path) -> None:
    """The bound input holds RGB, channels first, scaled to [-1, 1]."""
    emb = OnnxEmbedder(mobilefacenet, ARCFACE)
    face = np.zeros((112, 112, 3), dtype=np.uint8)
    face[..., 0] = 255  # blue in BGR
    emb.embed(face)
    tensor = emb._input[0]
    assert tensor[2].min() == pytest.approx(1.0) and tensor[0].max() == pytest.approx(-1.0)  # B is channel 2 in RGB


def test_optimised_model_cache_is_written_then_used(mobilefacenet: Path, tmp_path: Path) -> None:
    face = np.full((112, 112, 3), 90, dtype=np.uint8)
    fresh = OnnxEmbedder(mobilefacenet, ARCFACE, cache_dir=tmp_path).embed(face).copy()
    cached = list(tmp_path.glob("*.onnx"))
    assert len(cached) == 1 and "ort" in cached[0].name
    assert not list(tmp_path.glob(".*.tmp"))
    mtime = cached[0].stat().st_mtime_ns
    reused = OnnxEmbedder(mobilefacenet, ARCFACE, cache_dir=tmp_path).embed(face)
    assert cached[0].stat().st_mtime_ns == mtime
    np.testing.assert_allclose(reused, fresh, atol=1e-5)


def test_corrupt_cache_entry_is_discarded(mobilefacenet: Path, tmp_path: Path) -> None:
    OnnxEmbedder(mobilefacenet, ARCFACE, cache_dir=tmp_path)
    (entry,) = tmp_path.glob("*.onnx")
    entry.write_bytes(b"garbage")
    assert OnnxEmbedder(mobilefacenet, ARCFACE, cache_dir=tmp_path).dim == 512
    assert entry.stat().st_size > 1000


def test_random_weight_models_are_announced(mobilefacenet: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        OnnxEmbedder(mobilefacenet, ARCFACE)
    assert "RANDOM weights" in caplog.text


def test_sha256_is_checked(mobilefacenet: Path) -> None:
    with pytest.raises(ModelError, match=r"sha256 is [0-9a-f]{64}, but the configuration expects 0000"):
        OnnxEmbedder(mobilefacenet, ARCFACE, sha256="0" * 64)


def test_corrupt_model_file(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x00\x01 definitely not a protobuf " * 50)
    with pytest.raises(ModelError, match=r"embedder.model_path = '.*model.onnx': not a valid ONNX model "
                                         r"\(Invalid protobuf\)"):
        OnnxEmbedder(bad, ARCFACE)


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model file not found"):
        OnnxEmbedder(tmp_path / "nope.onnx", ARCFACE)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"in_shape": [1, 3, 224, 224]}, r"has shape \[1, 3, 224, 224\]; built-in card 'arcface' says \[1, 3, 112, 112\]"),
    ({"in_shape": [1, 112, 112, 3]}, r"looks like NHWC"),
    ({"in_shape": [1, 3, 112]}, r"has shape \[1, 3, 112\]"),
    ({"in_shape": [1, 3, 112, 112], "in_type": TensorProto.UINT8}, r"is tensor\(uint8\); .* needs tensor\(float\)"),
    ({"in_shape": [1, 3, 112, 112], "out_dim": 100},
     r"output 'y' has shape \[.*, 100\]; .* says \[1, 128\] or \[1, 512\]"),
    ({"in_shape": [1, 3, 112, 112], "extra_input": True}, r"has 2 inputs \(x, mask\)"),
    ({"in_shape": [1, 3, 112, 112], "extra_output": True}, r"has 2 outputs \(y, pooled\)"),
])
def test_wrong_contract_fails_clearly(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    path = tiny_model(tmp_path / "m.onnx", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(CardError, match=message):
        OnnxEmbedder(path, ARCFACE)


def test_symbolic_dims_are_accepted_and_resolved_by_a_run(tmp_path: Path) -> None:
    assert OnnxEmbedder(tiny_model(tmp_path / "a.onnx", ["N", 3, "H", "W"], 512), ARCFACE).dim == 512
    assert OnnxEmbedder(tiny_model(tmp_path / "b.onnx", ["N", 3, 112, 112], "D"), ARCFACE).dim == 128


def test_coral_falls_back_when_the_delegate_cannot_load(mobilefacenet: Path, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """LiteRT is installed here but libedgetpu is not: the real delegate load fails."""
    tflite = tmp_path / "model_edgetpu.tflite"
    tflite.write_bytes(b"TFL3")
    cfg = EmbedderConfig(model_path=mobilefacenet, card="arcface", backend="coral", coral_model_path=tflite,
                         cache_dir=tmp_path)
    with caplog.at_level(logging.WARNING):
        emb = load_embedder(cfg)
    assert isinstance(emb, OnnxEmbedder) and emb.dim == 512
    assert "falling back to ONNX Runtime" in caplog.text and "libedgetpu.so.1" in caplog.text


def test_coral_falls_back_without_litert(mobilefacenet: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # makes the import fail
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    cfg = EmbedderConfig(model_path=mobilefacenet, card="arcface", backend="coral",
                         coral_model_path=tmp_path / "m.tflite", cache_dir=tmp_path)
    with caplog.at_level(logging.WARNING):
        assert isinstance(load_embedder(cfg), OnnxEmbedder)
    assert "LiteRT is not installed" in caplog.text

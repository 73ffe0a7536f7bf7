"""Architecture-faithful face-embedding models with RANDOM weights, for tests and benchmarks.

No trained face-recognition weights can be had offline, so tests and benchmarks run models with
the real layer structure and cost (and so the real speed and memory) but random weights: they
recognise nobody. Each says so in its doc string and in the metadata key `pi_kiosk.weights`,
which the service warns about at load.

- MobileFaceNet (Chen et al., 2018): depthwise bottlenecks, global depthwise conv; with a 512-d
  output about 1.2M parameters and 0.22 GMAC.
- ResNet-50 as used by ArcFace (InsightFace "iresnet50": BN-conv-BN-PReLU-conv-BN blocks,
  [3, 4, 14, 3]): about 43.6M parameters and 6.3 GMAC.
- tiny: two strided convolutions and a linear layer, the contract at under 1 MMAC, not a face
  network at all: for test beds that prove a deploy's plumbing on emulated CPUs, where a
  MobileFaceNet inference costs tens of seconds.

Builds the graphs with the `onnx` package.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

WEIGHTS_KEY = "pi_kiosk.weights"
ARCHITECTURES = ("mobilefacenet", "resnet50", "tiny")
_VERSION = 1  # bump when a builder changes, so cached files are rebuilt


@dataclass
class _Graph:
    rng: np.random.Generator
    nodes: list[Any] = field(default_factory=list)
    weights: list[Any] = field(default_factory=list)
    params: int = 0
    macs: int = 0
    _n: int = 0

    def name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def const(self, prefix: str, value: np.ndarray[Any, Any], learned: bool = True) -> str:
        from onnx import numpy_helper

        name = self.name(prefix)
        self.weights.append(numpy_helper.from_array(value.astype(np.float32), name))
        self.params += value.size if learned else 0
        return name

    def node(self, op: str, inputs: list[str], **attrs: Any) -> str:
        from onnx import helper

        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int, size: int, groups: int = 1,
             pad: int | None = None) -> tuple[str, int]:
        """Bias-free convolution (a BatchNorm follows); returns (output, output size)."""
        pad = k // 2 if pad is None else pad
        out_size = (size + 2 * pad - k) // stride + 1
        fan_in = cin // groups * k * k
        w = self.rng.standard_normal((cout, cin // groups, k, k)) * np.sqrt(2.0 / fan_in)
        self.macs += out_size * out_size * cout * fan_in
        y = self.node("Conv", [x, self.const("w", w)], kernel_shape=[k, k], strides=[stride, stride],
                      pads=[pad] * 4, group=groups)
        return y, out_size

    def bn(self, x: str, c: int) -> str:
        ones, zeros = np.ones(c), np.zeros(c)
        self.params += 2 * c  # scale and shift are learned; the running statistics are not
        return self.node("BatchNormalization", [x, self.const("g", ones, False), self.const("b", zeros, False),
                                                self.const("m", zeros, False), self.const("v", ones, False)],
                         epsilon=1e-5)

    def prelu(self, x: str, c: int) -> str:
        return self.node("PRelu", [x, self.const("a", np.full((c, 1, 1), 0.25))])


def _mobilefacenet(g: _Graph, x: str, dim: int) -> str:
    def unit(x: str, cin: int, cout: int, k: int, s: int, size: int, groups: int = 1, act: bool = True,
             pad: int | None = None) -> tuple[str, int]:
        y, size = g.conv(x, cin, cout, k, s, size, groups, pad)
        y = g.bn(y, cout)
        return (g.prelu(y, cout) if act else y), size

    y, size = unit(x, 3, 64, 3, 2, 112)
    y, size = unit(y, 64, 64, 3, 1, size, groups=64)
    cin = 64
    # (expansion t, channels c, repeats n, first stride s), as in the paper's Table 1.
    for t, c, n, s in ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1)):
        for i in range(n):
            stride = s if i == 0 else 1
            h, hsize = unit(y, cin, cin * t, 1, 1, size)
            h, hsize = unit(h, cin * t, cin * t, 3, stride, hsize, groups=cin * t)
            h, hsize = unit(h, cin * t, c, 1, 1, hsize, act=False)
            y = g.node("Add", [y, h]) if stride == 1 and cin == c else h
            cin, size = c, hsize
    y, size = unit(y, cin, 512, 1, 1, size)
    y, size = unit(y, 512, 512, 7, 1, size, groups=512, act=False, pad=0)  # global depthwise conv
    y, size = unit(y, 512, dim, 1, 1, size, act=False)
    return g.node("Flatten", [y], axis=1)


def _resnet50(g: _Graph, x: str, dim: int) -> str:
    y, size = g.conv(x, 3, 64, 3, 1, 112)
    y = g.prelu(g.bn(y, 64), 64)
    cin = 64
    for planes, blocks in ((64, 3), (128, 4), (256, 14), (512, 3)):
        for i in range(blocks):
            stride = 2 if i == 0 else 1
            h = g.bn(y, cin)
            h, _ = g.conv(h, cin, planes, 3, 1, size)
            h = g.prelu(g.bn(h, planes), planes)
            h, out_size = g.conv(h, planes, planes, 3, stride, size)
            h = g.bn(h, planes)
            if stride != 1 or cin != planes:
                skip, _ = g.conv(y, cin, planes, 1, stride, size, pad=0)
                y = g.bn(skip, planes)
            y = g.node("Add", [y, h])
            cin, size = planes, out_size
    y = g.node("Flatten", [g.bn(y, 512)], axis=1)
    fan_in = 512 * size * size
    w = g.rng.standard_normal((fan_in, dim)) * np.sqrt(1.0 / fan_in)
    g.macs += fan_in * dim
    y = g.node("Gemm", [y, g.const("fc", w), g.const("fcb", np.zeros(dim))])
    # The features BatchNorm of InsightFace, on a 1-D vector: unsqueeze to NCHW and back.
    y = g.node("Unsqueeze", [y, _int64(g, [2, 3])])
    return g.node("Flatten", [g.bn(y, dim)], axis=1)


def _tiny(g: _Graph, x: str, dim: int) -> str:
    y, size = g.conv(x, 3, 16, 3, 4, 112)
    y = g.prelu(g.bn(y, 16), 16)
    y, size = g.conv(y, 16, 32, 3, 4, size)
    y = g.node("Flatten", [g.node("GlobalAveragePool", [g.prelu(g.bn(y, 32), 32)])], axis=1)
    w = g.rng.standard_normal((32, dim)) * np.sqrt(1.0 / 32)
    g.macs += 32 * dim
    return g.node("Gemm", [y, g.const("fc", w), g.const("fcb", np.zeros(dim))])


def _int64(g: _Graph, values: list[int]) -> str:
    from onnx import numpy_helper

    name = g.name("axes")
    g.weights.append(numpy_helper.from_array(np.asarray(values, dtype=np.int64), name))
    return name


_BUILDERS: dict[str, Callable[[_Graph, str, int], str]] = {
    "mobilefacenet": _mobilefacenet, "resnet50": _resnet50, "tiny": _tiny,
}


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    architecture: str
    params: int
    macs: int


def build(architecture: str, path: Path, *, dim: int = 512, seed: int = 0) -> ModelInfo:
    """Write a random-weight model with the ArcFace contract to `path` (atomically)."""
    import onnx
    from onnx import TensorProto, helper

    if architecture not in _BUILDERS:
        raise ValueError(f"architecture {architecture!r}: expected one of {', '.join(ARCHITECTURES)}")
    g = _Graph(np.random.default_rng(seed))
    out = _BUILDERS[architecture](g, "input", dim)
    g.nodes.append(helper.make_node("Identity", [out], ["embedding"], name="embedding"))
    graph = helper.make_graph(
        g.nodes, f"{architecture}_random_weights",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", dim])],
        g.weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="pi_kiosk")
    model.ir_version = 8
    model.doc_string = (f"{architecture} architecture with RANDOM weights ({g.params} parameters, "
                        f"{g.macs / 1e9:.2f} GMAC): for tests and benchmarks only; it recognises nobody")
    helper.set_model_props(model, {WEIGHTS_KEY: "random", "pi_kiosk.params": str(g.params),
                                   "pi_kiosk.macs": str(g.macs)})
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    onnx.save_model(model, str(tmp))
    tmp.replace(path)
    return ModelInfo(path, architecture, g.params, g.macs)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pi-kiosk" / "models"


def cached(architecture: str, cache_dir: Path | None = None, *, dim: int = 512) -> Path:
    """Path of a random-weight model, built on first use (a ResNet-50 is 170 MB: not committed)."""
    folder = cache_dir or default_cache_dir()
    path = folder / f"{architecture}-random-weights-d{dim}-v{_VERSION}.onnx"
    if not path.is_file():
        build(architecture, path, dim=dim)
    return path

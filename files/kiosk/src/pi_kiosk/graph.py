"""Load-time rewrite of PReLU into operations ONNX Runtime runs an order of magnitude faster.

ONNX Runtime's CPU PRelu kernel is slow: ~1.9 ms for a 128x56x56 tensor, where Relu or Mul
take ~0.05 ms; it was more than half of a MobileFaceNet's time. Face models (MobileFaceNet, the
ArcFace ResNets, MTCNN) apply PReLU per channel after a convolution, so each such node becomes

    PRelu(x, a) = x + (1 - a) * Relu(-x)    (exact for any slope a, negative or above 1 too)

written with BatchNormalization as the per-channel scale (mean 0, variance 1, epsilon 0). On x86
ONNX Runtime fuses it, the Relu and the Add into its blocked-layout (NCHWc) convolutions, where a
Mul would not be: MobileFaceNet on one core went from 14 to 5 ms. Where that layout is not used
they stay three cheap passes (measured with it disabled: 18 to 10 ms). Other PRelu nodes are left
as they are.
"""
from __future__ import annotations

import numpy as np
import numpy.typing as npt
import onnx
from onnx import GraphProto, NodeProto, TensorProto, helper, numpy_helper

F32 = npt.NDArray[np.float32]

VERSION = 1  # part of the optimised-model cache key: bump when the rewrite changes
MIN_OPSET = 9  # BatchNormalization's current signature (no `spatial`, `consumed_inputs`)
_DEFAULT_DOMAINS = ("", "ai.onnx")


def fast_prelu(model_bytes: bytes) -> bytes | None:
    """The model with its per-channel PRelu nodes rewritten, or None if it has none to rewrite."""
    model = onnx.load_from_string(model_bytes)
    opset = max((o.version for o in model.opset_import if o.domain in _DEFAULT_DOMAINS), default=0)
    graph = model.graph
    tensors = {t.name: t for t in graph.initializer}
    if opset < MIN_OPSET:
        return None
    if any(t.data_location == TensorProto.EXTERNAL for t in tensors.values()):
        return None  # ONNX Runtime would not find the data files for a model given as bytes
    producers = {out: node for node in graph.node for out in node.output}
    constants: dict[tuple[float, int], str] = {}

    def constant(value: float, channels: int) -> str:
        """One shared initializer per value and channel count."""
        if (value, channels) not in constants:
            constants[value, channels] = _add_tensor(graph, f"pi_kiosk_prelu_{value:g}_x{channels}",
                                                     np.full(channels, value, np.float32))
        return constants[value, channels]

    def scale(x: str, factors: str, channels: int, out: str) -> NodeProto:
        """BatchNormalization as out = factors * x, per channel (mean 0, variance 1, epsilon 0)."""
        zeros, ones = constant(0.0, channels), constant(1.0, channels)
        node = _node("BatchNormalization", [x, factors, zeros, zeros, ones], out)
        node.attribute.append(helper.make_attribute("epsilon", 0.0))
        return node

    rewritten = []
    for node in graph.node:
        slope = _per_channel_slope(node, producers, tensors)
        if slope is None:
            rewritten.append(node)
            continue
        n, x, y = slope.size, node.input[0], node.output[0]
        neg, relu, part = f"{y}_pi_kiosk_neg", f"{y}_pi_kiosk_relu", f"{y}_pi_kiosk_part"
        rewritten += [scale(x, constant(-1.0, n), n, neg),
                      _node("Relu", [neg], relu),
                      scale(relu, _add_tensor(graph, f"{y}_pi_kiosk_one_minus_slope", 1.0 - slope), n, part),
                      _node("Add", [x, part], y)]
    if len(rewritten) == len(graph.node):
        return None
    del graph.node[:]
    graph.node.extend(rewritten)
    data: bytes = model.SerializeToString()
    return data


def _per_channel_slope(node: NodeProto, producers: dict[str, NodeProto], tensors: dict[str, TensorProto]) -> F32 | None:
    """The slope per channel if `node` is a PRelu over a convolution's channels, else None."""
    if node.op_type != "PRelu" or node.domain not in _DEFAULT_DOMAINS or len(node.input) != 2:
        return None
    slope = tensors.get(node.input[1])
    source = producers.get(node.input[0])
    while source is not None and source.op_type == "BatchNormalization" and source.domain in _DEFAULT_DOMAINS:
        source = producers.get(source.input[0])  # keeps the shape
    if slope is None or source is None or source.op_type != "Conv" or source.domain not in _DEFAULT_DOMAINS:
        return None
    values = _floats(slope)
    weight = tensors.get(source.input[1])
    if values is None or weight is None:
        return None
    # The Conv output has the weight's rank, channels on axis 1: the slope must broadcast along it.
    channels, rank = int(weight.dims[0]), len(weight.dims)
    if values.size == 1:
        return np.full(channels, values[0], np.float32)
    if list(slope.dims) in ([channels] + [1] * (rank - 2), [1, channels] + [1] * (rank - 2)):
        return values
    return None


def _floats(tensor: TensorProto) -> F32 | None:
    if tensor.data_type != TensorProto.FLOAT:
        return None
    values: F32 = numpy_helper.to_array(tensor).ravel()
    return values


def _add_tensor(graph: GraphProto, name: str, values: F32) -> str:
    graph.initializer.append(numpy_helper.from_array(values.astype(np.float32), name))
    return name


def _node(op: str, inputs: list[str], output: str) -> NodeProto:
    return helper.make_node(op, inputs, [output], name=output)

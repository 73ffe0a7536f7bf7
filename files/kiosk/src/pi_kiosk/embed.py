"""Face embeddings from any ONNX model its card describes (cards.py).

The card says the input (N x 3 x H x W float32, N = 1 or symbolic; channel order; (x - mean) / std
per channel) and the output (N x D, D one of the card's dimensions; L2-normalised before matching
or not). Both are read from the model and checked against its card at load, so a model with the
wrong card fails at start-up with a message naming both instead of producing garbage matches. A
card that names a file (its sha256) fits only that file.

A model's embeddings only mean something next to embeddings of the same model, so every
embedder names its model by the sha256 of the ONNX file (`model_sha256`); the gallery files
record it. The Coral backend runs a compile of that ONNX model for the Edge TPU and carries the
ONNX file's hash: the `.tflite` must be compiled from the same network.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from .cards import Card, CardError, resolve
from .config import EmbedderConfig
from .errors import ModelError
from .runtime import model_sha256, open_session

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]


class Embedder(Protocol):
    card: Card  # what the model takes and gives, and how its embeddings are compared
    dim: int
    model_sha256: str  # the ONNX model file's: names the space the embeddings live in
    threads: int | None  # ONNX Runtime intra-op threads; None on the Edge TPU

    def embed(self, face: U8) -> F32:
        """The embedding of a face aligned for the card (height x width x 3, BGR), L2-normalised
        when the card says so.

        The result lives in a buffer the next call overwrites: copy it to keep it.
        """
        ...


def _fixed(dim: Any) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def check_card_file(card: Card, sha256: str, key: str, path: Path) -> None:
    """A card that names a file (its sha256) fits only that file."""
    if card.sha256 is not None and card.sha256 != sha256:
        raise CardError(f"{key} = {str(path)!r}: sha256 is {sha256}, but {card.origin} describes the file with "
                        f"sha256 {card.sha256}: use that file, or a card written for this one")


def _check_contract(session: Any, card: Card, key: str, path: Path) -> tuple[str, str, int | None]:
    where = f"{key} = {str(path)!r}"
    dims = " or ".join(f"[1, {d}]" for d in card.dims)
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        raise CardError(f"{where}: has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                        f"{card.origin} needs exactly one ({list(card.input_shape)} float32)")
    if len(outputs) != 1:
        raise CardError(f"{where}: has {len(outputs)} outputs ({', '.join(o.name for o in outputs)}); "
                        f"{card.origin} needs exactly one embedding output ({dims})")
    inp, out = inputs[0], outputs[0]
    if inp.type != "tensor(float)":
        raise CardError(f"{where}: input {inp.name!r} is {inp.type}; {card.origin} needs tensor(float)")
    shape = list(inp.shape)
    expected = list(card.input_shape)
    fits = len(shape) == 4 and all(_fixed(d) in (None, e) for d, e in zip(shape, expected, strict=True))
    if not fits:
        hint = " (this looks like NHWC: channels last)" if len(shape) == 4 and _fixed(shape[3]) == 3 else ""
        raise CardError(f"{where}: input {inp.name!r} has shape {shape}{hint}; "
                        f"{card.origin} says {expected} (N x C x H x W)")
    if out.type != "tensor(float)":
        raise CardError(f"{where}: output {out.name!r} is {out.type}; {card.origin} needs tensor(float)")
    oshape = list(out.shape)
    if len(oshape) != 2 or _fixed(oshape[0]) not in (None, 1) or (
            _fixed(oshape[1]) is not None and oshape[1] not in card.dims):
        raise CardError(f"{where}: output {out.name!r} has shape {oshape}; {card.origin} says {dims}")
    return inp.name, out.name, _fixed(oshape[1])


class Preprocess:
    """The card's input: an aligned BGR uint8 H x W x 3 face -> float32 3 x H x W in the card's channel
    order, (x - mean) / std per channel, written into a given buffer (no allocation per face).

    Computed as x * (1 / std) + (-mean / std), with a scalar where the three channels agree (the
    ArcFace card: x * (1 / 127.5) - 1, as before cards), and a plain conversion where the card
    keeps the pixel values (mean 0, std 1: SFace, dlib)."""

    def __init__(self, card: Card) -> None:
        self.reverse = card.channel_order == "RGB"  # the frame is BGR
        mean, std = np.asarray(card.mean, np.float64), np.asarray(card.std, np.float64)
        self.scale = self._per_channel(1.0 / std)
        self.offset = self._per_channel(-mean / std)
        self.copy = bool(np.all(std == 1.0))
        self.shift = bool(np.any(mean != 0.0))

    @staticmethod
    def _per_channel(values: npt.NDArray[np.float64]) -> np.float32 | F32:
        if np.all(values == values[0]):
            return np.float32(values[0])
        return values.astype(np.float32).reshape(3, 1, 1)

    def __call__(self, face: U8, out: F32) -> F32:
        chw = face.transpose(2, 0, 1)
        if self.reverse:
            chw = chw[::-1]
        if self.copy:
            np.copyto(out, chw, casting="unsafe")
        else:
            np.multiply(chw, self.scale, out=out, casting="unsafe")
        if self.shift:
            np.add(out, self.offset, out=out)
        return out


class OnnxEmbedder:
    """ONNX Runtime on the CPU, with input and output bound to preallocated buffers."""

    def __init__(self, model_path: Path, card: Card, *, threads: int = 0, cache_dir: Path | None = None,
                 sha256: str | None = None, key: str = "embedder.model_path") -> None:
        self.card = card
        self.model_sha256 = model_sha256(model_path, key=key, expected=sha256)
        check_card_file(card, self.model_sha256, key, model_path)
        self.session = open_session(model_path, key=key, threads=threads,
                                    cache=None if cache_dir is None else (cache_dir, self.model_sha256))
        self.threads: int | None = self.session.get_session_options().intra_op_num_threads
        in_name, out_name, dim = _check_contract(self.session, card, key, model_path)
        if self.session.get_modelmeta().custom_metadata_map.get("pi_kiosk.weights") == "random":
            log.warning("%s has RANDOM weights (a synthetic test model): it recognises nobody", model_path)
        self._preprocess = Preprocess(card)
        self._input: F32 = np.zeros(card.input_shape, dtype=np.float32)
        if dim is None:
            # Symbolic embedding size: one run tells it.
            dim = int(self.session.run([out_name], {in_name: self._input})[0].shape[-1])
            if dim not in card.dims:
                raise CardError(f"{key} = {str(model_path)!r}: produces {dim}-d embeddings; {card.origin} says "
                                f"{' or '.join(map(str, card.dims))}")
        self.dim = dim
        self._output: F32 = np.zeros((1, dim), dtype=np.float32)
        self._vector: F32 = self._output.reshape(dim)  # a view: what embed() returns
        # Binding once means a run neither allocates nor copies the tensors.
        self._binding = self.session.io_binding()
        self._binding.bind_input(in_name, "cpu", 0, np.float32, list(card.input_shape), self._input.ctypes.data)
        self._binding.bind_output(out_name, "cpu", 0, np.float32, [1, dim], self._output.ctypes.data)
        self.embed(np.zeros((card.height, card.width, 3), dtype=np.uint8))
        if not np.all(np.isfinite(self._output)):
            raise ModelError(f"{key} = {str(model_path)!r}: produces non-finite embeddings for a blank face")

    def embed(self, face: U8) -> F32:
        self._preprocess(face, self._input[0])  # straight into the bound input tensor
        self.session.run_with_iobinding(self._binding)
        vec = self._vector
        if self.card.l2_normalize:
            norm = float(np.sqrt(vec.dot(vec)))
            if norm > 0:
                vec *= np.float32(1 / norm)
        return vec


class CoralUnavailable(Exception):
    pass


class CoralEmbedder:
    """An Edge TPU compiled TFLite model through LiteRT with the libedgetpu delegate."""

    DELEGATE = "libedgetpu.so.1"
    threads: int | None = None  # not ONNX Runtime

    def __init__(self, model_path: Path, onnx_sha256: str, card: Card) -> None:
        self.card = card
        self.model_sha256 = onnx_sha256
        try:
            from ai_edge_litert.interpreter import Interpreter, load_delegate
        except ImportError as exc:
            raise CoralUnavailable(f"LiteRT is not installed (pip extra 'coral'): {exc}") from None
        if not model_path.is_file():
            raise CoralUnavailable(f"embedder.coral_model_path = {str(model_path)!r}: model file not found")
        try:
            delegate = load_delegate(self.DELEGATE)
        except (OSError, ValueError, RuntimeError) as exc:
            raise CoralUnavailable(f"cannot load the Edge TPU delegate {self.DELEGATE}: {exc}") from None
        try:
            self._interp = Interpreter(model_path=str(model_path), experimental_delegates=[delegate])
            self._interp.allocate_tensors()
        except (OSError, ValueError, RuntimeError) as exc:
            raise CoralUnavailable(f"the Edge TPU cannot run {model_path}: {exc}") from None
        inp = self._interp.get_input_details()[0]
        out = self._interp.get_output_details()[0]
        # TFLite runs channels last: the card's N x 3 x H x W is 1 x H x W x 3 here.
        expected = (1, card.height, card.width, 3)
        if tuple(inp["shape"]) != expected or len(out["shape"]) != 2 or int(out["shape"][1]) not in card.dims:
            raise CoralUnavailable(f"{model_path}: input {tuple(inp['shape'])}, output {tuple(out['shape'])}; "
                                   f"{card.origin} says {'x'.join(map(str, expected))} in and "
                                   f"1x{' or 1x'.join(map(str, card.dims))} out")
        self._in_index, self._out_index = inp["index"], out["index"]
        self._in_dtype = inp["dtype"]
        self._in_scale, self._in_zero = inp["quantization"]
        self._out_scale, self._out_zero = out["quantization"]
        self.dim = int(out["shape"][1])
        self._output: F32 = np.zeros(self.dim, dtype=np.float32)
        self._order = [2, 1, 0] if card.channel_order == "RGB" else [0, 1, 2]  # the frame is BGR
        mean, std = np.asarray(card.mean, np.float64), np.asarray(card.std, np.float64)
        self._scale = (1.0 / std).astype(np.float32)
        self._offset = (-mean / std).astype(np.float32)

    def embed(self, face: U8) -> F32:
        x = face[:, :, self._order].astype(np.float32) * self._scale + self._offset
        if self._in_scale:  # quantised input: the Edge TPU only runs integer tensors
            x = np.round(x / self._in_scale + self._in_zero)
        self._interp.set_tensor(self._in_index, x.astype(self._in_dtype)[None])
        self._interp.invoke()
        raw: F32 = np.asarray(self._interp.get_tensor(self._out_index)[0], dtype=np.float32)
        if self._out_scale:
            raw = (raw - self._out_zero) * np.float32(self._out_scale)
        if not self.card.l2_normalize:
            self._output[:] = raw
            return self._output
        norm = float(np.linalg.norm(raw))
        np.multiply(raw, np.float32(1 / norm if norm > 0 else 0.0), out=self._output)
        return self._output


def load_embedder(cfg: EmbedderConfig) -> Embedder:
    """The configured backend with the configured card (embedder.card); Coral falls back to ONNX Runtime
    rather than leave the kiosk dead. A card that does not fit the model stops the start."""
    card = resolve(cfg.card, key="embedder.card")
    if cfg.backend == "coral" and cfg.coral_model_path is not None:
        sha = model_sha256(cfg.model_path, key="embedder.model_path", expected=cfg.model_sha256)
        check_card_file(card, sha, "embedder.model_path", cfg.model_path)
        try:
            return CoralEmbedder(cfg.coral_model_path, sha, card)
        except CoralUnavailable as exc:
            log.warning("Coral Edge TPU backend unavailable, falling back to ONNX Runtime with %s: %s",
                        cfg.model_path, exc)
    return OnnxEmbedder(cfg.model_path, card, threads=cfg.threads, cache_dir=cfg.cache_dir, sha256=cfg.model_sha256)

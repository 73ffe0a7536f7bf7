"""Face embeddings from any model with the ArcFace contract.

Contract: one input, float32, N x 3 x 112 x 112 (N = 1 or symbolic), RGB scaled to [-1, 1];
one output, float32, N x D with D = 128 or 512. It is read from the model and checked at load,
so a wrong model fails at start-up with a message instead of producing garbage matches.

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

from .config import EmbedderConfig
from .errors import ModelError
from .runtime import model_sha256, open_session

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]

INPUT_SHAPE = (1, 3, 112, 112)
EMBEDDING_DIMS = (128, 512)


class Embedder(Protocol):
    dim: int
    model_sha256: str  # the ONNX model file's: names the space the embeddings live in
    threads: int | None  # ONNX Runtime intra-op threads; None on the Edge TPU

    def embed(self, face: U8) -> F32:
        """L2-normalised embedding of an aligned 112x112 BGR face.

        The result lives in a buffer the next call overwrites: copy it to keep it.
        """
        ...


def _fixed(dim: Any) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def _check_contract(session: Any, key: str, path: Path) -> tuple[str, str, int | None]:
    where = f"{key} = {str(path)!r}"
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        raise ModelError(f"{where}: has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                         "the ArcFace contract needs exactly one (N x 3 x 112 x 112 float32)")
    if len(outputs) != 1:
        raise ModelError(f"{where}: has {len(outputs)} outputs ({', '.join(o.name for o in outputs)}); "
                         "the ArcFace contract needs exactly one embedding output (N x 128 or N x 512)")
    inp, out = inputs[0], outputs[0]
    if inp.type != "tensor(float)":
        raise ModelError(f"{where}: input {inp.name!r} is {inp.type}; the ArcFace contract needs tensor(float)")
    shape = list(inp.shape)
    expected = list(INPUT_SHAPE)
    fits = len(shape) == 4 and all(_fixed(d) in (None, e) for d, e in zip(shape, expected, strict=True))
    if not fits:
        hint = " (this looks like NHWC: channels last)" if len(shape) == 4 and _fixed(shape[3]) == 3 else ""
        raise ModelError(f"{where}: input {inp.name!r} has shape {shape}{hint}; "
                         f"the ArcFace contract needs {expected} (N x C x H x W)")
    if out.type != "tensor(float)":
        raise ModelError(f"{where}: output {out.name!r} is {out.type}; the ArcFace contract needs tensor(float)")
    oshape = list(out.shape)
    if len(oshape) != 2 or _fixed(oshape[0]) not in (None, 1) or (
            _fixed(oshape[1]) is not None and oshape[1] not in EMBEDDING_DIMS):
        raise ModelError(f"{where}: output {out.name!r} has shape {oshape}; "
                         "the ArcFace contract needs [1, 128] or [1, 512]")
    return inp.name, out.name, _fixed(oshape[1])


def to_input(face: U8, out: F32) -> F32:
    """Aligned BGR uint8 HxWx3 face -> RGB float32 3xHxW in [-1, 1], written into `out`."""
    np.multiply(face.transpose(2, 0, 1)[::-1], np.float32(1 / 127.5), out=out, casting="unsafe")
    np.subtract(out, np.float32(1.0), out=out)
    return out


class OnnxEmbedder:
    """ONNX Runtime on the CPU, with input and output bound to preallocated buffers."""

    def __init__(self, model_path: Path, *, threads: int = 0, cache_dir: Path | None = None,
                 sha256: str | None = None, key: str = "embedder.model_path") -> None:
        self.model_sha256 = model_sha256(model_path, key=key, expected=sha256)
        self.session = open_session(model_path, key=key, threads=threads,
                                    cache=None if cache_dir is None else (cache_dir, self.model_sha256))
        self.threads: int | None = self.session.get_session_options().intra_op_num_threads
        in_name, out_name, dim = _check_contract(self.session, key, model_path)
        if self.session.get_modelmeta().custom_metadata_map.get("pi_kiosk.weights") == "random":
            log.warning("%s has RANDOM weights (a synthetic test model): it recognises nobody", model_path)
        self._input: F32 = np.zeros(INPUT_SHAPE, dtype=np.float32)
        if dim is None:
            # Symbolic embedding size: one run tells it.
            dim = int(self.session.run([out_name], {in_name: self._input})[0].shape[-1])
            if dim not in EMBEDDING_DIMS:
                raise ModelError(f"{key} = {str(model_path)!r}: produces {dim}-d embeddings; "
                                 "the ArcFace contract needs 128 or 512")
        self.dim = dim
        self._output: F32 = np.zeros((1, dim), dtype=np.float32)
        self._vector: F32 = self._output.reshape(dim)  # a view: what embed() returns
        # Binding once means a run neither allocates nor copies the tensors.
        self._binding = self.session.io_binding()
        self._binding.bind_input(in_name, "cpu", 0, np.float32, list(INPUT_SHAPE), self._input.ctypes.data)
        self._binding.bind_output(out_name, "cpu", 0, np.float32, [1, dim], self._output.ctypes.data)
        self.embed(np.zeros((112, 112, 3), dtype=np.uint8))
        if not np.all(np.isfinite(self._output)):
            raise ModelError(f"{key} = {str(model_path)!r}: produces non-finite embeddings for a blank face")

    def embed(self, face: U8) -> F32:
        to_input(face, self._input[0])  # straight into the bound input tensor
        self.session.run_with_iobinding(self._binding)
        vec = self._vector
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

    def __init__(self, model_path: Path, onnx_sha256: str) -> None:
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
        if tuple(inp["shape"]) != (1, 112, 112, 3) or len(out["shape"]) != 2:
            raise CoralUnavailable(f"{model_path}: input {tuple(inp['shape'])}, output {tuple(out['shape'])}; "
                                   "expected 1x112x112x3 in and 1xD out")
        self._in_index, self._out_index = inp["index"], out["index"]
        self._in_dtype = inp["dtype"]
        self._in_scale, self._in_zero = inp["quantization"]
        self._out_scale, self._out_zero = out["quantization"]
        self.dim = int(out["shape"][1])
        self._output: F32 = np.zeros(self.dim, dtype=np.float32)

    def embed(self, face: U8) -> F32:
        x = face[:, :, ::-1].astype(np.float32) / np.float32(127.5) - np.float32(1.0)
        if self._in_scale:  # quantised input: the Edge TPU only runs integer tensors
            x = np.round(x / self._in_scale + self._in_zero)
        self._interp.set_tensor(self._in_index, x.astype(self._in_dtype)[None])
        self._interp.invoke()
        raw: F32 = np.asarray(self._interp.get_tensor(self._out_index)[0], dtype=np.float32)
        if self._out_scale:
            raw = (raw - self._out_zero) * np.float32(self._out_scale)
        norm = float(np.linalg.norm(raw))
        np.multiply(raw, np.float32(1 / norm if norm > 0 else 0.0), out=self._output)
        return self._output


def load_embedder(cfg: EmbedderConfig) -> Embedder:
    """The configured backend; Coral falls back to ONNX Runtime rather than leave the kiosk dead."""
    if cfg.backend == "coral" and cfg.coral_model_path is not None:
        try:
            return CoralEmbedder(cfg.coral_model_path,
                                 model_sha256(cfg.model_path, key="embedder.model_path", expected=cfg.model_sha256))
        except CoralUnavailable as exc:
            log.warning("Coral Edge TPU backend unavailable, falling back to ONNX Runtime with %s: %s",
                        cfg.model_path, exc)
    return OnnxEmbedder(cfg.model_path, threads=cfg.threads, cache_dir=cfg.cache_dir, sha256=cfg.model_sha256)

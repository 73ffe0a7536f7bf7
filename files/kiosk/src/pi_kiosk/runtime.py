"""ONNX Runtime sessions, opened the same way for the detector and the embedder.

Tuned for small boards: intra-op threads = the cores this process may use (more threads than
cores makes ORT's spinning workers fight each other: 4 threads on 2 cores is ~2.4x slower), PReLU
rewritten into operations ORT runs fast (graph.py), full graph optimisation, and the optimised
graph cached on disk so the next start skips the work.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
from pathlib import Path

import onnxruntime as ort
from google.protobuf.message import DecodeError

from . import graph
from .errors import ModelError

log = logging.getLogger(__name__)


SPIN_MICROSECONDS = 200  # longer than the gap between two operators, short beside a frame


def available_cores() -> int:
    # sched_getaffinity honours taskset/cgroup cpusets, os.cpu_count() does not.
    return max(1, len(os.sched_getaffinity(0)))


def file_sha256(path: Path) -> str:
    st = path.stat()
    return _sha256(str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


# Keyed by the file's identity and version: the embedder, its Coral fallback and the model's
# identity in the embeddings files all need the hash, and a ResNet-50 is 170 MB to read.
@functools.lru_cache(maxsize=8)
def _sha256(path: str, *version: int) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def model_sha256(path: Path, *, key: str, expected: str | None = None) -> str:
    """The model file's sha256 (its identity), checked against `expected` when that is configured."""
    if not path.is_file():
        raise ModelError(f"{key} = {str(path)!r}: model file not found")
    digest = file_sha256(path)
    if expected is not None and digest != expected.lower():
        raise ModelError(f"{key} = {str(path)!r}: sha256 is {digest}, but the configuration expects {expected}")
    return digest


def session_options(threads: int, *, dynamic_shapes: bool = False) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads if threads > 0 else available_cores()
    opts.inter_op_num_threads = 1
    # Workers spin a moment between a network's operators (waking a sleeping worker for each of
    # MobileFaceNet's 116 convolutions cost most of what the second core gave: 4.1 ms with 2 threads,
    # 5.0 with 1, 2.8 spinning), but not after the run, where a spinning worker only takes the core
    # from the next stage and burns a Pi's power (ONNX Runtime's default spins far longer).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1")
    opts.add_session_config_entry("session.intra_op.spin_duration_us", str(SPIN_MICROSECONDS))
    opts.log_severity_level = 3  # ORT's warnings about the saved optimised graph are expected
    # A memory pattern is planned per input shape; with a new shape per pyramid level it only costs.
    opts.enable_mem_pattern = not dynamic_shapes
    return opts


def open_session(
    path: Path,
    *,
    key: str,
    threads: int,
    cache: tuple[Path, str] | None = None,
    dynamic_shapes: bool = False,
) -> ort.InferenceSession:
    """Open `path` on the CPU; `key` is the config key that named it, for error messages.
    `cache` is (directory, the file's sha256 from model_sha256): the optimised graph is kept
    there under a name carrying the hash."""
    if not path.is_file():
        raise ModelError(f"{key} = {str(path)!r}: model file not found")
    if cache is not None:
        cache_dir, digest = cache
        cached = cache_dir / f"{path.stem}-{digest[:16]}-ort{ort.__version__}-g{graph.VERSION}.onnx"
        if cached.is_file():
            opts = session_options(threads, dynamic_shapes=dynamic_shapes)
            # Already optimised for this device; optimising again would only cost start-up time.
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            try:
                return _create(cached, opts)
            except Exception as exc:
                log.warning("discarding unusable optimised-model cache %s: %s", cached, _first_line(exc))
                cached.unlink(missing_ok=True)
    opts = session_options(threads, dynamic_shapes=dynamic_shapes)
    staged: Path | None = None
    if cache is not None:
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            staged = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
            opts.optimized_model_filepath = str(staged)
        except OSError as exc:
            log.warning("model cache %s is not writable (%s); continuing without it", cache_dir, exc)
    try:
        session = _create(_rewritten(path) or path, opts)
    except Exception as exc:  # ORT raises its own pybind classes (InvalidProtobuf, Fail, ...)
        if staged is not None:
            staged.unlink(missing_ok=True)
        detail = _first_line(exc)
        if "INVALID_PROTOBUF" in detail or "Protobuf parsing failed" in detail:
            raise ModelError(f"{key} = {str(path)!r}: not a valid ONNX model (Invalid protobuf): {detail}") from None
        raise ModelError(f"{key} = {str(path)!r}: ONNX Runtime cannot load it: {detail}") from None
    if staged is not None:
        # Renamed only once complete, so a crash never leaves a half-written cache entry behind.
        try:
            staged.replace(cached)
        except OSError as exc:
            log.warning("cannot cache optimised model at %s: %s", cached, exc)
            staged.unlink(missing_ok=True)
    return session


def _rewritten(path: Path) -> bytes | None:
    try:
        return graph.fast_prelu(path.read_bytes())
    except DecodeError:
        return None  # not ONNX: ORT says so, with the message the user gets


def _create(model: Path | bytes, opts: ort.SessionOptions) -> ort.InferenceSession:
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

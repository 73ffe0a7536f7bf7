"""`pi-kiosk quantize`: INT8 static quantisation with onnxruntime.quantization, and how far the
INT8 model's embeddings agree with the FP32 model's (cosine similarity per face). The model's card
says how faces are aligned and fed to it; the INT8 model is another file, so a card that names the
FP32 file's sha256 is used for it without that hash.

Calibration uses aligned faces from the photos given; with none, random images stand in, and the
report says so (its agreement figure then says little about real faces).

Weights are int8 per channel; activations uint8 on x86-64 by default (ONNX Runtime's u8 x s8
kernels, VPMADDUBSW/VNNI: int8 activations were 1.7x slower than FP32 there on dlib's ResNet,
uint8 1.7x faster, both at cosine >= 0.999), int8 elsewhere (Arm's signed dot products).
"""
from __future__ import annotations

import dataclasses
import logging
import platform
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .align import Aligner
from .capture import read_image
from .cards import Card
from .detect import MtcnnDetector
from .embed import OnnxEmbedder, Preprocess

log = logging.getLogger(__name__)
U8 = npt.NDArray[np.uint8]


ACTIVATIONS = ("uint8", "int8")


def default_activations() -> str:
    """uint8 on x86-64, int8 on other machines (see the module's docstring)."""
    return "uint8" if platform.machine().lower() in ("x86_64", "amd64") else "int8"


@dataclass(frozen=True)
class Report:
    activations: str
    faces: int
    real_faces: bool
    cosine_mean: float
    cosine_min: float
    fp32_ms: float
    int8_ms: float
    fp32_bytes: int
    int8_bytes: int

    def __str__(self) -> str:
        source = "aligned faces from the photos" if self.real_faces else "RANDOM images (no photos given)"
        return "\n".join([
            f"calibration and comparison: {self.faces} {source}; weights int8 per channel, activations "
            f"{self.activations}",
            f"cosine(FP32, INT8) mean {self.cosine_mean:.4f}, min {self.cosine_min:.4f}",
            f"embedding latency p50: FP32 {self.fp32_ms:.2f} ms, INT8 {self.int8_ms:.2f} ms",
            f"model size: FP32 {self.fp32_bytes / 1e6:.1f} MB, INT8 {self.int8_bytes / 1e6:.1f} MB",
        ])


def calibration_faces(photos: Sequence[Path], card: Card, count: int = 32) -> tuple[list[U8], bool]:
    """Faces aligned for the card (and their mirror images) from the photos, or random images without photos."""
    if not photos:
        rng = np.random.default_rng(0)
        return [rng.integers(0, 256, (card.height, card.width, 3), dtype=np.uint8) for _ in range(count)], False
    detector, aligner = MtcnnDetector(min_face_size=40, max_faces=10), Aligner(card)
    faces: list[U8] = []
    for photo in photos:
        image = read_image(photo)
        for face in detector.detect(image):
            aligned = aligner.align(image, face.landmarks).copy()
            faces += [aligned, np.ascontiguousarray(aligned[:, ::-1])]
    if not faces:
        raise ValueError(f"no face found in {len(photos)} calibration photo(s)")
    return faces, True


def _median_ms(embedder: OnnxEmbedder, faces: Sequence[U8], rounds: int = 3) -> float:
    times = []
    for _ in range(rounds):
        for face in faces:
            t0 = time.perf_counter()
            embedder.embed(face)
            times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def _cosine(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    """Cosine similarity, whether or not the card L2-normalises its embeddings."""
    return float(a @ b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-30)


def quantize(model: Path, output: Path, card: Card, photos: Sequence[Path] = (), threads: int = 0,
             activations: str = "") -> Report:
    activations = activations or default_activations()
    if activations not in ACTIVATIONS:
        raise ValueError(f"activations = {activations!r}: expected one of {', '.join(ACTIVATIONS)}")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32 = OnnxEmbedder(model, card, threads=threads)
    faces, real = calibration_faces(photos, card)
    input_name = fp32.session.get_inputs()[0].name
    preprocess = Preprocess(card)

    class Reader(CalibrationDataReader):  # type: ignore[misc]  # untyped base class
        def __init__(self) -> None:
            self._it: Iterator[dict[str, Any]] = iter(
                {input_name: preprocess(face, np.empty(card.input_shape[1:], np.float32))[None]} for face in faces)

        def get_next(self) -> dict[str, Any] | None:
            return next(self._it, None)

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(output), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
                        weight_type=QuantType.QInt8)
    int8 = OnnxEmbedder(output, dataclasses.replace(card, sha256=None), threads=threads, key="quantized model")
    reference = np.stack([fp32.embed(f).copy() for f in faces])
    cosines = np.array([_cosine(int8.embed(f), ref) for f, ref in zip(faces, reference, strict=True)])
    return Report(activations, len(faces), real, float(cosines.mean()), float(cosines.min()),
                  _median_ms(fp32, faces), _median_ms(int8, faces), model.stat().st_size, output.stat().st_size)


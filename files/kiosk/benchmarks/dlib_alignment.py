"""How far the kiosk's alignment is from dlib's, measured in dlib's face-descriptor space.

    python files/kiosk/benchmarks/dlib_alignment.py [--faces 100] [--threads 1] [--photos PHOTO ...]

dlib's face-recognition ResNet was trained on chips cut by dlib's get_face_chip(size=150,
padding=0.25) from its own 5 landmarks (eye corners, bottom of the nose). The kiosk's MTCNN gives
5 other landmarks (eye centres, nose tip, mouth corners) and aligns them onto a template with a
similarity transform (pi_kiosk.align.similarity_transform, then cv2.warpAffine). This derives the
150x150 template for MTCNN's landmarks that reproduces dlib's chips: each face's MTCNN landmarks
are mapped into its dlib chip with the exact image -> chip map dlib samples with, and averaged.
Then, on the same photos, it compares the descriptors (the converted ONNX model) of

- the kiosk's chip (MTCNN landmarks + the template; the template fitted without the photo's
  own faces: leave-one-photo-out) against dlib's own chip: what the kiosk would lose;
- the same, with the template fitted on all faces (the one to ship);
- dlib's exact geometry sampled by cv2.warpAffine instead of dlib: the interpolation's share;
- the ArcFace 112x112 template scaled to 150x150: a template not made for this model;

and puts the distances beside dlib's 0.6 threshold, the distance between a photo and its mirror
image (dlib's chips of both), and between different LFW faces.

Photos: the parity test's (tests/dlib_data.py: scikit-image's astronaut with flips, rotations,
brightness and scale changes, and the first --faces faces of scikit-image's LFW subset, 25x25
grey, upscaled x6 with a border of context, and mirrored), and any --photos given (their largest
face, and mirrored): LFW's tiny crops dominate the fit, so refit on real kiosk frames before
shipping a template. dlib runs in the parity venv (`scripts/bootstrap --dev` makes it and fills
the controller cache); the figures print to stdout.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from pi_kiosk import dlib_resnet
from pi_kiosk.align import ARCFACE_TEMPLATE, similarity_transform
from pi_kiosk.detect import MtcnnDetector

# The parity test's dlib material: the cache's files, the photos, dlib's side (files/kiosk/tests/dlib_data.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import dlib_data
from dlib_data import CACHE, MODELS, PARITY_PYTHON, SDIST, Photo, photos

SIZE = 150
THRESHOLD = 0.6


@dataclass
class Face:
    photo: Photo
    mtcnn: np.ndarray  # 5x2, image
    dlib_chip: np.ndarray
    to_chip: np.ndarray  # 2x3, image -> dlib's chip
    dlib_descriptor: np.ndarray  # dlib's own, for a parity check on the way
    detected: bool  # by dlib's HOG detector (else landmarked in the photo's given box)

    @property
    def mapped(self) -> np.ndarray:
        """MTCNN's landmarks in dlib's chip."""
        return np.asarray(self.mtcnn @ self.to_chip[:, :2].T + self.to_chip[:, 2])


def dlib_side(items: list[Photo], workdir: Path) -> dict[str, np.ndarray]:
    if not PARITY_PYTHON.is_file():
        sys.exit(f"no {PARITY_PYTHON}: `scripts/bootstrap --dev` makes it")
    return dlib_data.dlib_side(
        PARITY_PYTHON, dlib_resnet.from_sdist(SDIST, "shape_predictor_5_face_landmarks.dat", MODELS),
        dlib_resnet.from_sdist(SDIST, dlib_resnet.NETWORK + ".dat", MODELS), items, workdir)


def converted() -> Path:
    """The ONNX model, converted once into the controller cache (shared with the parity test and the deploy role)."""
    if not SDIST.is_file():
        sys.exit(f"no {SDIST}: see tests/test_dlib_resnet.py's docstring")
    return dlib_resnet.cached_conversion(dlib_resnet.from_sdist(SDIST, dlib_resnet.NETWORK + ".dat", MODELS), CACHE)


def match_faces(items: list[Photo], ref: dict[str, np.ndarray], detector: MtcnnDetector) -> list[Face]:
    found: list[Face] = []
    for i, photo in enumerate(items):
        if not bool(ref[f"found_{i}"]):
            print(f"  {photo.label}: dlib found no face, left out")
            continue
        centre = ref[f"landmarks_{i}"].mean(axis=0)
        candidates = [f for f in detector.detect(cv2.cvtColor(photo.rgb, cv2.COLOR_RGB2BGR))
                      if f.box[0] <= centre[0] <= f.box[2] and f.box[1] <= centre[1] <= f.box[3]]
        if not candidates:
            print(f"  {photo.label}: MTCNN found no face where dlib did, left out")
            continue
        found.append(Face(photo, candidates[0].landmarks.astype(np.float64), ref[f"chip_{i}"], ref[f"to_chip_{i}"],
                          ref[f"descriptor_{i}"], bool(ref[f"detected_{i}"])))
    return found


def warp(rgb: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    return cv2.warpAffine(rgb, matrix, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(0, 0, 0))


def misplacement(kiosk: np.ndarray, to_chip: np.ndarray) -> float:
    """RMS distance, over a grid of dlib's chip, between where dlib's chip and the kiosk's put
    the same image point: chip pixels."""
    g = np.stack(np.meshgrid(np.linspace(0, SIZE - 1, 16), np.linspace(0, SIZE - 1, 16)), -1).reshape(-1, 2)
    inverse = cv2.invertAffineTransform(to_chip)
    image_points = g @ inverse[:, :2].T + inverse[:, 2]
    moved = image_points @ kiosk[:, :2].T + kiosk[:, 2]
    return float(np.sqrt(((moved - g) ** 2).sum(axis=1).mean()))


class Descriptors:
    def __init__(self, model: Path, threads: int) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])

    def __call__(self, chip_rgb: np.ndarray) -> np.ndarray:
        x = chip_rgb.transpose(2, 0, 1)[None].astype(np.float32)
        return np.asarray(self.session.run(None, {"image": x})[0][0], dtype=np.float64)


def euclidean(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(1.0 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def summary(name: str, euc: list[float], cos: list[float] | None = None) -> str:
    e = np.asarray(euc)
    line = (f"  {name:<46} Euclidean median {np.median(e):.3f}  p90 {np.percentile(e, 90):.3f}  "
            f"max {e.max():.3f}  >= {THRESHOLD}: {int((e >= THRESHOLD).sum())}/{len(e)}")
    if cos is not None:
        c = np.asarray(cos)
        line += f"  | cosine distance median {np.median(c):.4f} max {c.max():.4f}"
    return line


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--faces", type=int, default=100, help="LFW faces to use (of 100)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads")
    p.add_argument("--photos", nargs="*", type=Path, default=[],
                   help="more photos (e.g. kiosk camera frames), each with its largest face, and mirrored")
    args = p.parse_args()
    start = time.perf_counter()
    items = photos(args.faces)
    for path in args.photos:
        bgr = cv2.imread(str(path))
        if bgr is None:
            sys.exit(f"{path}: not an image OpenCV can read")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        items += [Photo(path.name, path.name, rgb, None), Photo(f"{path.name} mirrored", path.name,
                                                                 rgb[:, ::-1].copy(), None)]
    model = converted()
    with tempfile.TemporaryDirectory() as tmp:
        ref = dlib_side(items, Path(tmp))
    print(f"dlib {ref['dlib_version']}, {len(items)} photos")
    faces = match_faces(items, ref, MtcnnDetector(min_face_size=40))
    print(f"{len(faces)} faces landmarked by both dlib and MTCNN, from "
          f"{len({f.photo.group for f in faces})} source photos ({sum(f.detected for f in faces)} found by dlib's "
          "detector, the others landmarked by dlib in the LFW crop's box)")
    mapped = np.stack([f.mapped for f in faces])
    template = mapped.mean(axis=0)
    spread = np.sqrt(((mapped - template) ** 2).sum(axis=2))  # per face, per point: chip pixels

    print("\nTemplate for MTCNN's 5 landmarks in dlib's 150x150 chip (size=150, padding=0.25), x, y:")
    names = ("eye (image left)", "eye (image right)", "nose tip", "mouth corner (image left)",
             "mouth corner (image right)")
    for name, (x, y), s in zip(names, template, spread.T, strict=True):
        print(f"  {name:<28} ({x:8.4f}, {y:8.4f})   spread over faces: median {np.median(s):.2f} px, "
              f"p90 {np.percentile(s, 90):.2f} px")
    print("  as Python: np.array(" + repr(np.round(template, 4).tolist()) + ", dtype=np.float32)")
    scaled = ARCFACE_TEMPLATE.astype(np.float64) * SIZE / 112
    print("  (the ArcFace 112x112 template scaled to 150: " + repr(np.round(scaled, 2).tolist()) + ")")

    describe = Descriptors(model, args.threads)
    parity: list[float] = []
    loo_e: list[float] = []
    loo_c: list[float] = []
    all_e: list[float] = []
    all_c: list[float] = []
    interp_e: list[float] = []
    arc_e: list[float] = []
    arc_c: list[float] = []
    miss_loo: list[float] = []
    miss_arc: list[float] = []
    norms: list[float] = []
    groups = sorted({f.photo.group for f in faces})
    by_label: dict[str, np.ndarray] = {}
    for face in faces:
        reference = describe(face.dlib_chip)
        by_label[face.photo.label] = reference
        norms.append(float(np.linalg.norm(reference)))
        parity.append(float(np.abs(reference - face.dlib_descriptor).max()))
        others = np.stack([f.mapped for f in faces if f.photo.group != face.photo.group])
        kiosk = similarity_transform(face.mtcnn, others.mean(axis=0))
        d = describe(warp(face.photo.rgb, kiosk))
        loo_e.append(euclidean(d, reference))
        loo_c.append(cosine(d, reference))
        miss_loo.append(misplacement(kiosk, face.to_chip))
        d = describe(warp(face.photo.rgb, similarity_transform(face.mtcnn, template)))
        all_e.append(euclidean(d, reference))
        all_c.append(cosine(d, reference))
        interp_e.append(euclidean(describe(warp(face.photo.rgb, face.to_chip)), reference))
        naive = similarity_transform(face.mtcnn, scaled)
        d = describe(warp(face.photo.rgb, naive))
        arc_e.append(euclidean(d, reference))
        arc_c.append(cosine(d, reference))
        miss_arc.append(misplacement(naive, face.to_chip))

    print(f"\nParity on the way: ONNX vs dlib's own descriptors of dlib's chips, max abs difference "
          f"{max(parity):.2e} over {len(parity)} chips")
    print(f"Descriptor norms (dlib's chips): median {statistics.median(norms):.3f}, "
          f"{min(norms):.3f}..{max(norms):.3f} (not unit length)")
    print(f"\nChip geometry against dlib's (RMS over the chip, pixels of 150): template (leave-one-photo-out) "
          f"median {np.median(miss_loo):.2f} max {np.max(miss_loo):.2f}; ArcFace template scaled "
          f"median {np.median(miss_arc):.2f} max {np.max(miss_arc):.2f}")
    print(f"\nDescriptor distance to dlib's own chip of the same face (dlib: same person below {THRESHOLD}):")
    print(summary("kiosk: MTCNN + template, leave-one-photo-out", loo_e, loo_c))
    print(summary("kiosk: MTCNN + template fitted on all", all_e, all_c))
    print(summary("dlib's geometry, cv2.warpAffine sampling", interp_e))
    print(summary("MTCNN + ArcFace template scaled to 150", arc_e, arc_c))

    mirror = [euclidean(by_label[g], by_label[f"{g} mirrored"]) for g in groups
              if g in by_label and f"{g} mirrored" in by_label]
    for source in ("astronaut", "lfw", "--photos"):
        picked = [i for i, f in enumerate(faces) if f.photo.group.startswith(source)
                  or (source == "--photos" and not f.photo.group.startswith(("astronaut", "lfw ")))]
        if not picked:
            continue
        print(summary(f"  of which {source} ({len(picked)} faces), leave-one-out", [loo_e[i] for i in picked],
                      [loo_c[i] for i in picked]) + f"  | {np.median([miss_loo[i] for i in picked]):.1f} px off")
    worst = sorted(range(len(faces)), key=lambda i: -loo_e[i])[:3]
    print("  worst: " + "; ".join(f"{faces[i].photo.label} {loo_e[i]:.3f} ({miss_loo[i]:.1f} px off)" for i in worst))

    print("\nFor scale:")
    print(summary("a photo vs its mirror image (dlib's chips)", mirror))
    lfw = [by_label[g] for g in groups if g.startswith("lfw") and g in by_label]
    different = [euclidean(a, b) for i, a in enumerate(lfw) for b in lfw[i + 1:]]
    if different:
        e = np.asarray(different)
        print(f"  {'LFW faces vs each other (mostly other people)':<46} Euclidean median {np.median(e):.3f}  "
              f"p5 {np.percentile(e, 5):.3f}  min {e.min():.3f}  < {THRESHOLD}: {int((e < THRESHOLD).sum())}/{len(e)}")
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

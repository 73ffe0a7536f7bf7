"""Model cards: one TOML description per embedding model, read by everything that touches a model.

A card says what the model takes (input size, channel order, layout, per-channel scaling, the
5-point alignment template), what it gives (the output dimension, whether the output is
L2-normalised before matching) and how two outputs are compared (cosine similarity or Euclidean
distance, with the published threshold and where it was published), plus the licence and, for a
card that describes one file, that file's sha256. The aligner, the embedder, the gallery and its
matcher, enrolment, `pi-kiosk check` and `bench`, and the reference server's photo enrolment all
read these figures from the card: none is written anywhere else.

Built-in cards ship as package data (`pi_kiosk/cards/<name>.toml`); `embedder.card` names one of
them or the path of a card file. Standard library only: the configuration's validator, which the
deploy role also runs on its controller, checks built-in card names and reads built-in cards.

Format (README.md, "Model cards"):

    format = 1
    name = "dlib-resnet-v1"
    license = "..."
    sha256 = "<64 hex digits>"       # optional: a generic card fits any model of its contract
    [input]
    width = 150
    height = 150
    channel_order = "RGB"            # or "BGR": the order of the model's C axis
    layout = "NCHW"
    mean = [0.0, 0.0, 0.0]           # per channel, in channel_order: the model sees (pixel - mean) / std
    std = [1.0, 1.0, 1.0]
    template = [[x, y], ...]         # 5 points in input pixels: eye, eye, nose tip, mouth corner, mouth corner
    [output]
    dim = 128                        # or a list for a generic card: [128, 512]
    l2_normalize = false
    [matching]
    metric = "euclidean"             # or "cosine"
    threshold = 0.6
    threshold_source = "..."
"""
from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ModelError

FORMAT = 1
METRICS = ("cosine", "euclidean")
CHANNEL_ORDERS = ("RGB", "BGR")
LAYOUTS = ("NCHW",)
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
# What each card must say, by table: the strict reader refuses anything else.
FIELDS: dict[str, tuple[str, ...]] = {
    "": ("format", "name", "description", "license", "sha256", "input", "output", "matching"),
    "input": ("width", "height", "channel_order", "layout", "mean", "std", "template"),
    "output": ("dim", "l2_normalize"),
    "matching": ("metric", "threshold", "threshold_source"),
}
OPTIONAL = {"description", "sha256"}
MAX_SIZE = 4096
MAX_DIM = 65536


class CardError(ModelError):
    """A model card is missing, unknown or invalid, or disagrees with its model: the message names the
    card (its file, or the built-in name) and the field."""


@dataclass(frozen=True)
class Card:
    name: str
    origin: str  # "built-in card 'arcface'" or "card file /etc/pi-kiosk/cards/x.toml": for messages
    license: str
    sha256: str | None  # lower case; None: a generic card, for any model of its contract
    width: int
    height: int
    channel_order: str  # of the model's C axis: "RGB" or "BGR"
    layout: str  # "NCHW"
    mean: tuple[float, float, float]  # per channel, in channel_order
    std: tuple[float, float, float]
    template: tuple[tuple[float, float], ...]  # 5 points in input pixels, the MTCNN landmarks' order
    dims: tuple[int, ...]  # allowed output dimensions: one for a card of one file
    l2_normalize: bool  # the output is L2-normalised before it is stored or matched
    metric: str  # "cosine" (similarity, higher is closer) or "euclidean" (distance, lower is closer)
    threshold: float  # published: cosine >= threshold, or distance < threshold, is the same person
    threshold_source: str
    description: str = ""

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the aligned face the model takes."""
        return self.width, self.height

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return 1, 3, self.height, self.width

    @property
    def worst_score(self) -> float:
        """The score of a match against nobody: below any cosine similarity, beyond any distance."""
        return -1.0 if self.metric == "cosine" else math.inf

    def accepts(self, score: float, threshold: float) -> bool:
        """The card's rule: a cosine similarity at or above the threshold, or a Euclidean distance
        below it (dlib's rule: same person below 0.6), is the same person."""
        return score >= threshold if self.metric == "cosine" else score < threshold

    def threshold_range(self) -> str:
        """What a threshold of this card's metric may be, for messages."""
        if self.metric == "cosine":
            return "a cosine similarity from -1.0 to 1.0"
        if self.l2_normalize:
            return "a Euclidean distance between unit vectors: above 0 and at most 2.0"
        return "a Euclidean distance: a finite number above 0"

    def threshold_fits(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.metric == "cosine":
            return -1.0 <= value <= 1.0
        return 0.0 < value <= (2.0 if self.l2_normalize else math.inf)

    def describe(self) -> str:
        """One line: what the card makes of a face (`pi-kiosk check`, the service's log)."""
        dims = " or ".join(map(str, self.dims))
        rule = "similarity >=" if self.metric == "cosine" else "distance <"
        return (f"{self.origin}: {self.width}x{self.height} {self.channel_order} {self.layout}, "
                f"(x - {_triple(self.mean)}) / {_triple(self.std)}, {dims}-d"
                f"{', L2-normalised' if self.l2_normalize else ' not normalised'}, same person at {self.metric} "
                f"{rule} {self.threshold:g}{'' if self.sha256 else ' (a generic card)'}")


def _triple(values: tuple[float, float, float]) -> str:
    return f"{values[0]:g}" if len(set(values)) == 1 else "(" + ", ".join(f"{v:g}" for v in values) + ")"


# --- reading ---------------------------------------------------------------------------------------

def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _size(value: Any) -> bool:
    return _integer(value) and 1 <= value <= MAX_SIZE


def _dim(value: Any) -> bool:
    return _integer(value) and 1 <= value <= MAX_DIM


def _triple_ok(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 3 and all(map(_number, value))


def _pair(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(map(_number, value))


class _Reader:
    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.errors: list[str] = []
        self.absent: set[str] = set()  # tables missing or not tables: said once, not per field

    def fail(self, field: str, value: Any, expected: str) -> None:
        if value is _MISSING:
            self.errors.append(f"{self.origin}: {field}: missing; {expected}")
        else:
            self.errors.append(f"{self.origin}: {field} = {value!r:.80}: {expected}")

    def table(self, data: dict[str, Any], section: str) -> dict[str, Any]:
        """The table's known keys; unknown ones are errors."""
        allowed = FIELDS[section]
        prefix = f"{section}." if section else ""
        for key in sorted(set(data) - set(allowed)):
            self.errors.append(f"{self.origin}: {prefix}{key}: unknown field; allowed: {', '.join(allowed)}")
        return data

    def get(self, data: dict[str, Any], section: str, key: str, ok: Any, expected: str) -> Any:
        field = f"{section}.{key}" if section else key
        if section in self.absent:
            return None
        if key not in data:
            if key not in OPTIONAL:
                self.fail(field, _MISSING, f"expected {expected}")
            return None
        value = data[key]
        if not ok(value):
            self.fail(field, value, f"expected {expected}")
            return None
        return value


_MISSING = object()


def parse(data: Any, origin: str) -> Card:
    """A card from a parsed TOML document; CardError lists every problem, one line each, naming the
    card and the field."""
    r = _Reader(origin)
    if not isinstance(data, dict):
        raise CardError(f"{origin}: not a TOML table")
    top = r.table(data, "")
    fmt = r.get(top, "", "format", lambda v: _integer(v) and v == FORMAT,
                f"{FORMAT} (the card format this pi-kiosk reads)")
    name = r.get(top, "", "name", lambda v: isinstance(v, str) and NAME.match(v),
                 "a name of lower-case letters, digits, '.', '_' and '-' (at most 64)")
    description = r.get(top, "", "description", lambda v: isinstance(v, str), "a string") or ""
    licence = r.get(top, "", "license", _text, "a non-empty string (the weights' licence)")
    sha = r.get(top, "", "sha256", lambda v: isinstance(v, str) and SHA256.match(v),
                "64 hexadecimal digits (the model file's), or leave it out for a generic card")
    tables: dict[str, dict[str, Any]] = {}
    for section in ("input", "output", "matching"):
        value = top.get(section, _MISSING)
        if value is _MISSING or not isinstance(value, dict):
            if value is _MISSING:
                r.fail(f"[{section}]", _MISSING, "this table is required")
            else:
                r.fail(section, value, "expected a table")
            r.absent.add(section)
            tables[section] = {}
        else:
            tables[section] = r.table(value, section)
    inp, out, matching = tables["input"], tables["output"], tables["matching"]

    width = r.get(inp, "input", "width", _size, f"an integer from 1 to {MAX_SIZE} (pixels)")
    height = r.get(inp, "input", "height", _size, f"an integer from 1 to {MAX_SIZE} (pixels)")
    order = r.get(inp, "input", "channel_order", lambda v: v in CHANNEL_ORDERS, "'RGB' or 'BGR'")
    layout = r.get(inp, "input", "layout", lambda v: v in LAYOUTS,
                   "'NCHW' (channels first: the only layout the ONNX embedder feeds)")
    mean = r.get(inp, "input", "mean", _triple_ok, "3 finite numbers, one per channel in channel_order")
    std = r.get(inp, "input", "std", lambda v: _triple_ok(v) and all(x > 0 for x in v),
                "3 numbers above 0, one per channel in channel_order")
    template = r.get(inp, "input", "template", lambda v: isinstance(v, list) and len(v) == 5 and all(map(_pair, v)),
                     "5 points [x, y] in input pixels: eye, eye, nose tip, mouth corner, mouth corner, "
                     "image left to right")
    if template is not None and width is not None and height is not None:
        _check_template(r, template, width, height)

    dims = r.get(out, "output", "dim", lambda v: _dim(v) or (
        isinstance(v, list) and v and all(map(_dim, v)) and len(set(v)) == len(v)),
        f"an integer from 1 to {MAX_DIM}, or for a generic card a list of them")
    normalize = r.get(out, "output", "l2_normalize", lambda v: isinstance(v, bool), "true or false")
    if sha is not None and isinstance(dims, list) and len(dims) > 1:
        r.fail("output.dim", dims, "a card with a sha256 describes one file: expected its one output dimension")

    metric = r.get(matching, "matching", "metric", lambda v: v in METRICS, "'cosine' or 'euclidean'")
    threshold = r.get(matching, "matching", "threshold", _number, "a finite number")
    source = r.get(matching, "matching", "threshold_source", _text,
                   "a non-empty string: where the threshold was published")
    if metric == "cosine" and normalize is False:
        r.fail("output.l2_normalize", False, "metric 'cosine' compares L2-normalised embeddings: expected true")
    if r.errors:
        raise CardError("\n".join(r.errors))
    assert fmt is not None and width is not None and height is not None and mean is not None and std is not None
    card = Card(
        name=name, origin=origin, license=licence.strip(), sha256=None if sha is None else sha.lower(),
        width=width, height=height, channel_order=order, layout=layout,
        mean=(float(mean[0]), float(mean[1]), float(mean[2])), std=(float(std[0]), float(std[1]), float(std[2])),
        template=tuple((float(x), float(y)) for x, y in template),
        dims=tuple(dims) if isinstance(dims, list) else (dims,), l2_normalize=normalize, metric=metric,
        threshold=float(threshold), threshold_source=source.strip(), description=description.strip())
    if not card.threshold_fits(card.threshold):
        raise CardError(f"{origin}: matching.threshold = {card.threshold!r}: out of range for metric "
                        f"'{metric}'{'' if metric == 'cosine' else f' with l2_normalize = {str(normalize).lower()}'}: "
                        f"expected {card.threshold_range()}")
    return card


def _check_template(r: _Reader, points: list[list[float]], width: int, height: int) -> None:
    field = "input.template"
    outside = [i for i, (x, y) in enumerate(points) if not (0 <= x < width and 0 <= y < height)]
    if outside:
        i = outside[0]
        r.fail(field, points, f"point {i + 1} {points[i]} lies outside the {width}x{height} input")
        return
    (lx, ly), (rx, ry), (_, ny), (mlx, mly), (mrx, mry) = points
    if not (lx < rx and mlx < mrx and max(ly, ry) < ny < min(mly, mry)):
        r.fail(field, points, "expected eye, eye, nose tip, mouth corner, mouth corner, image left to right "
                              "(eyes above the nose tip, the nose tip above the mouth corners)")


def load(path: Path) -> Card:
    """A card file; CardError names the file and each bad field."""
    origin = f"card file {path}"
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise CardError(f"{origin}: not found; built-in cards: {', '.join(builtin_names())}") from None
    except OSError as exc:
        raise CardError(f"{origin}: cannot read it: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CardError(f"{origin}: not valid TOML: {exc}") from None
    return parse(data, origin)


def _builtin_dir() -> Any:
    return resources.files(__package__ or "pi_kiosk") / "cards"


def builtin_names() -> tuple[str, ...]:
    return tuple(sorted(p.name.removesuffix(".toml") for p in _builtin_dir().iterdir()
                        if p.name.endswith(".toml")))


def builtin(name: str) -> Card:
    """A card shipped with pi-kiosk, by name."""
    if name not in builtin_names():
        raise CardError(f"no built-in card {name!r}; built-in cards: {', '.join(builtin_names())}")
    origin = f"built-in card '{name}'"
    card = parse(tomllib.loads((_builtin_dir() / f"{name}.toml").read_text(encoding="utf-8")), origin)
    if card.name != name:
        raise CardError(f"{origin}: name = {card.name!r}: a built-in card's name is its file's")
    return card


def is_path(ref: str) -> bool:
    """A card reference that names a file (rather than a built-in card)."""
    return "/" in ref or ref.endswith(".toml")


def reference_problem(ref: str) -> str | None:
    """What is wrong with a card reference, without reading any file (the configuration's check)."""
    if is_path(ref) or ref in builtin_names():
        return None
    return (f"no built-in card of that name; built-in cards: {', '.join(builtin_names())}, or a card file's path "
            "(containing '/' or ending in .toml)")


def resolve(ref: str, *, key: str = "embedder.card") -> Card:
    """The card a configuration names: a built-in one, or a card file."""
    problem = reference_problem(ref)
    if problem is not None:
        raise CardError(f"{key} = {ref!r}: {problem}")
    return load(Path(ref)) if is_path(ref) else builtin(ref)


def threshold(card: Card, override: float | None, *, key: str = "matching.threshold") -> float:
    """The threshold matching uses: the card's published one, or `override` (checked against the card's metric)."""
    if override is None:
        return card.threshold
    if not card.threshold_fits(override):
        raise CardError(f"{key} = {override!r}: {card.origin} compares by {card.metric} "
                        f"{'similarity' if card.metric == 'cosine' else 'distance'}: expected "
                        f"{card.threshold_range()} (or leave {key} out for the card's {card.threshold:g})")
    return override

"""Model cards (pi_kiosk.cards): the built-in ones, their preprocessing worked by hand, strict validation,
refusal of a card that does not fit its model, and Euclidean matching by dlib's rule."""
from __future__ import annotations

import dataclasses
import hashlib
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from kioskcli import cli
from test_embed import tiny_model

from pi_kiosk import cards, config
from pi_kiosk.align import Aligner, similarity_transform
from pi_kiosk.cards import CardError, builtin
from pi_kiosk.detect import MtcnnDetector
from pi_kiosk.embed import OnnxEmbedder, Preprocess
from pi_kiosk.errors import ConfigError, GalleryError
from pi_kiosk.match import Gallery
from pi_kiosk.pipeline import Pipeline

ARCFACE, SFACE, DLIB = builtin("arcface"), builtin("sface"), builtin("dlib-resnet-v1")
CARDS_DIR = Path(cards.__file__).with_name("cards")

# A 2x2 face as OpenCV holds it: BGR, uint8. Pixel (row, column) -> (B, G, R).
FACE = np.array([[[0, 127, 255], [10, 20, 30]],
                 [[255, 0, 128], [64, 191, 1]]], dtype=np.uint8)
# The same face per model channel, worked by hand. R, G and B planes (row-major):
#   R = [[255, 30], [128, 1]]   G = [[127, 20], [0, 191]]   B = [[0, 10], [255, 64]]
RAW_RGB = [[[255.0, 30.0], [128.0, 1.0]],
           [[127.0, 20.0], [0.0, 191.0]],
           [[0.0, 10.0], [255.0, 64.0]]]
# ArcFace: (x - 127.5) / 127.5 of each, e.g. (30 - 127.5) / 127.5 = -97.5 / 127.5 = -0.7647059.
ARCFACE_RGB = [[[1.0, -0.7647059], [0.0039216, -0.9921569]],
               [[-0.0039216, -0.8431373], [-1.0, 0.4980392]],
               [[-1.0, -0.9215686], [1.0, -0.4980392]]]


def card_text(card: str = "dlib-resnet-v1", **changes: Any) -> str:
    """A built-in card's TOML with fields changed ("input.width": 112) or removed (value None)."""
    data = tomllib.loads((CARDS_DIR / f"{card}.toml").read_text())
    for dotted, value in changes.items():
        *tables, key = dotted.split(".")
        table = data
        for name in tables:
            table = table[name]
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    return dumps(data)


def dumps(data: dict[str, Any]) -> str:
    """Enough TOML for cards: top-level values, then one level of tables."""
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    lines = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for name, table in data.items():
        if isinstance(table, dict):
            lines += [f"[{name}]", *(f"{k} = {value(v)}" for k, v in table.items())]
    return "\n".join(lines) + "\n"


def write_card(tmp_path: Path, text: str, name: str = "card.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- the built-in cards --------------------------------------------------------------------------

def test_the_built_in_cards_are_the_package_data() -> None:
    assert cards.builtin_names() == ("arcface", "dlib-resnet-v1", "sface")
    assert sorted(p.stem for p in CARDS_DIR.glob("*.toml")) == list(cards.builtin_names())


def test_the_built_in_cards_say_what_their_sources_publish() -> None:
    assert (ARCFACE.size, ARCFACE.channel_order, ARCFACE.mean, ARCFACE.std) == ((112, 112), "RGB", (127.5,) * 3,
                                                                             (127.5,) * 3)
    assert (ARCFACE.dims, ARCFACE.metric, ARCFACE.threshold, ARCFACE.sha256) == ((128, 512), "cosine", 0.40, None)
    assert (SFACE.size, SFACE.channel_order, SFACE.mean, SFACE.std, SFACE.dims) == ((112, 112), "RGB", (0.0,) * 3,
                                                                                 (1.0,) * 3, (128,))
    assert (SFACE.metric, SFACE.threshold, SFACE.l2_normalize) == ("cosine", 0.363, True)
    assert SFACE.template == ARCFACE.template  # OpenCV's alignCrop uses InsightFace's points
    assert SFACE.sha256 == "0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79"
    assert "dnn_face.markdown" in SFACE.threshold_source and SFACE.license.startswith("Apache-2.0")
    assert (DLIB.size, DLIB.channel_order, DLIB.mean, DLIB.std, DLIB.dims) == ((150, 150), "RGB", (0.0,) * 3,
                                                                            (1.0,) * 3, (128,))
    assert (DLIB.metric, DLIB.threshold, DLIB.l2_normalize) == ("euclidean", 0.6, False)
    assert DLIB.template == ((46.5559, 44.8012), (100.5484, 44.3568), (73.521, 76.0707), (50.585, 103.2685),
                             (96.3386, 103.2106))
    assert "dnn_face_recognition_ex.cpp" in DLIB.threshold_source and "public domain" in DLIB.license


@pytest.mark.parametrize(("card", "expected"), [
    (ARCFACE, ARCFACE_RGB),
    (SFACE, RAW_RGB),
    (DLIB, RAW_RGB),
])
def test_each_built_in_cards_preprocessing_against_the_hand_worked_face(card: cards.Card,
                                                                        expected: list[Any]) -> None:
    out = np.full((3, 2, 2), np.nan, dtype=np.float32)
    Preprocess(card)(FACE, out)
    np.testing.assert_allclose(out, np.array(expected, dtype=np.float32), atol=1e-6)


def test_a_bgr_card_with_per_channel_scaling_against_the_hand_worked_face(tmp_path: Path) -> None:
    card = cards.load(write_card(tmp_path, card_text(**{"input.channel_order": "BGR", "input.mean": [10, 20, 30],
                                                        "input.std": [2, 4, 5]})))
    out = np.zeros((3, 2, 2), dtype=np.float32)
    Preprocess(card)(FACE, out)
    # B: (x - 10) / 2 of [[0, 10], [255, 64]]; G: (x - 20) / 4 of [[127, 20], [0, 191]]; R: (x - 30) / 5 of
    # [[255, 30], [128, 1]]: channels stay in the frame's order.
    expected = [[[-5.0, 0.0], [122.5, 27.0]], [[26.75, 0.0], [-5.0, 42.75]], [[45.0, 0.0], [19.6, -5.8]]]
    np.testing.assert_allclose(out, np.array(expected, dtype=np.float32), atol=1e-5)


@pytest.mark.parametrize("card", [ARCFACE, SFACE, DLIB], ids=lambda c: c.name)
def test_the_embedder_feeds_its_model_what_its_card_says(card: cards.Card, tmp_path: Path) -> None:
    """Through the real embedder: the bound input tensor holds the hand-worked values (the face tiled to the
    card's size; a card naming a file is used here without its sha256, on a tiny model of its shapes)."""
    model = tiny_model(tmp_path / "m.onnx", [1, 3, card.height, card.width], card.dims[0])
    emb = OnnxEmbedder(model, dataclasses.replace(card, sha256=None))
    face = np.tile(FACE, (card.height // 2, card.width // 2, 1))
    emb.embed(face)
    expected = np.array(ARCFACE_RGB if card is ARCFACE else RAW_RGB, dtype=np.float32)
    np.testing.assert_allclose(emb._input[0, :, :2, :2], expected, atol=1e-6)
    np.testing.assert_allclose(emb._input[0, :, -2:, -2:], expected, atol=1e-6)


def test_the_arcface_card_preprocesses_exactly_as_before_cards() -> None:
    face = np.random.default_rng(3).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    before = face.transpose(2, 0, 1)[::-1].astype(np.float32) * np.float32(1 / 127.5) - np.float32(1.0)
    out = np.empty((3, 112, 112), dtype=np.float32)
    np.testing.assert_array_equal(Preprocess(ARCFACE)(face, out), before)


def test_embeddings_are_normalised_only_when_the_card_says_so(tmp_path: Path) -> None:
    model = tiny_model(tmp_path / "m.onnx", [1, 3, 150, 150], 128)
    face = np.full((150, 150, 3), 200, dtype=np.uint8)
    raw = OnnxEmbedder(model, dataclasses.replace(DLIB, sha256=None)).embed(face)
    # The tiny model sums its 3 channel means (200 each, raw) into each of 128 outputs: 600 * sqrt(128).
    assert float(np.linalg.norm(raw)) == pytest.approx(600.0 * np.sqrt(128), rel=1e-5)
    unit = OnnxEmbedder(model, dataclasses.replace(DLIB, sha256=None, l2_normalize=True)).embed(face)
    assert float(np.linalg.norm(unit)) == pytest.approx(1.0, abs=1e-6)


def test_the_aligner_takes_the_cards_size_and_template(astronaut: np.ndarray) -> None:
    (face,) = MtcnnDetector(min_face_size=40).detect(astronaut)
    for card in (ARCFACE, DLIB):
        aligned = Aligner(card).align(astronaut, face.landmarks)
        assert aligned.shape == (card.height, card.width, 3)
    aligner = Aligner(DLIB)
    np.testing.assert_array_equal(aligner.template, np.array(DLIB.template))
    matrix = similarity_transform(face.landmarks, aligner.template)
    moved = face.landmarks @ matrix[:, :2].T + matrix[:, 2]
    assert np.abs(moved - aligner.template).max() < 8.0  # her landmarks land on the card's template


# --- refusals: bad cards --------------------------------------------------------------------------

def one_line_error(path: Path) -> str:
    with pytest.raises(CardError) as caught:
        cards.load(path)
    message = str(caught.value)
    assert "\n" not in message, message
    assert message.startswith(f"card file {path}: "), message
    return message


@pytest.mark.parametrize(("changes", "expected"), [
    ({"matching.threshold": 1.5, "card": "arcface"},
     "matching.threshold = 1.5: out of range for metric 'cosine': expected a cosine similarity from -1.0 to 1.0"),
    ({"matching.threshold": -0.2}, "matching.threshold = -0.2: out of range for metric 'euclidean' with "
                                   "l2_normalize = false: expected a Euclidean distance: a finite number above 0"),
    ({"matching.threshold": 2.5, "output.l2_normalize": True},
     "matching.threshold = 2.5: out of range for metric 'euclidean' with l2_normalize = true"),
    ({"matching.threshold": "0.6"}, "matching.threshold = '0.6': expected a finite number"),
    ({"input.template": [[46.6, 44.8], [100.5, 44.4], [73.5, 76.1], [50.6, 103.3]]},
     "input.template = [[46.6, 44.8], [100.5, 44.4], [73.5, 76.1], [50.6, 103.3]]: expected 5 points [x, y]"),
    ({"input.template": [[46.6, 44.8], [100.5, 44.4], [73.5, 76.1], [50.6, 153.3], [96.3, 103.2]]},
     "point 4 [50.6, 153.3] lies outside the 150x150 input"),
    ({"input.template": [[100.5, 44.4], [46.6, 44.8], [73.5, 76.1], [50.6, 103.3], [96.3, 103.2]]},
     "expected eye, eye, nose tip, mouth corner, mouth corner, image left to right"),
    ({"input.template": [[38.3, 51.7], [73.5, 51.5], [56.0, 71.7], [41.5, 92.4], [70.7, 92.2]],
      "input.width": 60}, "point 2 [73.5, 51.5] lies outside the 60x150 input"),
    ({"input.channel_order": "RGBA"}, "input.channel_order = 'RGBA': expected 'RGB' or 'BGR'"),
    ({"input.layout": "NHWC"}, "input.layout = 'NHWC': expected 'NCHW'"),
    ({"input.std": [1.0, 0.0, 1.0]}, "input.std = [1.0, 0.0, 1.0]: expected 3 numbers above 0"),
    ({"input.mean": [0.0, 0.0]}, "input.mean = [0.0, 0.0]: expected 3 finite numbers"),
    ({"output.dim": [128, 512]}, "output.dim = [128, 512]: a card with a sha256 describes one file"),
    ({"output.dim": 0}, "output.dim = 0: expected an integer from 1 to 65536"),
    ({"matching.metric": "cosine"}, "output.l2_normalize = False: metric 'cosine' compares L2-normalised"),
    ({"matching.metric": "manhattan"}, "matching.metric = 'manhattan': expected 'cosine' or 'euclidean'"),
    ({"sha256": "abc"}, "sha256 = 'abc': expected 64 hexadecimal digits"),
    ({"format": 2}, "format = 2: expected 1"),
    ({"matching.threshold": None}, "matching.threshold: missing; expected a finite number"),
    ({"matching.threshold_source": None}, "matching.threshold_source: missing; expected a non-empty string"),
    ({"license": None}, "license: missing; expected a non-empty string"),
    ({"input.colour": "yes"}, "input.colour: unknown field; allowed: width, height,"),
])
def test_a_bad_card_is_refused_naming_the_file_and_the_field(tmp_path: Path, changes: dict[str, Any],
                                                           expected: str) -> None:
    base = changes.pop("card", "dlib-resnet-v1")
    path = write_card(tmp_path, card_text(base, **changes))
    assert expected in one_line_error(path)


def test_a_missing_table_and_every_problem_at_once(tmp_path: Path) -> None:
    data = tomllib.loads(card_text())
    del data["matching"]
    data["input"]["width"] = 0
    path = write_card(tmp_path, dumps(data))
    with pytest.raises(CardError) as caught:
        cards.load(path)
    lines = str(caught.value).splitlines()
    assert lines == [f"card file {path}: [matching]: missing; this table is required",
                     f"card file {path}: input.width = 0: expected an integer from 1 to 4096 (pixels)"]


def test_a_card_file_that_is_not_there_or_not_toml(tmp_path: Path) -> None:
    assert one_line_error(tmp_path / "nope.toml").endswith(
        "not found; built-in cards: arcface, dlib-resnet-v1, sface")
    assert "not valid TOML" in one_line_error(write_card(tmp_path, "[input\nwidth = 1\n"))


def test_an_unknown_built_in_name_is_refused_naming_the_built_in_ones() -> None:
    with pytest.raises(CardError, match=r"^embedder.card = 'dlib': no built-in card of that name; built-in cards: "
                                        r"arcface, dlib-resnet-v1, sface, or a card file's path"):
        cards.resolve("dlib")
    assert cards.resolve("sface") == SFACE and cards.resolve(str(CARDS_DIR / "sface.toml")).name == "sface"


def test_a_configuration_without_a_card_is_refused_naming_the_built_in_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        config.parse({"embedder": {"model_path": "/m.onnx"}, "server": {"url": "http://srv"}})
    assert ("  embedder.card: missing; every model needs its card, it has no default: a built-in card's name "
            "(arcface, dlib-resnet-v1, sface) or a card file's path") in str(caught.value)


def test_the_service_does_not_start_without_a_card(write_config: Callable[..., Path]) -> None:
    path = write_config()
    path.write_text(re.sub(r'^card = .*\n', "", path.read_text(), flags=re.M))
    done = cli("run", "--config", str(path))
    assert done.returncode == 2
    assert done.stderr.splitlines()[1].startswith("  embedder.card: missing; every model needs its card")


@pytest.mark.parametrize(("card", "threshold", "ok"), [
    ("arcface", 0.5, True), ("arcface", 1.2, False), ("dlib-resnet-v1", 0.5, True), ("dlib-resnet-v1", 3.0, True),
    ("dlib-resnet-v1", -0.1, False), ("dlib-resnet-v1", 0.0, False), ("sface", -1.0, True)])
def test_matching_threshold_is_checked_against_a_built_in_cards_metric(card: str, threshold: float, ok: bool) -> None:
    data = {"embedder": {"model_path": "/m.onnx", "card": card}, "server": {"url": "http://srv"},
            "matching": {"threshold": threshold}}
    if ok:
        assert config.parse(data).matching.threshold == threshold
    else:
        with pytest.raises(ConfigError, match=rf"matching.threshold = {threshold}: built-in card '{card}' compares"):
            config.parse(data)


def test_a_threshold_out_of_its_cards_range_is_reported_with_every_other_problem() -> None:
    data = {"embedder": {"model_path": "/m.onnx", "card": "arcface"}, "server": {"url": "http://srv"},
            "matching": {"threshold": 2}, "camera": {"width": 5}, "report": {"colour": "blue"}}
    with pytest.raises(ConfigError) as caught:
        config.parse(data)
    problems = str(caught.value).splitlines()[1:]
    assert [p.split(":")[0].strip() for p in problems] == [
        "camera.width = 5", "report.colour", "matching.threshold = 2.0"]


def test_a_card_files_path_is_read_when_the_model_is_loaded_not_by_the_validator() -> None:
    cfg = config.parse({"embedder": {"model_path": "/m.onnx", "card": "/etc/pi-kiosk/cards/x.toml"},
                        "server": {"url": "http://srv"}, "matching": {"threshold": 7.0}})
    assert cfg.embedder.card == "/etc/pi-kiosk/cards/x.toml"  # on the deploy controller the file is not there


# --- refusals: a card that does not fit its model -------------------------------------------------

@pytest.mark.parametrize(("card", "shape", "dim", "message"), [
    (ARCFACE, [1, 3, 150, 150], 512, r"input 'x' has shape \[1, 3, 150, 150\]; built-in card 'arcface' says "
                                     r"\[1, 3, 112, 112\]"),
    (DLIB, [1, 3, 112, 112], 128, r"input 'x' has shape \[1, 3, 112, 112\]; built-in card 'dlib-resnet-v1' says "
                                  r"\[1, 3, 150, 150\]"),
    (DLIB, [1, 150, 150, 3], 128, r"looks like NHWC"),
    (DLIB, [1, 3, 150, 150], 512, r"output 'y' has shape \[.*, 512\]; built-in card 'dlib-resnet-v1' says \[1, 128\]"),
    (SFACE, [1, 3, 112, 112], 512, r"output 'y' has shape \[.*, 512\]; built-in card 'sface' says \[1, 128\]"),
    (ARCFACE, [1, 3, 112, 112], 256, r"output 'y' has shape \[.*, 256\]; .* says \[1, 128\] or \[1, 512\]"),
])
def test_a_card_that_disagrees_with_the_models_shapes_is_refused(tmp_path: Path, card: cards.Card, shape: list[int],
                                                                dim: int, message: str) -> None:
    model = tiny_model(tmp_path / "m.onnx", shape, dim)  # type: ignore[arg-type]
    with pytest.raises(CardError, match=message):
        OnnxEmbedder(model, dataclasses.replace(card, sha256=None))


def test_a_symbolic_output_of_the_wrong_size_is_refused(tmp_path: Path) -> None:
    model = tiny_model(tmp_path / "m.onnx", ["N", 3, 150, 150], "D")  # 128 once run
    card = dataclasses.replace(DLIB, sha256=None, dims=(256,))
    # ONNX Runtime may infer the size from the weights (then the shape check refuses it), or leave it to a run.
    with pytest.raises(CardError, match=r"(produces 128-d embeddings|has shape \[.*, 128\]); built-in card "
                                        r"'dlib-resnet-v1' says \[?1?,? ?256"):
        OnnxEmbedder(model, card)


def test_a_card_that_names_another_file_is_refused(mobilefacenet: Path) -> None:
    with pytest.raises(CardError, match=r"sha256 is [0-9a-f]{64}, but built-in card 'sface' describes the file with "
                                        r"sha256 0ba9fbfa01b5"):
        OnnxEmbedder(mobilefacenet, SFACE)


def test_the_kiosk_does_not_start_with_a_card_that_does_not_fit(write_config: Callable[..., Path],
                                                               tmp_path: Path) -> None:
    wrong_file = cli("check", "--offline", "--config", str(write_config(embedder={"card": "dlib-resnet-v1"})))
    assert wrong_file.returncode == 1 and wrong_file.stdout == ""
    assert wrong_file.stderr.count("\n") == 1
    assert "but built-in card 'dlib-resnet-v1' describes the file with sha256 6a64a97a180423ad" in wrong_file.stderr
    generic = write_card(tmp_path, card_text(sha256=None))  # dlib's card for any file: the shape decides
    wrong_shape = cli("check", "--offline", "--config", str(write_config(embedder={"card": str(generic)})))
    assert wrong_shape.returncode == 1 and wrong_shape.stderr.count("\n") == 1
    assert f"has shape ['N', 3, 112, 112]; card file {generic} says [1, 3, 150, 150]" in wrong_shape.stderr


def test_a_euclidean_card_runs_the_whole_kiosk(write_config: Callable[..., Path], tmp_path: Path,
                                               astronaut_path: Path) -> None:
    """A 150x150 raw-RGB model with a Euclidean card (dlib's, for a tiny stand-in model): enrol, then check."""
    model = tiny_model(tmp_path / "dlib-like.onnx", [1, 3, 150, 150], 128)
    card = write_card(tmp_path, card_text(sha256=None))
    cfg = write_config(embedder={"model_path": str(model), "card": str(card)})
    enrolled = cli("enroll", "--config", str(cfg), "--id", "E001", str(astronaut_path))
    assert enrolled.returncode == 0, enrolled.stderr
    done = cli("check", "--offline", "--image", str(astronaut_path), "--config", str(cfg))
    assert done.returncode == 0, done.stderr
    assert "ok: embedder OnnxEmbedder, 128-d" in done.stdout
    assert (f"ok: card card file {card}: 150x150 RGB NCHW, (x - 0) / 1, 128-d not normalised, same person at "
            "euclidean distance < 0.6 (a generic card); matching at 0.6 (the card's published threshold)"
            ) in done.stdout
    assert "gallery 1 people, 1 embeddings" in done.stdout


def test_the_pipeline_aligns_embeds_and_matches_by_the_embedders_card(tmp_path: Path, astronaut: np.ndarray) -> None:
    model = tiny_model(tmp_path / "m.onnx", [1, 3, 150, 150], 128)
    embedder = OnnxEmbedder(model, dataclasses.replace(DLIB, sha256=None))
    detector = MtcnnDetector(min_face_size=40)
    (face,) = detector.detect(astronaut)
    her = embedder.embed(Aligner(embedder.card).align(astronaut, face.landmarks)).copy()
    stranger = her + np.float32(1.0)  # 1.0 * sqrt(128) away
    pipeline = Pipeline(detector, embedder, Gallery(["E1", "E2"], np.stack([stranger, her]), embedder.card), 0.6)
    (result,) = pipeline.process(astronaut)
    assert result.match.employee_id == "E2" and result.match.score == pytest.approx(0.0, abs=1e-3)
    assert pipeline.aligner.size == (150, 150)


# --- Euclidean matching: dlib's rule -------------------------------------------------------------

def dlib_rule(gallery_rows: np.ndarray, ids: list[str], probe: np.ndarray,
              threshold: float) -> tuple[str | None, float]:
    """dlib's decision, in float64 on the float32 vectors: the nearest row, the same person below the threshold."""
    distances = np.linalg.norm(gallery_rows.astype(np.float64) - probe.astype(np.float64), axis=1)
    best = int(np.argmin(distances))
    return (ids[best] if distances[best] < threshold else None), float(distances[best])


def test_euclidean_matching_decides_as_dlibs_rule_on_constructed_vectors() -> None:
    rng = np.random.default_rng(7)
    rows = (rng.standard_normal((6, 128)) * 0.09).astype(np.float32)  # dlib-like descriptors, norms ~1
    ids = ["A", "A", "B", "C", "D", "E"]
    gallery = Gallery(ids, rows, DLIB)
    np.testing.assert_array_equal(gallery.matrix, rows)  # raw descriptors are kept as they are
    checked = 0
    for row in range(len(rows)):
        direction = rng.standard_normal(128)
        direction /= np.linalg.norm(direction)
        for distance in (0.0, 0.3, 0.59, 0.599, 0.5999, 0.6001, 0.601, 0.61, 0.9):
            probe = (rows[row] + distance * direction).astype(np.float32)
            expected_id, expected_distance = dlib_rule(rows, ids, probe, 0.6)
            match = gallery.match(probe, DLIB.threshold)
            assert match.employee_id == expected_id, (row, distance, match, expected_distance)
            assert match.score == pytest.approx(expected_distance, abs=1e-5)
            checked += 1
    assert checked == 54


def test_euclidean_threshold_edge_is_strict() -> None:
    gallery = Gallery(["A"], [[3.0, 4.0]], DLIB)
    probe = np.zeros(2, dtype=np.float32)  # exactly 5.0 away
    assert gallery.match(probe, 5.0).employee_id is None  # dlib: the same person *below* the threshold
    assert gallery.match(probe, float(np.nextafter(5.0, 6.0))).employee_id == "A"
    assert gallery.match(probe, 5.0).score == 5.0


@pytest.mark.parametrize(("rows", "dim"), [(1, 128), (3, 128), (10_000, 128)])
def test_euclidean_matching_is_the_nearest_row_numpy_finds(rows: int, dim: int) -> None:
    rng = np.random.default_rng(rows)
    matrix = (rng.standard_normal((rows, dim)) * rng.uniform(0.5, 2.0, (rows, 1))).astype(np.float32)
    ids = [f"E{i}" for i in range(rows)]
    gallery = Gallery(ids, matrix, DLIB)
    for _ in range(5):
        probe = (matrix[rng.integers(rows)] + rng.standard_normal(dim) * 0.05).astype(np.float32)
        expected_id, expected_distance = dlib_rule(matrix, ids, probe, 100.0)
        match = gallery.match(probe, 100.0)
        assert match.employee_id == expected_id and match.score == pytest.approx(expected_distance, rel=1e-5)


def test_an_empty_euclidean_gallery_matches_nobody_at_infinite_distance() -> None:
    match = Gallery.empty(128, DLIB).match(np.zeros(128, dtype=np.float32), 0.6)
    assert match.employee_id is None and match.score == float("inf")


def test_galleries_of_different_metrics_do_not_merge() -> None:
    with pytest.raises(GalleryError, match="cannot merge embeddings of built-in card 'arcface' into a gallery of "
                                           "built-in card 'dlib-resnet-v1'"):
        Gallery(["A"], [[1.0, 0.0]], DLIB).merged(Gallery(["B"], [[0.0, 1.0]], ARCFACE))


def test_a_normalised_euclidean_card_normalises_its_rows() -> None:
    card = dataclasses.replace(DLIB, l2_normalize=True, threshold=1.128)
    gallery = Gallery(["A"], [[3.0, 4.0]], card)
    np.testing.assert_allclose(gallery.matrix, [[0.6, 0.8]], rtol=1e-6)
    assert gallery.match(np.array([0.8, 0.6], dtype=np.float32), 1.128).employee_id == "A"


# --- the converted dlib model and its card ---------------------------------------------------------

def test_the_dlib_card_names_the_converters_output(resnet_onnx: Path) -> None:
    digest = hashlib.sha256(resnet_onnx.read_bytes()).hexdigest()
    assert digest == DLIB.sha256, (f"the converter now writes {digest}: update sha256 in src/pi_kiosk/cards/"
                                   "dlib-resnet-v1.toml (a changed converter output is another file)")


def test_the_converted_model_runs_with_its_card_as_the_converter_specifies(resnet_onnx: Path) -> None:
    embedder = OnnxEmbedder(resnet_onnx, DLIB)  # the card fits: its sha256, its shapes
    assert embedder.dim == 128
    chip = np.random.default_rng(0).integers(0, 256, (150, 150, 3), dtype=np.uint8)  # RGB, as dlib's chips
    reference = ort.InferenceSession(str(resnet_onnx), providers=["CPUExecutionProvider"]).run(
        None, {"image": chip.transpose(2, 0, 1)[None].astype(np.float32)})[0][0]
    ours = embedder.embed(np.ascontiguousarray(chip[:, :, ::-1]))  # the kiosk's frames are BGR
    np.testing.assert_allclose(ours, reference, atol=1e-4)  # raw: not normalised, as dlib compares them
    assert float(np.linalg.norm(ours)) != pytest.approx(1.0, abs=1e-3)

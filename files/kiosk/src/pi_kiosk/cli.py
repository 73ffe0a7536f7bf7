"""`pi-kiosk`: run, check, enroll, forget, outbox, bench, quantize, synthetic-model, convert-dlib."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import numpy as np

from . import __version__, config
from .errors import ConfigError, KioskError

if TYPE_CHECKING:
    from .sync import GallerySync

log = logging.getLogger("pi_kiosk")


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)


def _load(args: argparse.Namespace) -> config.Config:
    cfg = config.load(args.config)
    _setup_logging(cfg.logging.level)
    return cfg


def _refuse_root(args: argparse.Namespace, writes: str) -> None:
    """For the commands that write the service's files (privileges.py); the others run as root too."""
    from .privileges import refuse_root

    command = " ".join(filter(None, (args.command, getattr(args, "outbox_command", None))))
    refuse_root(command, args.argv, writes, args.config)


def cmd_run(args: argparse.Namespace) -> int:
    from .service import Service

    _refuse_root(args, "the outbox, the gallery cache and the model cache (embedder.cache_dir)")
    service = Service(_load(args))

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        service.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service.run()
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """The deploy role's on-device smoke test: config, models, one detection and one embedding,
    the outbox and the server. `--config-only` only judges the file (an operator's hand edit)."""
    if args.config_only:  # reads the file alone: root may (the deploy role validates the same way)
        config.load(args.config)
        print(f"ok: config {args.config}")
        return 0
    from .capture import read_image
    from .recognizer import assemble

    # Loading the models writes ONNX Runtime's optimised graph to the service's cache.
    _refuse_root(args, "the model cache (embedder.cache_dir) and the outbox's -wal and -shm files")
    cfg = _load(args)
    if args.token_file is not None:  # the deploy's candidate token, proven before it goes live
        cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, token="", token_file=args.token_file))
    recognizer = assemble(cfg, offline=args.offline)
    pipeline = recognizer.pipeline
    embedder, gallery = pipeline.embedder, pipeline.gallery
    frame = (read_image(args.image) if args.image
             else np.zeros((cfg.camera.height, cfg.camera.width, 3), dtype=np.uint8))
    results = pipeline.process(frame)
    # Always run one embedding, even when the test frame holds no face.
    card = embedder.card
    vector = embedder.embed(np.zeros((card.height, card.width, 3), dtype=np.uint8))
    if not np.isfinite(vector).all():
        raise KioskError("the embedding model produced non-finite values")
    print(f"ok: config {args.config}")
    threads = "Edge TPU" if embedder.threads is None else f"{embedder.threads} thread(s)"
    print(f"ok: embedder {type(embedder).__name__}, {embedder.dim}-d, model {embedder.model_sha256[:12]}, "
          f"{threads}, one inference done")
    chosen = "matching.threshold" if cfg.matching.threshold is not None else "the card's published threshold"
    print(f"ok: card {card.describe()}; matching at {pipeline.threshold:g} ({chosen})")
    print(f"ok: detector {cfg.detector.backend}, {len(results)} face(s) in the test frame")
    print(f"ok: gallery {gallery.people} people, {len(gallery)} embeddings")
    print(f"ok: {_outbox_line(cfg.outbox.path)}")
    if not args.offline:
        print(_server_line(recognizer.sync, cfg.server.url, args.require_server))
    return 0


def _outbox_line(path: Path) -> str:
    from .outbox_admin import existing_outbox

    if not path.is_file():  # the service creates it, as its own user
        return f"outbox {path} not created yet (the service creates it)"
    with existing_outbox(path) as outbox:
        return f"outbox {outbox.depth()} pending, {outbox.rejected_count()} rejected"


def _server_line(sync: GallerySync, server_url: str, require: bool) -> str:
    """The server's answer to the gallery request. A refused token fails the check: with it nothing
    the kiosk records ever reaches the server. A network or server failure fails it only when the
    server is required (the deploy's gate): otherwise the kiosk rides it out with its outbox."""
    import requests

    from .delivery import judge, unreachable
    from .redact import redact_url

    try:
        status = sync.probe()
    except requests.RequestException as exc:
        verdict = unreachable(exc)
    else:
        if status == 304 or 200 <= status < 300:
            return f"ok: server answered HTTP {status} to GET {sync.url}"
        verdict = judge(status)
    shown = redact_url(server_url)
    if verdict.state == "auth":
        raise KioskError(f"server.url = {shown!r} answered {verdict.detail} to GET {sync.url}: {verdict.hint}")
    if require:
        raise KioskError(f"server.url = {shown!r}: {verdict.detail} to GET {sync.url}: {verdict.hint} "
                         "(--require-server: the server must accept this kiosk's token)")
    return (f"warning: server.url = {shown!r}: {verdict.detail} to GET {sync.url}: {verdict.hint} "
            "(the kiosk keeps events in its outbox meanwhile)")


def cmd_enroll(args: argparse.Namespace) -> int:
    from .enroll import enroll
    from .recognizer import load_models

    _refuse_root(args, "sync.enrolled_path and the model cache (embedder.cache_dir)")
    cfg = _load(args)
    detector, embedder = load_models(cfg)
    gallery = enroll(args.id, args.photos, detector, embedder, cfg.sync.enrolled_path, replace=args.replace,
                     new_model=args.new_model)
    print(f"enrolled {args.id} from {len(args.photos)} photo(s); {gallery.people} people in {cfg.sync.enrolled_path}")
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    """Erase people from everything this kiosk stores, at once, beside the running service (which notices the
    rewritten files within a second and drops them from memory too). An id found nowhere is not an error: a fleet
    runs this on every kiosk, and most never saw the person."""
    from .erase import erase_stored, totals
    from .outbox import Outbox

    _refuse_root(args, "sync.enrolled_path, sync.cache_path and the outbox database (outbox.path)")
    cfg = _load(args)
    outbox = Outbox(cfg.outbox.path) if cfg.outbox.path.is_file() else None  # never created here
    try:
        found = erase_stored(args.ids, cfg.sync, outbox)
    finally:
        if outbox is not None:
            outbox.close()
    log.info("forget: %s", totals(found))  # the journal: counts only
    for employee in dict.fromkeys(args.ids):  # the operator's own ids, each once, in their order
        erased = found.get(employee)
        print(f"{employee}: removed {erased.describe()}" if erased else f"{employee}: not found on this kiosk")
    return 0


def cmd_outbox_list(args: argparse.Namespace) -> int:
    from .outbox_admin import existing_outbox, listing

    # Opening the database writes: its -wal and -shm files, and any migration of its tables.
    _refuse_root(args, "the outbox database (outbox.path) and its -wal and -shm files")
    cfg = _load(args)
    with existing_outbox(cfg.outbox.path) as outbox:
        print(listing(outbox, time.time()))
    return 0


def cmd_outbox_requeue(args: argparse.Namespace) -> int:
    from .outbox_admin import existing_outbox

    _refuse_root(args, "the outbox database (outbox.path) and its -wal and -shm files")
    cfg = _load(args)
    with existing_outbox(cfg.outbox.path) as outbox:
        count = outbox.requeue(args.keys)
    print(f"requeued {count} event(s) at their old place in the queue; the service sends them on its next pass")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench
    from .capture import classify, read_image
    from .cards import threshold
    from .detect import load_detector
    from .embed import load_embedder

    _refuse_root(args, "the model cache (embedder.cache_dir)")
    cfg = _load(args)
    image = args.image
    if image is None and classify(cfg.camera.source).kind == "image":
        image = Path(cfg.camera.source)
    if image is None:
        raise KioskError("bench needs a test photo: --image PATH (or an image file as camera.source)")
    embedder = load_embedder(cfg.embedder)
    detector = load_detector(cfg.detector)
    print(bench.run(read_image(image), detector, embedder, frames=args.frames, gallery_size=args.gallery_size,
                    threshold=threshold(embedder.card, cfg.matching.threshold)))
    return 0


# quantize, synthetic-model and convert-dlib write only the output file they are given (the deploy
# controller runs the converter and synthetic-model, as root on CI): they run as any user.
def cmd_quantize(args: argparse.Namespace) -> int:
    from .cards import resolve
    from .quantize import quantize

    _setup_logging("WARNING")
    print(quantize(args.model, args.output, resolve(args.card, key="--card"), args.calibration, threads=args.threads,
                   activations=args.activations))
    print(f"wrote {args.output}")
    return 0


def cmd_synthetic_model(args: argparse.Namespace) -> int:
    from .synthetic import build

    info = build(args.arch, args.output, dim=args.dim, seed=args.seed)
    print(f"wrote {info.path}: {info.architecture} with RANDOM weights, {info.params / 1e6:.2f}M parameters, "
          f"{info.macs / 1e9:.2f} GMAC (for tests and benchmarks; it recognises nobody)")
    return 0


def cmd_convert_dlib(args: argparse.Namespace) -> int:
    from .dlib_resnet import convert

    print(convert(args.dat, args.output).summary())
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: expected an integer >= 1")
    return value


def _employee_id(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("an employee id must not be empty")
    return text


def parser() -> argparse.ArgumentParser:
    from .synthetic import ARCHITECTURES

    p = argparse.ArgumentParser(prog="pi-kiosk", description=__doc__)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(name: str, help: str, parent: argparse._SubParsersAction[argparse.ArgumentParser] = sub,
                    ) -> argparse.ArgumentParser:
        sp = parent.add_parser(name, help=help)
        sp.add_argument("--config", type=Path, default=config.DEFAULT_PATH,
                        help=f"configuration file (default {config.DEFAULT_PATH})")
        return sp

    with_config("run", "run the kiosk").set_defaults(func=cmd_run)
    sp = with_config("check", "validate config and models, run one inference, ask the server (deploy smoke test)")
    sp.add_argument("--image", type=Path, help="photo to run the pipeline on (default: a blank frame)")
    sp.add_argument("--offline", action="store_true", help="do not ask the attendance server")
    sp.add_argument("--token-file", type=Path, help="ask the server with this token file instead of the config's")
    sp.add_argument("--require-server", action="store_true",
                    help="fail unless the server accepts the token (default: only a refused token fails)")
    sp.add_argument("--config-only", action="store_true",
                    help="only parse and validate the configuration file (nothing else is read or loaded)")
    sp.set_defaults(func=cmd_check)
    sp = with_config("enroll", "enroll a person on this kiosk from photos")
    sp.add_argument("--id", required=True, help="employee id, e.g. E001")
    sp.add_argument("--replace", action="store_true", help="replace this person's earlier enrollment")
    sp.add_argument("--new-model", action="store_true",
                    help="the enrollment file is of another model: keep it as enrolled.<its sha256[:12]>.npz "
                         "and start a new one")
    sp.add_argument("photos", nargs="+", type=Path, help="photos, each with exactly one face")
    sp.set_defaults(func=cmd_enroll)
    sp = with_config("forget", "erase people from this kiosk at once: gallery cache, enrollments, outbox")
    sp.add_argument("ids", nargs="+", type=_employee_id, metavar="ID", help="employee ids, e.g. E001")
    sp.set_defaults(func=cmd_forget)
    outbox = sub.add_parser("outbox", help="the queue of attendance events (as the service's user, beside the "
                            "running service)")
    outbox_sub = outbox.add_subparsers(dest="outbox_command", required=True)
    with_config("list", "pending and rejected counts, the last error, the rejected events",
                outbox_sub).set_defaults(func=cmd_outbox_list)
    sp = with_config("requeue", "put rejected events back in the queue, keys and order kept", outbox_sub)
    sp.add_argument("keys", nargs="*", metavar="KEY", help="idempotency keys to requeue (default: all rejected)")
    sp.set_defaults(func=cmd_outbox_requeue)
    sp = with_config("bench", "per-stage latency (p50/p95) and frames/s on this device")
    sp.add_argument("--image", type=Path, help="test photo (default: camera.source if it is an image)")
    sp.add_argument("--frames", type=_positive, default=50)
    sp.add_argument("--gallery-size", type=_positive, default=1000)
    sp.set_defaults(func=cmd_bench)
    sp = sub.add_parser("quantize", help="INT8-quantize an embedding model and report agreement with FP32")
    sp.add_argument("--card", required=True,
                    help="the model's card: a built-in name (arcface, sface, dlib-resnet-v1) or a card file's path")
    sp.add_argument("model", type=Path)
    sp.add_argument("output", type=Path)
    sp.add_argument("--calibration", nargs="*", type=Path, default=[], help="photos with faces for calibration")
    sp.add_argument("--threads", type=int, default=0)
    sp.add_argument("--activations", choices=["uint8", "int8"], default="",
                    help="activation type (default: uint8 on x86-64, int8 elsewhere)")
    sp.set_defaults(func=cmd_quantize)
    sp = sub.add_parser("synthetic-model", help="write an architecture-faithful model with RANDOM weights")
    sp.add_argument("--arch", choices=ARCHITECTURES, default="mobilefacenet")
    sp.add_argument("--dim", type=int, choices=(128, 512), default=512)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("output", type=Path)
    sp.set_defaults(func=cmd_synthetic_model)
    sp = sub.add_parser("convert-dlib", help="convert dlib's face-recognition ResNet "
                        "(dlib_face_recognition_resnet_model_v1.dat) to ONNX")
    sp.add_argument("dat", type=Path)
    sp.add_argument("output", type=Path)
    sp.set_defaults(func=cmd_convert_dlib)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    args.argv = argv  # for the command line a refusal to run as root gives back (privileges.py)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"pi-kiosk: {exc}", file=sys.stderr)
        return 2
    except KioskError as exc:
        print(f"pi-kiosk: {exc}", file=sys.stderr)
        return 1
    return code

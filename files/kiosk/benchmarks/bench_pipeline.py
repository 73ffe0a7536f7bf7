"""Benchmark the kiosk pipeline against the guide's recipe, on this machine, in one run.

    python files/kiosk/benchmarks/bench_pipeline.py [--rounds 5] [--resnet50] [--memory-only] [--gallery 10000]
                                                    [--no-trained] [--profile]

Prints:
1. embedding per face: the guide's recipe (whole frame resized to 112x112, default session,
   per-call numpy steps), written here as the baseline, against ours (aligned crop, PReLU
   rewritten at load, preallocated bound buffers, in-place preprocessing, workers that spin
   only between operators); both load the same model file and run threads = the cores this
   process may use, the guide in a process of its own with ONNX Runtime's defaults. The guide's "4 threads" means
   "all cores" on every board it targets (Pi 4, Pi 3 B+, Zero 2 W: four each), so the baseline
   gets the cores it would use on its own target; its literal 4 is a second, labelled line (on a
   machine with fewer cores it oversubscribes them). Ours is also put against this machine's
   fp32 GEMM rate (ONNX Runtime's MatMul, same threads): the physical ceiling;
2. matching one face against 10,000 enrolled: a Python loop over a dict against
   Gallery.match (one float32 matrix-vector product);
3. the whole 640x480 frame with one face (detect + align + embed + match) against the guide's
   embed-only frame (threads = cores): per frame of a camera stream as the service runs it (the
   face followed, the full detection cascade every detector.track_frames frames) for an
   enrolled person (her identity kept while she is followed) and for a stranger (embedded on
   every frame), and with the full cascade and the embedding on every frame (a photo);
4. resident memory of a running `pi-kiosk run` service (VmRSS after a while, and its peak
   VmHWM) on its first start (model rewritten, optimised and cached) and on a restart (cache
   used); with `--resnet50` for both architectures, and the memory-fit formula derived from the
   two: baseline MB + multiplier x model file MB; with `--gallery` people enrolled (10,000);
5. the kiosk's CPU at camera.max_fps = 10, in CPU seconds per minute: nobody in view (the motion
   gate on and off), an enrolled person in view, a stranger in view; and a visit: the frame,
   counted from the first one the person is in, that brings the attendance event;
6. the default model (dlib's face-recognition ResNet with its TRAINED weights, converted: the
   controller cache's, where `scripts/bootstrap --dev` puts its source): the embedding as in 1.
   (the guide's steps at its card's 150x150 and scaling, threads = cores, on the same model), and
   its share of the GEMM rate;
7. its whole frame as in 3., enrolled person and stranger, against the fair guide's embedding of 6.;
8. its INT8 form (`pi-kiosk quantize`), calibrated on the faces of the parity test's photos (the
   astronaut and scikit-image's LFW subset, with augmentations): cosine agreement with FP32 per
   chip, and the speed of both on this machine; `--no-trained` leaves 6-8 out;
9. with `--profile`, where the embedding's time goes: the share of each kind of operator (ONNX
   Runtime's profiler) and the bare network on 1 thread, on all cores with workers that sleep,
   spin 200 us (ours) or spin 5 ms.

Sections 1-5 and 9 use models of the real architectures with RANDOM weights (speed and memory are
the real ones); recognition quality is the parity test's business (tests/test_dlib_resnet.py). Other
jobs may share the machine: each figure is the median of a round, and the best of `--rounds`
rounds is printed (the guide and ours are measured alternately, so both see the same load, with
a pause before each so that neither is timed while the other's idle threads still spin).
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort
import requests

from pi_kiosk import graph, synthetic
from pi_kiosk.align import Aligner
from pi_kiosk.cards import Card, builtin
from pi_kiosk.config import DetectorConfig
from pi_kiosk.detect import MtcnnDetector
from pi_kiosk.embed import OnnxEmbedder
from pi_kiosk.match import Gallery
from pi_kiosk.pipeline import Pipeline, no_timing
from pi_kiosk.runtime import SPIN_MICROSECONDS, available_cores, session_options
from pi_kiosk.store import load_gallery, save_gallery
from pi_kiosk.track import Tracker

# `pi-kiosk enroll` and `run` as the service's user, as the tests run them (the commands refuse root).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import kioskcli

# The models here are ArcFace-contract architectures (random weights): the arcface card describes them.
ARCFACE = builtin("arcface")

# The guide's literal thread count: "use all cores" on the four-core boards it was written for.
GUIDE_THREADS = 4


class GuideRecipe:
    """The guide's embedding step, as it is written there, with `threads` intra-op threads: the baseline. The
    guide writes it for the ArcFace contract (112x112, (x - 127.5) / 127.5, unit length); on a model of another
    card the same steps take that card's size, channel order, scaling and normalisation."""

    def __init__(self, model: Path, threads: int, card: Card) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        self.size, self.rgb, self.unit = card.size, card.channel_order == "RGB", card.l2_normalize
        # The guide's scalars where the channels agree (ArcFace's 127.5), else per-channel float32 arrays.
        self.mean: float | np.ndarray = card.mean[0]
        self.std: float | np.ndarray = card.std[0]
        if len({*card.mean}) > 1 or len({*card.std}) > 1:
            self.mean = np.array(card.mean, np.float32).reshape(3, 1, 1)
            self.std = np.array(card.std, np.float32).reshape(3, 1, 1)

    def embed(self, frame: np.ndarray) -> np.ndarray:
        img = cv2.resize(frame, self.size)
        if self.rgb:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        img = np.transpose(img, (2, 0, 1)).astype(np.float32)
        img = (img - self.mean) / self.std
        img = np.expand_dims(img, axis=0)
        input_name = self.session.get_inputs()[0].name
        emb: np.ndarray = self.session.run(None, {input_name: img})[0][0]
        return emb / np.linalg.norm(emb) if self.unit else emb


class GuideProcess:
    """The guide's recipes in a process of their own, as the guide's program runs, with ONNX
    Runtime's defaults: neither shares a machine's caches or threads with the other's state."""

    def __init__(self, model: Path, card: Card, frame: np.ndarray, threads: tuple[int, ...]) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_guide_worker, args=(child, model, card, frame, threads), daemon=True)
        self._process.start()
        self._conn.recv()  # loaded

    def timer(self, threads: int) -> Timer:
        def run(iterations: int) -> float:
            self._conn.send((threads, iterations))
            seconds: float = self._conn.recv()
            return seconds
        return run

    def close(self) -> None:
        self._conn.send(None)
        self._process.join()


def _guide_worker(conn: Connection, model: Path, card: Card, frame: np.ndarray, threads: tuple[int, ...]) -> None:
    recipes = {n: GuideRecipe(model, n, card) for n in threads}
    conn.send(None)
    while (request := conn.recv()) is not None:
        n, iterations = request
        conn.send(timed(functools.partial(recipes[n].embed, frame), iterations))


def dict_match(db: dict[str, np.ndarray], emb: np.ndarray) -> tuple[str | None, float]:
    """The guide-style matcher: a Python loop over a dict of embeddings."""
    best, best_score = None, -1.0
    for name, vec in db.items():
        score = float(np.dot(emb, vec) / (np.linalg.norm(emb) * np.linalg.norm(vec)))
        if score > best_score:
            best, best_score = name, score
    return best, best_score


def kiosk_frame(astronaut: np.ndarray) -> np.ndarray:
    """A 640x480 head-and-shoulders frame: the astronaut's face about 170 px wide."""
    return cv2.resize(astronaut[0:240, 64:384], (640, 480), interpolation=cv2.INTER_CUBIC)


def timed(fn: Callable[[], object], iterations: int) -> float:
    """Median seconds per call over `iterations` calls."""
    samples = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


SETTLE_SECONDS = 0.3


Timer = Callable[[int], float]  # runs its contender n times, returns the median seconds per call


def here(fn: Callable[[], object]) -> Timer:
    """A contender timed in this process."""
    return lambda iterations: timed(fn, iterations)


def best_of(rounds: int, contenders: dict[str, Timer], iterations: int) -> dict[str, float]:
    """Best (lowest) per-round median for each contender; contenders alternate within a round."""
    best = {name: float("inf") for name in contenders}
    for timer in contenders.values():  # warm-up: first runs allocate and plan
        timer(3)
    for _ in range(rounds):
        for name, timer in contenders.items():
            # Threads of the previous contender may still be spinning (ONNX Runtime's after the
            # guide's runs, OpenBLAS's after a gallery product, ~0.1 s each): that is not this one's cost.
            time.sleep(SETTLE_SECONDS)
            best[name] = min(best[name], timer(iterations))
    return best


def recorder(stages: dict[str, list[float]]) -> Callable[[str, float], None]:
    """A pipeline observer that keeps every stage's timings in `stages`."""
    return lambda stage, seconds: stages.setdefault(stage, []).append(seconds)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f} ms"


def astronaut_image() -> np.ndarray:
    import importlib.util

    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("scikit-image is needed for its astronaut.png sample photo")
    image = cv2.imread(str(Path(next(iter(spec.submodule_search_locations))) / "data" / "astronaut.png"))
    assert image is not None
    return image


def macs(model: Path) -> int:
    """Multiply-accumulates of one inference at batch 1 (Conv, Gemm, MatMul: all but a sliver of the work)."""
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(model))).graph
    shapes = {v.name: [d.dim_value or 1 for d in v.type.tensor_type.shape.dim]
              for v in [*graph.input, *graph.value_info, *graph.output]}
    shapes |= {init.name: list(init.dims) for init in graph.initializer}
    total = 0
    for node in graph.node:
        if node.op_type == "Conv":  # each output element: Cin/groups x kh x kw products
            total += math.prod(shapes[node.output[0]]) * math.prod(shapes[node.input[1]][1:])
        elif node.op_type in ("Gemm", "MatMul"):  # each output element: K products
            total += math.prod(shapes[node.output[0]]) * shapes[node.input[0]][-1]
    return total


def gemm_gflops(threads: int, rounds: int, n: int = 1024) -> float:
    """This machine's fp32 matrix-multiply rate through ONNX Runtime's MatMul (the kernels its convolutions use)."""
    x = onnx.helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [n, n])
    y = onnx.helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [n, n])
    b = onnx.numpy_helper.from_array(np.random.default_rng(0).standard_normal((n, n), dtype=np.float32), "b")
    model = onnx.helper.make_model(onnx.helper.make_graph([onnx.helper.make_node("MatMul", ["a", "b"], ["c"])],
                                                          "gemm", [x], [y], [b]))
    session = ort.InferenceSession(model.SerializeToString(), session_options(threads),
                                   providers=["CPUExecutionProvider"])
    a = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    t = best_of(rounds, {"gemm": here(lambda: session.run(None, {"a": a}))}, 10)["gemm"]
    return 2 * n**3 / t / 1e9


def profile_section(model: Path, rounds: int) -> None:
    """Where the embedding's time goes: per kind of operator, and threads with workers that sleep or spin."""
    original = model.read_bytes()
    rewritten = graph.fast_prelu(original) or original
    x = np.zeros((1, 3, 112, 112), dtype=np.float32)

    def session(threads: int, spin: str | None, profile_dir: str | None = None) -> ort.InferenceSession:
        opts = session_options(threads)
        if spin is None:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        else:
            opts.add_session_config_entry("session.intra_op.spin_duration_us", spin)
        if profile_dir is not None:  # ONNX Runtime writes its profile to the current directory otherwise
            opts.enable_profiling = True
            opts.profile_file_prefix = str(Path(profile_dir) / "profile")
        return ort.InferenceSession(rewritten, opts, providers=["CPUExecutionProvider"])

    name = onnx.load_from_string(rewritten).graph.input[0].name
    print("\n9. Where the embedding's time goes (MobileFaceNet architecture, the network alone)")
    with tempfile.TemporaryDirectory() as tmp:
        opts = session_options(0)
        opts.optimized_model_filepath = str(Path(tmp) / "optimised.onnx")
        ort.InferenceSession(rewritten, opts, providers=["CPUExecutionProvider"])
        kinds = {}
        for node in onnx.load(opts.optimized_model_filepath).graph.node:
            attrs = {a.name: a for a in node.attribute}
            kernel = list(attrs["kernel_shape"].ints) if "kernel_shape" in attrs else []
            grouped = "group" in attrs and attrs["group"].i > 1
            kinds[node.name] = f"{node.op_type} {'depthwise' if grouped else 'x'.join(map(str, kernel))}".strip()
        profiled = session(0, str(SPIN_MICROSECONDS), profile_dir=tmp)
        for _ in range(100):
            profiled.run(None, {name: x})
        with open(profiled.end_profiling()) as fh:
            events = json.load(fh)
    spent: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            kind = kinds.get(event["name"].removesuffix("_kernel_time"), event["args"].get("op_name", "?"))
            spent[kind] = spent.get(kind, 0.0) + event["dur"]
    total = sum(spent.values())
    print("   per kind of operator: " + ", ".join(
        f"{kind} {us / total:.1%}" for kind, us in sorted(spent.items(), key=lambda kv: -kv[1]) if us / total >= 0.001))
    cores = available_cores()
    setups = {"1 thread": (1, None), f"{cores} threads, workers sleep": (cores, None),
              f"{cores} threads, workers spin {SPIN_MICROSECONDS} us (ours)": (cores, str(SPIN_MICROSECONDS)),
              f"{cores} threads, workers spin 5 ms": (cores, "5000")}
    sessions = {label: session(*setup) for label, setup in setups.items()}
    t = best_of(rounds, {label: here(functools.partial(s.run, None, {name: x})) for label, s in sessions.items()}, 30)
    print("   " + "; ".join(f"{label}: {ms(seconds).strip()}" for label, seconds in t.items()))


def embedding_section(number: str, model: Path, card: Card, frame: np.ndarray, landmarks: np.ndarray, rounds: int,
                      label: str, iterations: int, target: str = "") -> float:
    """Prints the embedding figures; returns the fair guide's seconds per embedding."""
    cores = available_cores()
    guide = GuideProcess(model, card, frame, (cores, GUIDE_THREADS))
    ours = OnnxEmbedder(model, card)
    aligner = Aligner(card)
    t = best_of(rounds, {"guide": guide.timer(cores), "literal": guide.timer(GUIDE_THREADS),
                         "ours": here(lambda: ours.embed(aligner.align(frame, landmarks)))}, iterations)
    guide.close()
    achieved = 2 * macs(model) / t["ours"] / 1e9
    ceiling = gemm_gflops(cores, rounds)
    print(f"\n{number}. Embedding per face, {label}")
    print(f"   guide recipe (whole-frame resize to {card.width}x{card.height}, per-call numpy), threads = cores "
          f"({cores}): {ms(t['guide'])}   <- the baseline")
    print(f"   guide recipe with its literal {GUIDE_THREADS} threads"
          f"{' (oversubscribes this machine)' if cores < GUIDE_THREADS else ''}: {ms(t['literal'])}")
    print(f"   ours (align + embed, {cores} threads, {card.name} card, bound buffers): {ms(t['ours'])}")
    print(f"   speed-up: {t['guide'] / t['ours']:.2f}x vs the baseline{target}; "
          f"{t['literal'] / t['ours']:.2f}x vs the literal {GUIDE_THREADS} threads")
    print(f"   ours: {macs(model) / 1e9:.3f} GMAC in {ms(t['ours']).strip()} = {achieved:.0f} GFLOP/s, "
          f"{achieved / ceiling:.0%} of this machine's fp32 GEMM rate ({ceiling:.0f} GFLOP/s, "
          f"ONNX Runtime MatMul 1024x1024, {cores} threads)")
    return t["guide"]


class _Handler(BaseHTTPRequestHandler):
    server: StandIn

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        if self.server.metrics_url:
            self.server.frames_at_event.append(_frames(self.server.metrics_url))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        body = json.dumps({"employees": []}).encode()
        self.send_response(200)
        self.send_header("ETag", '"bench"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class StandIn(ThreadingHTTPServer):
    """Attendance server stand-in: accepts events (noting the kiosk's frame count at each), serves an empty gallery."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.metrics_url = ""
        self.frames_at_event: list[float] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kiosk_config(workdir: Path, model: Path, server: StandIn, camera: dict[str, object]) -> tuple[Path, int]:
    """A service configuration in `workdir` (camera keys as given) and its metrics port."""
    port = free_port()
    config = workdir / "config.toml"
    # json.dumps writes strings, numbers and booleans as TOML reads them.
    config.write_text("[camera]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in camera.items()) + f"""
[embedder]
model_path = "{model}"
card = "arcface"
cache_dir = "{workdir / 'cache'}"
[server]
url = "http://127.0.0.1:{server.server_address[1]}"
[outbox]
path = "{workdir / 'outbox.sqlite3'}"
[sync]
cache_path = "{workdir / 'gallery.npz'}"
enrolled_path = "{workdir / 'enrolled.npz'}"
[metrics]
port = {port}
[logging]
level = "WARNING"
""")
    return config, port


def enroll_astronaut(config: Path, photo: Path, gallery_size: int) -> None:
    """Enroll the photo as E001 with the kiosk's own command, then fill the gallery up with random people."""
    done = subprocess.run(kioskcli.command("enroll", "--config", str(config), "--id", "E001", str(photo)),
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(done.stderr)
    path = config.parent / "enrolled.npz"
    stored = load_gallery(path, ARCFACE)
    others = np.random.default_rng(0).standard_normal((gallery_size - 1, stored.gallery.dim)).astype(np.float32)
    ids = [*stored.gallery.ids, *(f"R{i:05d}" for i in range(gallery_size - 1))]
    save_gallery(path, Gallery(ids, np.vstack([stored.gallery.matrix, others]), ARCFACE), stored.model)


def start_service(config: Path, port: int) -> subprocess.Popen[bytes]:
    """`pi-kiosk run`, once its /metrics answers."""
    proc = subprocess.Popen(kioskcli.command("run", "--config", str(config)), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while True:
        try:
            requests.get(f"http://127.0.0.1:{port}/metrics", timeout=1)
            return proc
        except requests.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                sys.exit("the service did not come up")
            time.sleep(0.1)


@dataclass(frozen=True)
class ServiceMemory:
    frames_per_second: float
    rss_mb: float  # VmRSS at the end of the run
    peak_mb: float  # VmHWM: the most the process ever held resident, loading included


def run_service(config: Path, port: int, seconds: float) -> ServiceMemory:
    """Start `pi-kiosk run`, let it process frames for `seconds`, read its memory, stop it."""
    proc = start_service(config, port)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        start_frames, t0 = _frames(url), time.monotonic()
        time.sleep(seconds)
        done, elapsed = _frames(url) - start_frames, time.monotonic() - t0
        status = Path(f"/proc/{proc.pid}/status").read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return ServiceMemory(done / elapsed, _kib(status, "VmRSS") / 1024, _kib(status, "VmHWM") / 1024)


def rss_section(model: Path, frame: np.ndarray, workdir: Path, seconds: float,
                gallery_size: int) -> tuple[ServiceMemory, ServiceMemory]:
    """(first start, restart) of the service with `model`, `gallery_size` people enrolled."""
    server = StandIn()
    image = workdir / "frame.png"
    cv2.imwrite(str(image), frame)
    config, port = kiosk_config(workdir, model, server, {"source": str(image), "loop": True})
    enroll_astronaut(config, image, gallery_size)
    shutil.rmtree(workdir / "cache")  # enrolling cached the optimised model: the first start must not find it
    try:
        return run_service(config, port, seconds), run_service(config, port, seconds)
    finally:
        server.shutdown()


def write_video(path: Path, frames: list[np.ndarray], noise: float = 2.0) -> None:
    """An MJPG video of `frames`, each with its own sensor-like noise: decoded as a camera's would be."""
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, frames[0].shape[1::-1])
    for f in frames:
        writer.write(np.clip(f + rng.normal(0, noise, f.shape), 0, 255).astype(np.uint8))
    writer.release()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def cpu_share(config: Path, port: int, seconds: float) -> tuple[float, float]:
    """The running service's CPU (share of one core) and frames/s over `seconds`, after its start."""
    proc = start_service(config, port)
    try:
        time.sleep(3)  # past the first frames' planning and the gallery sync
        url = f"http://127.0.0.1:{port}/metrics"
        cpu0, frames0, t0 = cpu_seconds(proc.pid), _frames(url), time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - t0
        return (cpu_seconds(proc.pid) - cpu0) / elapsed, (_frames(url) - frames0) / elapsed
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def cpu_section(model: Path, frame: np.ndarray, seconds: float, gallery_size: int) -> None:
    """The service's CPU at max_fps 10: nobody in view (gate on and off), her, a stranger; then a
    visit: frames from her first appearance to the attendance event."""
    empty = cv2.GaussianBlur(frame, (0, 0), 25)  # the same light and colours, no face
    print(f"\n5. The kiosk's CPU: `pi-kiosk run`, camera.max_fps = 10, a looping MJPG video (sensor noise), "
          f"{gallery_size:,} enrolled, {seconds:.0f} s each")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        server = StandIn()
        videos = {"empty": workdir / "empty.avi", "her": workdir / "her.avi"}
        write_video(videos["empty"], [empty] * 50)
        write_video(videos["her"], [frame] * 50)
        image = workdir / "photo.png"
        cv2.imwrite(str(image), frame)
        enroll_astronaut(kiosk_config(workdir, model, server, {})[0], image, gallery_size)
        enrolled = workdir / "enrolled.npz"
        with_her = enrolled.read_bytes()
        stored = load_gallery(enrolled, ARCFACE)
        without_her = Gallery(stored.gallery.ids[1:], stored.gallery.matrix[1:], ARCFACE)  # E001 is the first row
        cost = {}
        for label, scene, threshold, her_enrolled in (
                ("nobody in view, motion gate on (default)", "empty", 3.0, True),
                ("nobody in view, motion gate off", "empty", 0.0, True),
                ("her in view, enrolled (her identity kept while she is followed)", "her", 3.0, True),
                ("a stranger in view (embedded and matched on every frame)", "her", 3.0, False)):
            if her_enrolled:
                enrolled.write_bytes(with_her)
            else:
                save_gallery(enrolled, without_her, stored.model)
            config, port = kiosk_config(workdir, model, server, {"source": str(videos[scene]), "loop": True,
                                                                 "max_fps": 10.0, "motion_threshold": threshold})
            cost[label], fps = cpu_share(config, port, seconds)
            print(f"   {label}: {cost[label] * 60:5.1f} CPU s per minute = {cost[label]:.1%} of one core "
                  f"({fps:.1f} frames/s)")
        print(f"   (target: <= 5% of one core with nobody in view and the gate on: "
              f"{'met' if cost['nobody in view, motion gate on (default)'] <= 0.05 else 'MISSED'})")

        # A visit: 30 frames of the empty scene, then she steps in for 20 frames.
        enrolled.write_bytes(with_her)
        video = workdir / "visit.avi"
        write_video(video, [empty] * 30 + [frame] * 20)
        config, port = kiosk_config(workdir, model, server, {"source": str(video), "max_fps": 10.0})
        server.metrics_url = f"http://127.0.0.1:{port}/metrics"
        proc = start_service(config, port)
        proc.wait(timeout=120)  # a file source: the service ends with the video
        server.shutdown()
    if not server.frames_at_event:
        sys.exit("the visit produced no attendance event")
    after = server.frames_at_event[0] - 30
    print(f"   a visit: the attendance event came with frame {after:.0f} after she appeared (1 = the first frame "
          f"she is in; target <= 2: {'met' if after <= 2 else 'MISSED'})")


def memory_section(models: dict[str, Path], frame: np.ndarray, seconds: float, gallery_size: int) -> None:
    print(f"\n4. Running service (`pi-kiosk run`, RANDOM weights, 640x480 image source, max speed, "
          f"{gallery_size:,} people enrolled)")
    sizes: list[float] = []
    first: list[ServiceMemory] = []
    again: list[ServiceMemory] = []
    for label, model in models.items():
        with tempfile.TemporaryDirectory() as tmp:
            cold, warm = rss_section(model, frame, Path(tmp), seconds, gallery_size)
        size = model.stat().st_size / 2**20
        sizes.append(size)
        first.append(cold)
        again.append(warm)
        print(f"   {label}, model file {size:.1f} MB:")
        for name, m in (("first start", cold), ("restart    ", warm)):
            print(f"     {name}: {m.frames_per_second:5.1f} frames/s; resident memory {m.rss_mb:.0f} MB "
                  f"(peak {m.peak_mb:.0f} MB)")
    if len(sizes) == 2:
        # Two models of very different size: the memory that does not grow with the model, and how
        # much more each MB of model file costs. The peak of a first start bounds every other moment.
        for name, runs in (("peak, first start", [m.peak_mb for m in first]),
                           ("resident, restart", [m.rss_mb for m in again])):
            multiplier = (runs[1] - runs[0]) / (sizes[1] - sizes[0])
            print(f"   memory fit ({name}): {runs[0] - multiplier * sizes[0]:.0f} MB + "
                  f"{multiplier:.2f} x model file MB")
    print("   (target: <= 200 MB with MobileFaceNet)")


def _frames(url: str) -> float:
    for line in requests.get(url, timeout=5).text.splitlines():
        if line.startswith("kiosk_frames_total "):
            return float(line.split()[1])
    raise RuntimeError("kiosk_frames_total missing from /metrics")


def _kib(status: str, field: str) -> int:
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith(field + ":")))


def stream(pipeline: Pipeline, frame: np.ndarray, frames: int) -> None:
    for _ in range(frames):
        pipeline.process(frame)


def timing_sections(mobilefacenet: Path, resnet50: Path | None, frame: np.ndarray, landmarks: np.ndarray,
                    rounds: int) -> None:
    embedding_section("1", mobilefacenet, ARCFACE, frame, landmarks, rounds,
                      "MobileFaceNet architecture (RANDOM weights)", 30, " (target >= 2.5x)")
    if resnet50 is not None:
        embedding_section("1", resnet50, ARCFACE, frame, landmarks, rounds,
                          "ResNet-50 (ArcFace iresnet50) architecture (RANDOM weights)", 8)

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((10_000, 512)).astype(np.float32)
    ids = [f"E{i:05d}" for i in range(10_000)]
    gallery = Gallery(ids, vectors, ARCFACE)
    db = dict(zip(ids, vectors, strict=True))
    probe = gallery.matrix[4321].copy()
    assert dict_match(db, probe)[0] == gallery.match(probe, 0.4).employee_id == "E04321"
    t = best_of(rounds, {"dict": here(lambda: dict_match(db, probe)), "ours": here(lambda: gallery.match(probe, 0.4))},
                30)
    print("\n2. Matching one face against 10,000 enrolled (512-d)")
    print(f"   Python loop over a dict:       {ms(t['dict'])}")
    print(f"   Gallery.match (one float32 matrix-vector product): {ms(t['ours'])}")
    print(f"   speed-up: {t['dict'] / t['ours']:.0f}x   (target >= 100x)")

    frame_section("3", mobilefacenet, ARCFACE, frame, landmarks, rounds, "MobileFaceNet architecture")


def frame_section(number: str, model: Path, card: Card, frame: np.ndarray, landmarks: np.ndarray, rounds: int,
                  label: str, guide_seconds: float | None = None) -> None:
    """The whole frame, the service's pipeline, against the guide's embed-only frame (threads = cores); with
    guide_seconds (the fair guide's embedding of the same model, measured before), its target too."""
    detector = MtcnnDetector(min_face_size=80)
    cores = available_cores()
    guide = GuideProcess(model, card, frame, (cores,))
    embedder = OnnxEmbedder(model, card)
    her = embedder.embed(Aligner(card).align(frame, landmarks)).copy()
    ids = [f"E{i:05d}" for i in range(10_000)]
    vectors = np.random.default_rng(0).standard_normal((10_000, embedder.dim)).astype(np.float32)
    enrolled = vectors.copy()
    enrolled[4321] = her  # she is E04321; in `vectors` she is nobody
    threshold = card.threshold
    cycle = DetectorConfig().track_frames
    # The service's pipeline on a camera stream: the face followed, the full cascade every `cycle`
    # frames; an enrolled face keeps her identity while followed, a stranger is embedded every frame.
    pipelines = {"enrolled": Pipeline(Tracker(detector, cycle), embedder, Gallery(ids, enrolled, card), threshold),
                 "stranger": Pipeline(Tracker(detector, cycle), embedder, Gallery(ids, vectors, card), threshold),
                 "photo": Pipeline(detector, embedder, Gallery(ids, enrolled, card), threshold)}
    assert [r.match.employee_id for r in pipelines["enrolled"].process(frame)] == ["E04321"]
    assert [r.match.employee_id for r in pipelines["stranger"].process(frame)] == [None]
    contenders = {"guide": guide.timer(cores)}
    for name, pipeline in pipelines.items():
        contenders[name] = here(functools.partial(stream, pipeline, frame, cycle))
    t = best_of(rounds, contenders, 30)
    guide.close()
    print(f"\n{number}. Whole 640x480 frame, one face, {label}, 10,000 enrolled ({embedder.dim}-d, {card.metric})")
    print(f"   guide, embed only (no detection at all), threads = cores ({cores}): {ms(t['guide'])}")
    labels = {"enrolled": f"a camera stream, an enrolled person (the service: the face followed and her identity "
                          f"kept, the full cascade and a new match every {cycle}th frame)",
              "stranger": "the same stream, a stranger (not enrolled: embedded on every frame)",
              "photo": "the full cascade and the embedding on every frame (a photo)"}
    for name, pipeline in pipelines.items():
        per_frame = t[name] / cycle
        stages: dict[str, list[float]] = {}
        pipeline.observe = recorder(stages)
        frames = 6 * cycle
        for _ in range(frames):
            pipeline.process(frame)
        pipeline.observe = no_timing
        print(f"   ours, {labels[name]}: {ms(per_frame)} per frame   "
              f"({'faster' if per_frame <= t['guide'] else 'SLOWER'} than the guide's embed-only frame)")
        print("     per stage, per frame: " + ", ".join(
            f"{stage} {sum(v) / frames * 1000:.2f} ms" for stage, v in stages.items())
            + f" ({len(stages.get('embed', []))} embeddings in {frames} frames)")
    if guide_seconds is not None:
        enrolled_frame = t["enrolled"] / cycle
        print(f"   (target: the enrolled person's frame <= the fair guide's embedding alone, "
              f"{ms(guide_seconds).strip()}: {'met' if enrolled_frame <= guide_seconds else 'MISSED'})")


def trained_section(frame: np.ndarray, landmarks: np.ndarray, rounds: int) -> None:
    """The default model (dlib's ResNet with its trained weights, converted), as sections 1 and 3 measure the
    architectures (6, 7), then its INT8 form (8)."""
    from dlib_alignment import converted

    model = converted()
    card = builtin("dlib-resnet-v1")
    guide = embedding_section("6", model, card, frame, landmarks, rounds,
                              "the default model: dlib's ResNet, TRAINED weights (converted)", 10, " (target >= 2.5x)")
    frame_section("7", model, card, frame, landmarks, rounds, "the default model", guide_seconds=guide)
    int8_section(model, card)


def int8_section(model: Path, card: Card) -> None:
    """`pi-kiosk quantize` on the default model, calibrated with the faces of the parity test's photos (the
    astronaut and scikit-image's LFW subset, with augmentations): agreement with FP32 per chip, and speed."""
    from dlib_alignment import photos

    from pi_kiosk.quantize import quantize

    print("\n8. INT8 (`pi-kiosk quantize`, static, per channel, QDQ) of the default model, calibrated and compared "
          "on the faces of the test photos and their augmentations (and their mirror images)")
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, photo in enumerate(p for p in photos(20) if "mirrored" not in p.label):
            paths.append(Path(tmp) / f"photo-{i}.png")
            cv2.imwrite(str(paths[-1]), cv2.cvtColor(photo.rgb, cv2.COLOR_RGB2BGR))
        report = quantize(model, Path(tmp) / "int8.onnx", card, paths, threads=available_cores())
    print("   " + str(report).replace("\n", "\n   "))
    agrees = report.cosine_min >= 0.99
    faster = report.int8_ms < report.fp32_ms
    verdict = "both: INT8 wins here" if agrees and faster else "not both: FP32 stays"
    print(f"   (target: cosine >= 0.99 on every chip: {'met' if agrees else 'MISSED'}; faster than FP32 on this "
          f"machine: {'yes' if faster else 'NO'}; {verdict})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="rounds per figure; the best round is printed")
    parser.add_argument("--cache-dir", type=Path, default=synthetic.default_cache_dir(),
                        help="where the random-weight models are built once")
    parser.add_argument("--resnet50", action="store_true",
                        help="also the ResNet-50 figures (170 MB model) and the memory-fit formula")
    parser.add_argument("--memory-only", action="store_true", help="only the running service's memory (4.)")
    parser.add_argument("--profile", action="store_true",
                        help="also where the embedding's time goes: operators, threads, spinning (9.)")
    parser.add_argument("--no-trained", action="store_true",
                        help="without the default model's figures (6-8; its weights come from the controller cache)")
    parser.add_argument("--trained-only", action="store_true", help="only the default model's figures (6-8)")
    parser.add_argument("--rss-seconds", type=float, default=10.0)
    parser.add_argument("--cpu-seconds", type=float, default=30.0, help="each CPU measurement of the kiosk (5.)")
    parser.add_argument("--gallery", type=int, default=10_000, help="people enrolled in the running service")
    args = parser.parse_args()

    print(f"machine: {os.cpu_count()} CPUs ({available_cores()} usable), load average "
          f"{os.getloadavg()[0]:.2f}; onnxruntime {ort.__version__}, opencv {cv2.__version__}, numpy {np.__version__}")
    models = {"MobileFaceNet": synthetic.cached("mobilefacenet", args.cache_dir)}
    if args.resnet50:
        models["ResNet-50"] = synthetic.cached("resnet50", args.cache_dir)
    frame = kiosk_frame(astronaut_image())
    faces = MtcnnDetector(min_face_size=80).detect(frame)
    if len(faces) != 1:
        sys.exit(f"expected one face in the benchmark frame, found {len(faces)}")
    landmarks = faces[0].landmarks
    if args.trained_only:
        trained_section(frame, landmarks, args.rounds)
        return
    if not args.memory_only:
        timing_sections(models["MobileFaceNet"], models.get("ResNet-50"), frame, landmarks, args.rounds)
    memory_section(models, frame, args.rss_seconds, args.gallery)
    if not args.memory_only:
        cpu_section(models["MobileFaceNet"], frame, args.cpu_seconds, args.gallery)
        if not args.no_trained:
            trained_section(frame, landmarks, args.rounds)
    if args.profile and not args.memory_only:
        profile_section(models["MobileFaceNet"], args.rounds)


if __name__ == "__main__":
    main()

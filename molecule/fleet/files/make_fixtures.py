#!/usr/bin/env python3
"""Fixtures of the fleet scenario, made on the controller with the development venv.

    make_fixtures.py DIR KIOSK_SOURCE URL

DIR gets: one model per board group (pi-kiosk synthetic-model's tiny network with RANDOM weights, the
model contract at under 1 MMAC: an emulated Pi takes about 24 CPU seconds per MobileFaceNet inference,
and the scenarios prove the deploy, not recognition; a seed per board: the Pi 4's served by URL, where
the scenario serves DIR, the others by path), nhwc.onnx (a
model with the wrong input layout), camera.avi (the test bed's camera on an empty scene, testbed/camera.py),
csi/ (the same scene as the Pi 5's camera module: testbed/rpicam/make_i420.py's files for its rpicam-vid stand-in),
kiosk-v2/ and kiosk-v3/ (the kiosk source with a changed README: code-only releases), kiosk-broken/
(a release whose smoke test fails: its detector module cannot be imported) and vars.yml with their
paths and sha256.
"""
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import yaml
from onnx import TensorProto, helper

BOARDS = ("pi4", "pi5", "pizero2")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def nhwc_model(path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input"], ["embedding"], axes=[1, 2], keepdims=0)], "nhwc",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 112, 112, 3])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def kiosk_copy(source: Path, dest: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("tests", "benchmarks", "build", "*.egg-info",
                                                                "__pycache__"))


def main() -> None:
    out, source, url = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    out.mkdir(parents=True, exist_ok=True)
    models = {}
    for seed, board in enumerate(BOARDS):
        model = out / f"tiny-{board}.onnx"
        if not model.exists():
            subprocess.run([str(Path(sys.executable).parent / "pi-kiosk"), "synthetic-model", "--arch",
                            "tiny", "--seed", str(seed), str(model)], check=True)
        models[board] = {"src": f"{url}/{model.name}" if board == "pi4" else str(model), "sha256": sha256(model)}
    nhwc_model(out / "nhwc.onnx")
    subprocess.run([sys.executable, str(source.parents[1] / "testbed/camera.py"), "--empty", str(out / "camera.avi")],
                   check=True)
    subprocess.run([sys.executable, str(source.parents[1] / "testbed/rpicam/make_i420.py"), str(out / "camera.avi"),
                    str(out / "csi"), "--width", "640", "--height", "480"], check=True)
    # The kiosk's own dependency (tool.uv.sources: ../mtcnn) beside the copies, unchanged.
    shutil.rmtree(out / "mtcnn", ignore_errors=True)
    shutil.copytree(source.parent / "mtcnn", out / "mtcnn", ignore=shutil.ignore_patterns("build", "*.egg-info"))
    for version in ("v2", "v3"):
        kiosk_copy(source, out / f"kiosk-{version}")
        with (out / f"kiosk-{version}/README.md").open("a") as fh:
            fh.write(f"\nA code-only change ({version}, pi-fleet fleet scenario).\n")
    kiosk_copy(source, out / "kiosk-broken")
    with (out / "kiosk-broken/src/pi_kiosk/detect.py").open("a") as fh:
        fh.write('\nraise ImportError("this release is broken on purpose (pi-fleet fleet scenario)")\n')
    (out / "vars.yml").write_text(yaml.safe_dump({
        "fixture_models": models,
        "fixture_nhwc_src": str(out / "nhwc.onnx"), "fixture_nhwc_sha256": sha256(out / "nhwc.onnx"),
        "fixture_kiosk_v2": str(out / "kiosk-v2"), "fixture_kiosk_v3": str(out / "kiosk-v3"),
        "fixture_kiosk_broken": str(out / "kiosk-broken"),
    }))


if __name__ == "__main__":
    main()

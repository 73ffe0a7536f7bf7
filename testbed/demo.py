#!/usr/bin/env python3
"""The demo's steps that are not Ansible's (scripts/demo runs them in order; each is idempotent).

    demo.py assets DIR KIOSK...          the model, camera video, enrollment photo, tokens, server.toml
    demo.py threshold DIR                measure the model on the camera video, choose the threshold
    demo.py enroll DIR URL               enroll the photo's person on the server (once)
    demo.py wait DIR URL KIOSK...        until every kiosk has recognised her once and seen the stranger

The model has RANDOM weights (no trained face model can be downloaded here): it proves the plumbing
and the speed, not recognition accuracy. Its threshold is measured on this one video, not calibrated.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import camera
import cv2
import requests

PERSON = "astronaut"  # the enrolled employee's id
METRICS_PORT = 9108  # pi_kiosk_metrics_port's default


def _secret(path: Path) -> str:
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, secrets.token_hex(24).encode())
        os.close(fd)
    return path.read_text().strip()


def assets(out: Path, kiosks: list[str]) -> None:
    from pi_kiosk.synthetic import build
    from skimage import data

    (out / "camera").mkdir(parents=True, exist_ok=True)
    model = out / "mobilefacenet.onnx"
    if not (out / "mobilefacenet.onnx.sha256").exists():
        build("mobilefacenet", model)
        (out / "mobilefacenet.onnx.sha256").write_text(hashlib.sha256(model.read_bytes()).hexdigest() + "\n")
    if not (out / "camera" / "camera.avi").exists():
        camera.write(out / "camera" / "camera.avi")
    photo = out / f"{PERSON}.png"
    if not photo.exists():
        cv2.imwrite(str(photo), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    tokens = {k: _secret(out / "tokens" / k) for k in kiosks}
    settings = (f'database = "{out.resolve()}/attendance.sqlite3"\n'
                f'admin_token = "{_secret(out / "tokens" / "admin")}"\n'
                "[kiosks]\n" + "".join(f'"{k}" = "{t}"\n' for k, t in tokens.items()) +
                f'[models]\nmobilefacenet = {{ path = "{model.resolve()}", card = "arcface" }}\n')
    config = out / "server.toml"
    if not config.exists() or config.read_text() != settings:
        config.touch(mode=0o600)
        config.write_text(settings)


def threshold(out: Path) -> None:
    """Scores of the enrolled photo against her frames and the stranger's, and a threshold between."""
    path = out / "threshold.json"
    if not path.exists():
        from pi_kiosk.capture import frames
        from pi_kiosk.cards import builtin
        from pi_kiosk.detect import MtcnnDetector
        from pi_kiosk.embed import OnnxEmbedder
        from pi_kiosk.enroll import embed_photos
        from pi_kiosk.match import Gallery
        from pi_kiosk.pipeline import Pipeline

        card = builtin("arcface")  # the card server.toml and the kiosks name for this model
        detector, embedder = MtcnnDetector(), OnnxEmbedder(out / "mobilefacenet.onnx", card)
        enrolled = Gallery([PERSON], embed_photos([out / f"{PERSON}.png"], detector, embedder), card)
        # The kiosk's own pipeline scores each face; threshold -1 so that every score is reported.
        pipeline = Pipeline(detector, embedder, enrolled, threshold=-1.0)
        her, stranger = [], []
        stranger_from = camera.FACE_FRAMES + camera.EMPTY_FRAMES
        for n, frame in enumerate(frames(str(out / "camera" / "camera.avi"))):
            for r in pipeline.process(frame):
                (her if n < camera.FACE_FRAMES else stranger if n >= stranger_from else []).append(r.match.score)
        if not her or not stranger:
            raise SystemExit(f"demo: faces found in {len(her)} frames of her and {len(stranger)} of the stranger; "
                             "the detector needs both in the camera video")
        if min(her) <= max(stranger):
            raise SystemExit(f"demo: this random-weights model scores the stranger ({max(stranger):.3f}) as high as "
                             f"her ({min(her):.3f}): no threshold separates them; build another seed")
        path.write_text(json.dumps({"her": [min(her), max(her), len(her)],
                                    "stranger": [min(stranger), max(stranger), len(stranger)],
                                    "threshold": round((min(her) + max(stranger)) / 2, 3)}) + "\n")
    m = json.loads(path.read_text())
    her_text, stranger_text = (f"cosine {lo:.3f}-{hi:.3f} ({n} faces)" for lo, hi, n in (m["her"], m["stranger"]))
    print("model with RANDOM weights: it proves the plumbing and the speed, not recognition accuracy\n"
          f"  enrolled photo vs her video frames:      {her_text}\n"
          f"  enrolled photo vs the stranger's frames: {stranger_text}\n"
          f"  demo threshold {m['threshold']:.3f}, between the two: measured on this video, NOT a calibrated one")


def _admin(out: Path) -> dict[str, str]:
    return {"Authorization": f"Bearer {(out / 'tokens' / 'admin').read_text().strip()}"}


def enroll(out: Path, url: str) -> None:
    sha = (out / "mobilefacenet.onnx.sha256").read_text().strip()
    people = requests.get(f"{url}/api/employees", headers=_admin(out), timeout=10).json()["employees"]
    if people.get(PERSON, {}).get("embeddings", {}).get(sha):
        print(f"{PERSON} is enrolled for model {sha[:12]} already")
        return
    with open(out / f"{PERSON}.png", "rb") as photo:
        r = requests.post(f"{url}/api/employees/{PERSON}/photos", params={"name": "Eileen Collins (astronaut.png)"},
                          files={"photos": (f"{PERSON}.png", photo, "image/png")}, headers=_admin(out), timeout=120)
    r.raise_for_status()
    print(f"enrolled {PERSON} from {PERSON}.png: {r.json()['embeddings']} (the photo is not kept)")


def _counters(kiosk: str) -> dict[str, float]:
    """The kiosk's Prometheus counters, read on the Pi itself (the metrics port listens on its loopback)."""
    fetch = f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{METRICS_PORT}/metrics').read().decode())"
    text = subprocess.run(["podman", "exec", kiosk, "python3", "-c", fetch],
                          capture_output=True, text=True, timeout=60).stdout
    return {m[1]: float(m[2]) for m in re.finditer(r"^kiosk_(\w+)_total (\S+)$", text, re.M)}


def seen_all(counts: dict[str, dict[str, float]]) -> bool:
    """Every kiosk has recognised her and, later in the video, found the stranger unknown."""
    return all(c.get("matches", 0) >= 1 and c.get("unknowns", 0) >= 1 for c in counts.values())


def check_events(events: list[dict[str, str]], kiosks: list[str]) -> None:
    """Exactly one event per kiosk, all hers: the cooldown held and the stranger made none."""
    wrong = [e for e in events if e["employee"] != PERSON or e["kiosk"] not in kiosks]
    per_kiosk = {k: sum(e["kiosk"] == k for e in events) for k in kiosks}
    if wrong or set(per_kiosk.values()) != {1}:
        raise SystemExit(f"demo: expected exactly one event for {PERSON} per kiosk, got {per_kiosk}"
                         + (f" and events of others: {wrong}" if wrong else ""))
    print(f"the server lists {len(events)} attendance events, one per kiosk, all {PERSON}; "
          "the stranger's faces were unknown and made none")


def wait(out: Path, url: str, kiosks: list[str], timeout: float) -> None:
    """Until each kiosk has seen her and the stranger; then exactly one event per kiosk, all hers."""
    start, shown = time.monotonic(), ""
    while True:
        events = requests.get(f"{url}/api/attendance", headers=_admin(out), timeout=10).json()["events"]
        counts = {k: _counters(k) for k in kiosks}
        lines = [f"  {k}: {c.get('frames', 0):.0f} frames, {c.get('faces', 0):.0f} faces, "
                 f"{c.get('matches', 0):.0f} recognised as {PERSON}, {c.get('unknowns', 0):.0f} unknown; "
                 f"{sum(e['kiosk'] == k for e in events)} attendance event(s) on the server" for k, c in counts.items()]
        # Printed when a kiosk's story moves on (her, the stranger, an event), not at every frame.
        state = repr([(c.get("matches", 0) > 0, c.get("unknowns", 0) > 0) for c in counts.values()] + events)
        if state != shown:
            shown = state
            print(f"[{time.monotonic() - start:4.0f} s]", *lines, sep="\n", flush=True)
        if seen_all(counts) and {e["kiosk"] for e in events} >= set(kiosks):
            break
        if time.monotonic() - start > timeout:
            raise SystemExit(f"demo: not every kiosk recognised {PERSON} and saw the stranger in {timeout:.0f} s")
        time.sleep(10)
    check_events(events, kiosks)
    for e in events:
        print(f"  {e['at']}  {e['kiosk']:<18} {e['employee']}  ({e['status']})")


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[0] not in {"assets", "threshold", "enroll", "wait"}:
        raise SystemExit(__doc__)
    out = Path(argv[1])
    if argv[0] == "assets":
        assets(out, argv[2:])
    elif argv[0] == "threshold":
        threshold(out)
    elif argv[0] == "enroll":
        enroll(out, argv[2])
    else:
        wait(out, argv[2], argv[3:], timeout=float(os.environ.get("DEMO_TIMEOUT", "1200")))


if __name__ == "__main__":
    main(sys.argv[1:])

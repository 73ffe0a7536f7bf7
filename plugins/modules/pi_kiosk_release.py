#!/usr/bin/python
"""Ansible module: take shipped wheels into the Pi's wheel cache and build a release's virtualenv."""
from __future__ import annotations

DOCUMENTATION = r"""
module: pi_kiosk_release
short_description: Build a kiosk release (a virtualenv) from the Pi's own wheel cache, offline
author: pi-fleet maintainers
description:
  - Takes the wheels of O(incoming) (a tar the controller sent with only the wheels this Pi lacked) into
    the content-addressed cache C(ROOT/wheels/<sha256>/), each checked against its expected sha256; a wheel that
    differs (damaged, or tampered with in the controller's cache) is refused.
  - With O(allowed_signers), first verifies the release's signed manifest and refuses, changing nothing, a
    release that is unsigned, signed by another key or different from what was signed.
  - Builds C(ROOT/releases/<release>) at its final path with C(python -m venv --without-pip) and
    C(pip install --no-index --require-hashes) from links to the cache, so no package index is configured
    or reachable for pip. A release is complete once its marker file is written, last; an incomplete
    one is removed and built again.
  - The pip that installs releases is kept in C(ROOT/pip), a virtualenv of its own made once from the Pi's
    C(ensurepip) (no network) and made again when missing or incomplete or when O(python) is another interpreter;
    it installs into each release with C(pip --python), so a build does not pay C(ensurepip) and a release holds
    no installer. A failed build removes it (it may be what is damaged); the next build makes it again.
  - A complete release is checked against what pip installed (every package of O(wheels) present, every file its
    wheel's C(RECORD) lists there with its size, or with O(verify=hashes) its sha256 too); a damaged one (a corrupt
    SD card, a deleted package) is removed and built again from the Pi's wheel cache. A cached wheel found damaged
    when that build fails is removed from the cache, so the next run sends it again.
  - A failure leaves the live release untouched (the module never switches releases; see M(pi_kiosk_switch)).
extends_documentation_fragment:
  - action_common_attributes
attributes:
  check_mode:
    support: full
    details: The signature is verified in check mode too; nothing is taken in or built.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  root:
    description: The deployment area.
    type: path
    required: true
  release:
    description: Release id (the kiosk version and a hash of everything the release installs).
    type: str
    required: true
  python:
    description: The interpreter the virtualenv is made from.
    type: path
    default: /usr/bin/python3
  wheels:
    description:
      - Every wheel of the release, as dicts with C(file) (its file name) and C(sha256); other keys are ignored.
      - A wheel neither in the cache nor in O(incoming) fails the task.
    type: list
    elements: dict
    required: true
  requirements:
    description: The release's requirements, every line pinned and hashed (C(pip install --require-hashes)).
    type: str
    required: true
  incoming:
    description: A tar of wheels to take into the cache first; removed afterwards, also when it is refused.
    type: path
  allowed_signers:
    description:
      - An C(ssh-keygen) allowed_signers file on the Pi.
      - Given, the release must come with a O(manifest) and O(signature) it verifies (namespace and principal
        C(pi-kiosk-release)) that names this release, its wheels, its requirements and O(models), or nothing is
        installed.
    type: path
  manifest:
    description: The release's signed manifest (JSON), kept beside the release once verified.
    type: str
    default: ""
  signature:
    description: The manifest's SSH signature (C(ssh-keygen -Y sign)).
    type: str
    default: ""
  models:
    description: The models the release runs with, file name to sha256, as the signed manifest must name them.
    type: dict
    default: {}
  verify:
    description:
      - How a complete release is checked. V(sizes) (every file there with its size) finds deleted and truncated
        files at the cost of a C(stat) per file; V(hashes) also reads every file (a flipped bit), seconds more on a Pi.
    type: str
    choices: [sizes, hashes]
    default: sizes
seealso:
  - module: pi_kiosk_wheelhouse
  - module: pi_kiosk_switch
"""

EXAMPLES = r"""
- name: Build the release from the Pi's wheel cache and the wheels just sent
  pi_kiosk_release:
    root: /opt/pi-kiosk
    release: 0.2.0-c12577f42026
    wheels:
      - file: numpy-2.4.6-cp311-cp311-manylinux_2_28_aarch64.whl
        sha256: 3b1a8c1b9f1b6a3f9c4d2e0f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b
    requirements: |
      numpy==2.4.6 \
          --hash=sha256:3b1a8c1b9f1b6a3f9c4d2e0f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b
    incoming: /opt/pi-kiosk/incoming.tar
  register: built

- name: Build a signed release (the plan of pi_kiosk_wheelhouse), refused unless its signature verifies
  pi_kiosk_release:
    root: /opt/pi-kiosk
    release: "{{ plan.release }}"
    wheels: "{{ plan.wheels }}"
    requirements: "{{ plan.requirements }}"
    allowed_signers: /etc/pi-kiosk/allowed_signers
    manifest: "{{ plan.manifest }}"
    signature: "{{ plan.signature }}"
    models: "{{ {model_sha256 ~ '.onnx': model_sha256} }}"
  vars:
    plan: "{{ wheelhouse.hosts[inventory_hostname] }}"

- name: Say how long the build took
  ansible.builtin.debug:
    msg: "{{ 'built in ' ~ built.build_seconds ~ ' s' if built.build_seconds is defined else 'already built' }}"
"""

RETURN = r"""
release:
  description: The release id (O(release)).
  type: str
  returned: always
  sample: 0.2.0-c12577f42026
path:
  description: The release's directory on the Pi.
  type: str
  returned: always
  sample: /opt/pi-kiosk/releases/0.2.0-c12577f42026
received_wheels:
  description: Wheels taken from O(incoming) into the cache.
  type: int
  returned: always
  sample: 1
received_bytes:
  description: Their size in bytes.
  type: int
  returned: always
  sample: 84211
built:
  description: Whether the release was built by this task (in check mode, whether it would be).
  type: bool
  returned: always
  sample: true
damaged:
  description: What was wrong with the release found complete (up to 20 files), when it was built again because of it.
  type: list
  elements: str
  returned: always
  sample: ["numpy/__init__.py: missing"]
build_seconds:
  description: Seconds the build took.
  type: float
  returned: when the release was built, outside check mode
  sample: 95.2
"""

import base64
import csv
import hashlib
import json
import os
import re
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.pi_fleet.kiosk.plugins.module_utils.pi_kiosk_store import (
    MARKER,
    Store,
    now,
    remove_tree,
    sha256_file,
    write_atomic,
)

TAIL = 1500
SIGNATURE_NAMESPACE = "pi-kiosk-release"
DAMAGE_SHOWN = 20


class Refused(Exception):
    pass


def verify(allowed_signers: Path, manifest: str, signature: str, release: str, wheels: list[dict[str, str]],
           requirements: str, models: dict[str, str]) -> None:
    """Refuse a release the manifest does not vouch for, or whose manifest none of the allowed keys signed."""
    if not manifest or not signature:
        raise Refused(f"the release is not signed, and this Pi accepts only signed releases ({allowed_signers}): "
                      "set pi_kiosk_signing_key on the controller")
    with tempfile.TemporaryDirectory() as tmp:
        sig = Path(tmp) / "manifest.json.sig"
        sig.write_text(signature)
        proc = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(allowed_signers), "-I", SIGNATURE_NAMESPACE,
                               "-n", SIGNATURE_NAMESPACE, "-s", str(sig)],
                              input=manifest, capture_output=True, text=True)
    if proc.returncode != 0:
        raise Refused(f"the release manifest's signature does not verify against {allowed_signers}: "
                      f"{(proc.stderr or proc.stdout).strip()[-300:]}")
    signed = json.loads(manifest)
    want = {"release": release, "wheels": {w["file"]: w["sha256"] for w in wheels},
            "requirements_sha256": hashlib.sha256(requirements.encode()).hexdigest(), "models": models}
    differ = [key for key, value in want.items() if signed.get(key) != value]
    if differ:
        files = sorted(f for f, sha in want["wheels"].items() if signed.get("wheels", {}).get(f) != sha)
        raise Refused(f"the release differs from its signed manifest in {', '.join(differ)}"
                      + (f" ({', '.join(files)})" if files else ""))


def keep_manifest(release_dir: Path, manifest: str, signature: str) -> bool:
    """Keep the verified manifest and its signature beside the release, for whoever audits the Pi (also for a
    release built before it was signed); whether they were written."""
    kept = release_dir / "manifest.json"
    if kept.is_file() and kept.read_text() == manifest and (release_dir / "manifest.json.sig").is_file():
        # The same manifest: its signature is kept as it is (ECDSA signs differently every time).
        return False
    write_atomic(release_dir / "manifest.json.sig", signature.encode())
    write_atomic(kept, manifest.encode())
    return True


def ingest(store: Store, incoming: Path, expected: dict[str, str], signed: bool) -> tuple[int, int]:
    """Move the tar's wheels into the cache after checking each one's sha256; (wheels, bytes)."""
    staging = store.wheels / ".incoming"
    remove_tree(staging)
    staging.mkdir(parents=True)
    count = size = 0
    try:
        with tarfile.open(incoming) as tar:
            for member in tar:
                name = os.path.basename(member.name)
                if not member.isfile() or name not in expected:
                    raise ValueError(f"{incoming}: unexpected member {member.name!r}")
                src = tar.extractfile(member)
                assert src is not None
                digest = hashlib.sha256()
                with (staging / name).open("wb") as out:
                    for block in iter(lambda: src.read(1 << 20), b""):  # noqa: B023 (src is this member's)
                        digest.update(block)
                        out.write(block)
                if digest.hexdigest() != expected[name]:
                    raise Refused(f"{name}: sha256 {digest.hexdigest()} differs from the "
                                  f"{'signed manifest' if signed else 'release'}'s {expected[name]}: a damaged or "
                                  "tampered wheel (remove it from the controller's cache to build it again)")
                dest = store.wheel_path(expected[name], name)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / name, dest)
                count += 1
                size += member.size
    finally:
        remove_tree(staging)
        incoming.unlink()
    return count, size


def _dist(name: str) -> str:
    """A distribution's name as a wheel file and its .dist-info directory both spell it (PEP 427, PEP 503)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def damage(release_dir: Path, wheels: list[dict[str, str]], hashes: bool) -> list[str]:
    """What differs in a built release from what pip installed: packages without their .dist-info, files of their
    RECORD missing or of another size (or sha256, with `hashes`). Empty for an intact release."""
    if not (release_dir / "bin/python").exists():
        return ["bin/python: missing"]
    found = {}
    for record in release_dir.glob("lib/python3*/site-packages/*.dist-info/RECORD"):
        name, _, version = record.parent.name.removesuffix(".dist-info").partition("-")
        found[(_dist(name), version)] = record
    problems: list[str] = []
    for wheel in wheels:
        name, version = wheel["file"].split("-")[:2]
        record = found.get((_dist(name), version))
        if record is None:
            problems.append(f"{name} {version}: not installed")
            continue
        site = record.parent.parent
        for row in csv.reader(record.read_text().splitlines()):
            if len(row) != 3 or not row[1]:
                continue  # RECORD itself and files pip wrote after it (no hash to check)
            path, (algorithm, _, digest), size = site / row[0], row[1].partition("="), row[2]
            try:
                st = path.stat()
            except OSError:
                problems.append(f"{row[0]}: missing")
                continue
            if size and st.st_size != int(size):
                problems.append(f"{row[0]}: {st.st_size} bytes, {size} installed")
            elif hashes and algorithm == "sha256" and _record_digest(path) != digest:
                problems.append(f"{row[0]}: content differs from what was installed")
    return problems


def _record_digest(path: Path) -> str:
    """A file's sha256 as RECORD writes it (urlsafe base64, no padding)."""
    return base64.urlsafe_b64encode(bytes.fromhex(sha256_file(path))).rstrip(b"=").decode()


def drop_damaged_wheels(store: Store, wheels: list[dict[str, str]]) -> list[str]:
    """Remove the cached wheels whose content is not their sha256 (the next run sends them again); their names."""
    damaged = [w["file"] for w in wheels if store.wheel_path(w["sha256"], w["file"]).is_file()
               and sha256_file(store.wheel_path(w["sha256"], w["file"])) != w["sha256"]]
    for wheel in wheels:
        if wheel["file"] in damaged:
            remove_tree(store.wheel_path(wheel["sha256"], wheel["file"]).parent)
    return damaged


def pip_tool(store: Store, python: str) -> list[str]:
    """The command of the pip that installs every release: kept once per Pi in a virtualenv of its own, since
    ensurepip puts pip in a new virtualenv in 35 s on an emulated Pi (a release's whole build takes 95). Made again
    when missing, incomplete or made from another interpreter (an OS upgrade to another Python)."""
    tool = store.pip
    base = os.path.realpath(python)
    marker = tool / MARKER
    if not (marker.is_file() and marker.read_text() == base + "\n" and (tool / "bin/python").exists()):
        remove_tree(tool)
        run([python, "-m", "venv", str(tool)], "create the virtualenv of the releases' pip")
        write_atomic(marker, (base + "\n").encode())
    return [str(tool / "bin/python"), "-m", "pip"]


def build(store: Store, release: str, python: str, wheels: list[dict[str, str]], requirements: str) -> float:
    """Build the release's virtualenv at its final path; the seconds it took."""
    start = time.monotonic()
    target = store.release_dir(release)
    remove_tree(target)
    links = target / "wheels"
    pip_command = pip_tool(store, python)
    # No pip in the release: the kept pip installs into it (pip --python), so no kiosk runs with an installer.
    run([python, "-m", "venv", "--without-pip", str(target)], "create the virtualenv")
    links.mkdir()
    for wheel in wheels:
        os.symlink(store.wheel_path(wheel["sha256"], wheel["file"]), links / wheel["file"])
    (target / "requirements.txt").write_text(requirements)
    # No index anywhere: pip's own configuration files are ignored, and it may only read the links.
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    pip = [*pip_command, "--python", str(target / "bin/python")]
    run([*pip, "install", "--no-index", "--no-cache-dir", "--require-hashes", "--find-links", str(links),
         "-r", str(target / "requirements.txt")], "install the wheels", env)
    run([*pip, "check"], "check the installed dependencies", env)
    info = {"release": release, "wheels": sorted({w["sha256"] for w in wheels}), "built_at": now(),
            "python": python}
    write_atomic(target / MARKER, (json.dumps(info, indent=2) + "\n").encode())
    return time.monotonic() - start


def run(argv: list[str], what: str, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        output = (proc.stderr.strip() or proc.stdout.strip())[-TAIL:]
        raise RuntimeError(f"could not {what} ({' '.join(argv[:4])}...): {output}")


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "root": {"type": "path", "required": True},
            "release": {"type": "str", "required": True},
            "python": {"type": "path", "default": "/usr/bin/python3"},
            "wheels": {"type": "list", "elements": "dict", "required": True},
            "requirements": {"type": "str", "required": True},
            "incoming": {"type": "path"},
            "allowed_signers": {"type": "path"},
            "manifest": {"type": "str", "default": ""},
            "signature": {"type": "str", "default": "", "no_log": False},
            "models": {"type": "dict", "default": {}},
            "verify": {"type": "str", "choices": ["sizes", "hashes"], "default": "sizes"},
        },
        supports_check_mode=True,
    )
    p = module.params
    store = Store(p["root"])
    wheels: list[dict[str, str]] = [{"file": w["file"], "sha256": w["sha256"]} for w in p["wheels"]]
    incoming = Path(p["incoming"]) if p["incoming"] else None
    result: dict[str, Any] = {"changed": False, "release": p["release"], "path": str(store.release_dir(p["release"])),
                              "received_wheels": 0, "received_bytes": 0, "built": False, "damaged": []}
    pending = incoming is not None and incoming.is_file()
    live = store.current_release() == p["release"]
    complete = store.release_complete(p["release"])
    if complete:
        result["damaged"] = damage(store.release_dir(p["release"]), wheels, p["verify"] == "hashes")[:DAMAGE_SHOWN]
        complete = not result["damaged"]
    signed = bool(p["allowed_signers"])
    if signed:
        try:
            verify(Path(p["allowed_signers"]), p["manifest"], p["signature"], p["release"], wheels, p["requirements"],
                   p["models"])
        except (Refused, ValueError, OSError) as exc:
            if pending and not module.check_mode:
                assert incoming is not None
                incoming.unlink()
            module.fail_json(msg=f"release {p['release']} REFUSED: {exc}. Nothing was installed; the live release "
                                 "is untouched.", **result)
    if module.check_mode:
        module.exit_json(**{**result, "changed": pending or not complete, "built": not complete})
    try:
        if pending:
            assert incoming is not None
            result["received_wheels"], result["received_bytes"] = ingest(
                store, incoming, {w["file"]: w["sha256"] for w in wheels}, signed)
            result["changed"] = True
        if not complete:
            absent = [w["file"] for w in wheels if not store.wheel_path(w["sha256"], w["file"]).is_file()]
            if absent:
                raise ValueError(f"the Pi's wheel cache lacks {', '.join(absent)}, and they were not sent")
            result["build_seconds"] = round(build(store, p["release"], p["python"], wheels, p["requirements"]), 1)
            result.update(changed=True, built=True)
        if signed and keep_manifest(store.release_dir(p["release"]), p["manifest"], p["signature"]):
            result["changed"] = True
    except Refused as exc:
        module.fail_json(msg=f"release {p['release']} REFUSED: {exc}. Nothing was installed; the live release is "
                             "untouched.", **result)
    except (ValueError, RuntimeError, OSError, tarfile.TarError) as exc:
        if not complete:
            remove_tree(store.release_dir(p["release"]))
        dropped = []
        if isinstance(exc, RuntimeError):  # a command failed: the wheels or the kept pip may be damaged
            dropped = drop_damaged_wheels(store, wheels)
            remove_tree(store.pip)  # made again by the next build, rather than failing every build if it is damaged
        module.fail_json(msg=f"release {p['release']}: {exc}. "
                             + (f"Damaged in the Pi's wheel cache, removed (the next run sends them again): "
                                f"{', '.join(dropped)}. " if dropped else "")
                             + ("It was the live release, damaged: the kiosk stays down until a deploy succeeds or "
                                "playbooks/rollback.yml goes back." if result["damaged"] and live
                                else "The live release is untouched."), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()

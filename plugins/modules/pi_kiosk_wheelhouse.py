#!/usr/bin/python
"""Ansible module (runs on the controller): the kiosk wheel, each platform's wheelhouse, each Pi's delta."""
from __future__ import annotations

DOCUMENTATION = r"""
module: pi_kiosk_wheelhouse
short_description: Build the kiosk wheel and the Pis' wheelhouses on the controller, once per fleet
author: pi-fleet maintainers
description:
  - Runs on the controller (C(delegate_to=localhost), C(run_once)), for every Pi of the batch at once.
  - Builds the kiosk wheel from O(source_dir), and the wheels of the packages of this repository it depends
    on (its C(tool.uv.sources) paths, e.g. the detector's networks), with no network and reproducible
    timestamps, each cached by the hash of the files that go into it. The sha256 of a wheel as built is recorded
    beside it, so that a later change to the cached file is refused by the Pi.
  - Downloads, for every lock and Pi platform (Python version, machine, glibc) of O(hosts), the wheels of
    the lock (hashes checked) into C(<cache_dir>/wheelhouse/<lock>-<hash>/<platform>/), once; an
    offline controller (O(download=false)) uses that cache as it is.
  - Names each Pi's release (the kiosk version and a hash of everything it installs) and packs the wheels
    the Pi does not have yet into one tar, so that only what the Pi lacks is sent to it.
  - With O(signing_key), signs each release's manifest (every wheel's sha256 as built or downloaded and
    checked against the lock, the requirements', the models'); the Pi checks the wheels it installs against it.
extends_documentation_fragment:
  - action_common_attributes
attributes:
  check_mode:
    support: full
    details:
      - It fills the controller's cache in check mode too, which changes no host; C(changed) is always false.
  diff_mode:
    support: none
  platform:
    platforms: posix
    details: The controller, with pip, setuptools and ssh-keygen (to sign).
options:
  source_dir:
    description: The kiosk package's source (its C(pyproject.toml), C(README.md), C(src/)).
    type: path
    required: true
  cache_dir:
    description: The controller's cache of wheels, wheelhouses and transfer tars.
    type: path
    required: true
  hosts:
    description:
      - Per Pi (inventory name), what it needs, a dict with
      - C(lock), the path of the lock (pinned and hashed requirements) its release installs;
      - C(platform), a dict with C(python) (major.minor), C(machine) and C(glibc), as M(pi_kiosk_facts) reads them;
      - C(have), the sha256 of the wheels already in its cache (optional);
      - C(models), file name on the Pi to sha256, for the signed manifest (optional).
    type: dict
    required: true
  download:
    description:
      - Download the wheels the cache lacks; false fails instead, naming what is missing (an offline controller).
    type: bool
    default: true
  index_url:
    description: Package index to download from (a mirror); empty uses pip's default.
    type: str
    default: ""
  local_wheels:
    description:
      - Wheels supplied by the user that replace the lock's entry for their package (e.g. an onnxruntime
        built for a 32-bit Pi, for which PyPI has none); each is used on the machines its platform tag names.
    type: list
    elements: path
    default: []
  signing_key:
    description:
      - An SSH private key, or a C(.pub) whose private key is in ssh-agent, that signs each Pi's release manifest
        (C(ssh-keygen -Y sign), namespace C(pi-kiosk-release)); empty signs nothing.
    type: str
    default: ""
seealso:
  - module: pi_kiosk_release
  - module: pi_kiosk_facts
"""

EXAMPLES = r"""
- name: Build the kiosk wheel and the wheelhouses, and plan each Pi's release
  pi_kiosk_wheelhouse:
    source_dir: "{{ playbook_dir }}/files/kiosk"
    cache_dir: ~/.cache/pi-fleet
    hosts:
      kiosk-lobby-01:
        lock: "{{ playbook_dir }}/files/kiosk/locks/pi.txt"
        platform: {python: "3.11", machine: aarch64, glibc: "2.36"}
        have: []
        models: {}
    signing_key: ~/.ssh/pi-fleet-release
  register: wheelhouse
  run_once: true
  delegate_to: localhost

- name: Send each Pi the wheels it lacks
  ansible.builtin.copy:
    src: "{{ wheelhouse.hosts[inventory_hostname].transfer.tar }}"
    dest: /opt/pi-kiosk/incoming.tar
    mode: "0600"
  when: wheelhouse.hosts[inventory_hostname].transfer.count > 0

- name: Build on an offline controller, from its cache only
  pi_kiosk_wheelhouse:
    source_dir: /srv/pi-fleet/files/kiosk
    cache_dir: /srv/pi-fleet/cache
    hosts: "{{ pi_hosts_needs }}"
    download: false
    local_wheels:
      - /srv/wheels/onnxruntime-1.20.0-cp311-cp311-linux_armv7l.whl
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
kiosk:
  description: The kiosk wheel.
  type: dict
  returned: success
  contains:
    file:
      description: Its file name.
      type: str
      sample: pi_fleet_kiosk-0.2.0-py3-none-any.whl
    path:
      description: Where it is in the controller's cache.
      type: str
      sample: /home/me/.cache/pi-fleet/local/4f1c2a9b8e7d6c5b/pi_fleet_kiosk-0.2.0-py3-none-any.whl
    sha256:
      description: Its sha256 as built (recorded at build time, not read again from the cached file).
      type: str
      sample: 9b2f4c1e0d3a5b7c9e1f2a4b6c8d0e2f4a6b8c0d2e4f6a8b0c2d4e6f8a0b2c4d
    size:
      description: Its size in bytes.
      type: int
      sample: 84211
    name:
      description: Its package name.
      type: str
      sample: pi-fleet-kiosk
    version:
      description: Its version, the first part of a release id.
      type: str
      sample: 0.2.0
hosts:
  description: Per Pi (the inventory names of O(hosts)), its release plan, a dict with the keys below.
  type: dict
  returned: success
  contains:
    release:
      description: The release id, the kiosk version and a hash of the requirements and the platform.
      type: str
      sample: 0.2.0-c12577f42026
    platform:
      description: The platform key.
      type: str
      sample: cp311-aarch64-glibc2.36
    wheels:
      description: Every wheel of the release.
      type: list
      elements: dict
      contains:
        file:
          description: Its file name.
          type: str
        sha256:
          description: Its sha256, as built or as downloaded and checked against the lock.
          type: str
    requirements:
      description: The release's requirements, every line pinned and hashed (the lock, the user's and the own wheels).
      type: str
    transfer:
      description: The wheels the Pi lacks, packed into one tar (shared by the Pis that lack the same ones).
      type: dict
      contains:
        tar:
          description: The tar's path on the controller; empty when the Pi lacks nothing.
          type: str
          sample: /home/me/.cache/pi-fleet/transfer/0c1d2e3f4a5b6c7d.tar
        count:
          description: Wheels in it.
          type: int
          sample: 1
        bytes:
          description: Its size in bytes.
          type: int
          sample: 92160
    total_bytes:
      description: The size of all the release's wheels, in bytes.
      type: int
      sample: 87888694
    manifest:
      description: The signed manifest (JSON).
      type: str
      returned: with O(signing_key)
    signature:
      description: The manifest's SSH signature.
      type: str
      returned: with O(signing_key)
"""

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from ansible.module_utils.basic import AnsibleModule

try:
    from ansible_collections.pi_fleet.kiosk.plugins.module_utils.pi_kiosk_store import sha256_file
except ImportError:
    # Loaded by its path outside Ansible (molecule/rollout/verify/tampered.yml builds a kiosk wheel with
    # local_wheel): the collection's plugins/module_utils. Run by Ansible, the import above always succeeds.
    _spec = importlib.util.spec_from_file_location(
        "pi_kiosk_store", Path(__file__).resolve().parent.parent / "module_utils" / "pi_kiosk_store.py")
    assert _spec is not None and _spec.loader is not None
    _store = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_store)
    sha256_file = _store.sha256_file

# What goes into the kiosk wheel; a change to anything else (tests, benchmarks) is not a new release.
WHEEL_INPUTS = ("pyproject.toml", "README.md", "src")
SKIP = re.compile(r"(^|/)(__pycache__|[^/]*\.egg-info)(/|$)|\.py[co]$")
REPRODUCIBLE_EPOCH = "315532800"  # 1980-01-01, the earliest time a zip file can hold
WHEEL_NAME = re.compile(
    r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$")
# Raspberry Pi OS kernels report armv7l/armv6l for 32-bit userlands: PyPI has no onnxruntime for them.
NO_PYPI_ONNXRUNTIME = ("armv6l", "armv7l")
TAIL = 1200
BUILT_SHA256 = "built.sha256"
# ssh-keygen -Y namespace and principal of release signatures (the Pi's allowed_signers names both).
SIGNATURE_NAMESPACE = "pi-kiosk-release"


class WheelhouseError(Exception):
    pass


def wheel_inputs(source: Path) -> list[Path]:
    files = []
    for name in WHEEL_INPUTS:
        base = source / name
        candidates = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        files += [p for p in candidates if not SKIP.search(p.relative_to(source).as_posix())]
    return files


def source_hash(source: Path) -> str:
    digest = hashlib.sha256()
    for path in wheel_inputs(source):
        digest.update(path.relative_to(source).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def run(argv: list[str], env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise WheelhouseError((proc.stderr.strip() or proc.stdout.strip())[-TAIL:])


def publish(staging: Path, target: Path) -> None:
    """Move a finished cache entry into place; another run that got there first wins (same content)."""
    try:
        os.replace(staging, target)
    except OSError:
        if not target.is_dir():
            raise
        shutil.rmtree(staging, ignore_errors=True)


def local_sources(source: Path) -> list[Path]:
    """The directories of the repository's packages the kiosk depends on (its tool.uv.sources paths)."""
    sources = tomllib.loads((source / "pyproject.toml").read_text()).get("tool", {}).get("uv", {}).get("sources", {})
    return [(source / spec["path"]).resolve() for spec in sources.values() if "path" in spec]


def local_wheel(source: Path, cache: Path) -> dict[str, Any]:
    """The wheel of a package in this repository, built once per content of its sources."""
    if not (source / "pyproject.toml").is_file():
        raise WheelhouseError(f"{source} is not the kiosk package (no pyproject.toml): check pi_kiosk_source_dir")
    target = cache / "local" / source_hash(source)[:16]
    if not any(target.glob("*.whl")):
        with tempfile.TemporaryDirectory() as tmp:
            # A copy, so that the build leaves no build/ or egg-info in the checkout.
            src = Path(tmp) / "src"
            for path in wheel_inputs(source):
                dest = src / path.relative_to(source)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest)
            out = Path(tmp) / "out"
            env = {**os.environ, "SOURCE_DATE_EPOCH": REPRODUCIBLE_EPOCH, "PIP_NO_INDEX": "1"}
            try:
                run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                     "--wheel-dir", str(out), str(src)], env)
            except WheelhouseError as exc:
                raise WheelhouseError(f"could not build a wheel from {source}: {exc}") from None
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=target.parent))
            for wheel in out.glob("*.whl"):
                shutil.move(str(wheel), staging / wheel.name)
                # The sha256 as built: a later change to the cached file is a tampered wheel, refused by the Pi.
                (staging / BUILT_SHA256).write_text(sha256_file(staging / wheel.name))
            publish(staging, target)
    (wheel,) = target.glob("*.whl")
    match = WHEEL_NAME.match(wheel.name)
    assert match is not None
    recorded = target / BUILT_SHA256
    if not recorded.is_file():
        recorded.write_text(sha256_file(wheel))
    return {"file": wheel.name, "path": str(wheel), "sha256": recorded.read_text().strip(),
            "size": wheel.stat().st_size, "name": match["name"].replace("_", "-"), "version": match["version"]}


def platform_key(platform: dict[str, Any]) -> str:
    return f"cp{platform['python'].replace('.', '')}-{platform['machine']}-glibc{platform['glibc']}"


def pip_platforms(platform: dict[str, Any]) -> list[str]:
    machine = platform["machine"]
    if machine in NO_PYPI_ONNXRUNTIME:
        return [f"linux_{machine}"]
    glibc_minor = int(str(platform["glibc"]).split(".")[1])
    return [f"manylinux2014_{machine}", f"linux_{machine}"] + [
        f"manylinux_2_{minor}_{machine}" for minor in range(17, glibc_minor + 1)]


def split_lock(text: str) -> dict[str, str]:
    """Lock entries by canonical package name (an entry is its line and its hash lines)."""
    entries: dict[str, str] = {}
    current = ""
    for line in text.splitlines():
        if line and not line.startswith((" ", "#")):
            current = re.split(r"[=<>!~ ;\[]", line, maxsplit=1)[0].lower().replace("_", "-")
            entries[current] = line
        elif line.startswith(" ") and current:
            entries[current] += "\n" + line
    return entries


def local_entries(local_wheels: list[Path], machine: str) -> list[dict[str, Any]]:
    """The user's wheels that install on this machine."""
    found = []
    for path in local_wheels:
        match = WHEEL_NAME.match(path.name)
        if not path.is_file() or match is None:
            raise WheelhouseError(f"pi_kiosk_local_wheels: {path} is not a wheel file")
        if match["plat"] == "any" or machine in match["plat"]:
            found.append({"file": path.name, "path": str(path), "sha256": sha256_file(path),
                          "size": path.stat().st_size, "name": match["name"].lower().replace("_", "-"),
                          "version": match["version"]})
    return found


def cache_entry(lock: Path, platform: dict[str, Any], cache: Path, replaced: set[str]) -> tuple[str, Path]:
    """(requirements to download, their cache directory): keyed by those requirements and the platform."""
    entries = split_lock(lock.read_text())
    to_fetch = "\n".join(text for name, text in entries.items() if name not in replaced) + "\n"
    key = hashlib.sha256((to_fetch + platform_key(platform)).encode()).hexdigest()[:12]
    return to_fetch, cache / "wheelhouse" / f"{lock.stem}-{key}" / platform_key(platform)


def wheelhouse(lock: Path, platform: dict[str, Any], cache: Path, download: bool, index_url: str,
               local: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """(wheels, requirements) of the lock for one platform: the lock, the user's wheels replacing entries."""
    to_fetch, target = cache_entry(lock, platform, cache, {w["name"] for w in local})
    manifest = target / "manifest.json"
    if not manifest.is_file():
        if not download:
            raise WheelhouseError(
                f"the wheels of {lock.name} for {platform_key(platform)} are not in the controller's cache ({target}) "
                "and pi_kiosk_pip_download is false: run once with downloads on, or copy that directory from a "
                "controller that has it")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".download-"))
        try:
            reqs = staging / "requirements.txt"
            reqs.write_text(to_fetch)
            argv = [sys.executable, "-m", "pip", "download", "--quiet", "--require-hashes", "--only-binary=:all:",
                    "--implementation=cp", f"--python-version={platform['python']}",
                    f"--abi=cp{platform['python'].replace('.', '')}", f"--dest={staging / 'wheels'}",
                    *(f"--platform={p}" for p in pip_platforms(platform)), "-r", str(reqs)]
            env = {**os.environ, **({"PIP_INDEX_URL": index_url} if index_url else {})}
            try:
                run(argv, env)
            except WheelhouseError as exc:
                hint = (f" PyPI has no onnxruntime wheels for {platform['machine']} (32-bit Raspberry Pi OS): build "
                        "or obtain one and list it in pi_kiosk_local_wheels." if platform["machine"] in
                        NO_PYPI_ONNXRUNTIME else "")
                raise WheelhouseError(f"could not download the wheels of {lock.name} for {platform_key(platform)}:"
                                      f" {exc}.{hint}") from None
            wheels = [{"file": w.name, "sha256": sha256_file(w), "size": w.stat().st_size}
                      for w in sorted((staging / "wheels").glob("*.whl"))]
            (staging / "wheels" / "manifest.json").write_text(json.dumps(wheels, indent=1))
            publish(staging / "wheels", target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    wheels = [{**w, "path": str(target / w["file"])} for w in json.loads(manifest.read_text())]
    local_lines = [f"{w['name']}=={w['version']} \\\n    --hash=sha256:{w['sha256']}" for w in local]
    requirements = to_fetch + "".join(line + "\n" for line in local_lines)
    return wheels + [{k: w[k] for k in ("file", "path", "sha256", "size")} for w in local], requirements


def pack(missing: list[dict[str, Any]], cache: Path) -> dict[str, Any]:
    """One tar of the wheels a Pi lacks (reused for every Pi that lacks the same ones)."""
    if not missing:
        return {"tar": "", "count": 0, "bytes": 0}
    key = hashlib.sha256("".join(sorted(w["sha256"] for w in missing)).encode()).hexdigest()[:16]
    tar = cache / "transfer" / f"{key}.tar"
    if not tar.is_file():
        tar.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=tar.parent, suffix=".tmp")
        os.close(fd)
        # Wheels are zip files already: compressing them again buys nothing.
        with tarfile.open(tmp, "w") as out:
            for wheel in sorted(missing, key=lambda w: w["file"]):
                out.add(wheel["path"], arcname=wheel["file"])
        os.replace(tmp, tar)
    return {"tar": str(tar), "count": len(missing), "bytes": tar.stat().st_size}


def manifest_of(host_plan: dict[str, Any], models: dict[str, str]) -> str:
    """What a signature vouches for: the release, every wheel's and model's sha256, the requirements' (the lock)."""
    return json.dumps({
        "format": 1,
        "release": host_plan["release"],
        "platform": host_plan["platform"],
        "requirements_sha256": hashlib.sha256(host_plan["requirements"].encode()).hexdigest(),
        "wheels": {w["file"]: w["sha256"] for w in host_plan["wheels"]},
        "models": dict(sorted(models.items())),
    }, sort_keys=True, indent=1) + "\n"


def sign(manifest: str, key: Path) -> str:
    """The manifest's SSH signature (ssh-keygen -Y sign; a .pub key signs with its private key in ssh-agent)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "manifest.json"
        path.write_text(manifest)
        proc = subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", str(key), "-n", SIGNATURE_NAMESPACE, str(path)],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise WheelhouseError(f"could not sign the release manifest with pi_kiosk_signing_key={key}: "
                                  f"{(proc.stderr or proc.stdout).strip()[-TAIL:]} (a key with a passphrase must be "
                                  "in ssh-agent, given by its .pub)")
        return (Path(tmp) / "manifest.json.sig").read_text()


def plan(params: dict[str, Any]) -> dict[str, Any]:
    cache = Path(params["cache_dir"]).expanduser()
    source = Path(params["source_dir"]).expanduser()
    kiosk = local_wheel(source, cache)
    own = [kiosk] + [local_wheel(path, cache) for path in local_sources(source)]
    own_lines = "".join(f"{w['name']}=={w['version']} \\\n    --hash=sha256:{w['sha256']}\n" for w in own)
    local_paths = [Path(p).expanduser() for p in params["local_wheels"]]
    houses: dict[tuple[str, str], tuple[list[dict[str, Any]], str]] = {}
    hosts: dict[str, Any] = {}
    signatures: dict[str, str] = {}
    for host, want in sorted(params["hosts"].items()):
        platform, lock = want["platform"], Path(want["lock"]).expanduser()
        key = (str(lock), platform_key(platform))
        if key not in houses:
            local = local_entries(local_paths, platform["machine"])
            if platform["machine"] in NO_PYPI_ONNXRUNTIME and not any(w["name"] == "onnxruntime" for w in local):
                raise WheelhouseError(
                    f"{host} runs a 32-bit userland ({platform['machine']}): PyPI has no onnxruntime wheels for it. "
                    "Install 64-bit Raspberry Pi OS, or build an onnxruntime wheel for "
                    f"{platform_key(platform)} and list it in pi_kiosk_local_wheels. Nothing was changed.")
            houses[key] = wheelhouse(lock, platform, cache, params["download"], params["index_url"], local)
        deps, requirements = houses[key]
        wheels = [*deps, *({k: w[k] for k in ("file", "path", "sha256", "size")} for w in own)]
        requirements += own_lines
        release_hash = hashlib.sha256((requirements + platform_key(platform)).encode()).hexdigest()[:12]
        have = set(want.get("have") or [])
        hosts[host] = {
            "release": f"{kiosk['version']}-{release_hash}",
            "platform": platform_key(platform),
            "wheels": [{"file": w["file"], "sha256": w["sha256"]} for w in wheels],
            "requirements": requirements,
            "transfer": pack([w for w in wheels if w["sha256"] not in have], cache),
            "total_bytes": sum(w["size"] for w in wheels),
        }
        if params["signing_key"]:
            manifest = manifest_of(hosts[host], want.get("models") or {})
            if manifest not in signatures:
                signatures[manifest] = sign(manifest, Path(params["signing_key"]).expanduser())
            hosts[host].update(manifest=manifest, signature=signatures[manifest])
    return {"kiosk": kiosk, "hosts": hosts}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "source_dir": {"type": "path", "required": True},
            "cache_dir": {"type": "path", "required": True},
            "hosts": {"type": "dict", "required": True},
            "download": {"type": "bool", "default": True},
            "index_url": {"type": "str", "default": ""},
            "local_wheels": {"type": "list", "elements": "path", "default": []},
            # A key's path, not a secret (validate-modules guesses one from the name).
            "signing_key": {"type": "str", "default": "", "no_log": False},
        },
        supports_check_mode=True,
    )
    try:
        result = plan(module.params)
    except (WheelhouseError, OSError) as exc:
        module.fail_json(msg=str(exc))
    # The controller's cache, not a Pi's state: nothing here counts as a change.
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()

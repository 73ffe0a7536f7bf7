"""Project conventions that reviews would otherwise have to catch."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.module_utils.compat.version import LooseVersion
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import ROOT, load_module

BIN = Path(sys.executable).parent
ROLES = sorted(p for p in (ROOT / "roles").iterdir() if p.is_dir())
BOARD_GROUPS = {"pi5", "pi4", "pi3", "pizero2", "pizero"}


def test_installed_collections_satisfy_requirements_yml() -> None:
    listing = subprocess.run(
        [str(BIN / "ansible-galaxy"), "collection", "list", "--format", "json"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    installed: dict[str, str] = {}
    for collections in json.loads(listing.stdout).values():
        for name, info in collections.items():
            installed.setdefault(name, info["version"])
    required = yaml.safe_load((ROOT / "requirements.yml").read_text())["collections"]
    assert required, "requirements.yml declares no collections"
    for collection in required:
        assert collection["name"] in installed, f"{collection['name']} is not installed"
        assert collection["version"].startswith("=="), f"{collection['name']} is not pinned"
        assert LooseVersion(installed[collection["name"]]) == LooseVersion(collection["version"][2:]), (
            f"{collection['name']}: installed {installed[collection['name']]}, required {collection['version']}"
        )


@pytest.mark.parametrize("site", ["site.yml", "playbooks/site.yml"])
def test_site_yml_only_imports_playbooks(site: str) -> None:
    """The checkout's site.yml and the collection's (pi_fleet.kiosk.site), which the first imports."""
    plays = yaml.safe_load((ROOT / site).read_text())
    assert plays
    for play in plays:
        assert set(play) == {"name", "ansible.builtin.import_playbook"}, play
        assert ((ROOT / site).parent / play["ansible.builtin.import_playbook"]).is_file()


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_role_layout(role: Path) -> None:
    meta = yaml.safe_load((role / "meta/main.yml").read_text())
    assert meta["dependencies"] == []
    # The options of every entry point (main, and e.g. pi_kiosk's rollout or pi_base's upgrade).
    entry_points = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"].values()
    specs = {name: spec for entry in entry_points for name, spec in entry.get("options", {}).items()}
    defaults = yaml.safe_load((role / "defaults/main.yml").read_text()) or {}
    # Every default is validated and documented, with the same default value.
    assert set(defaults) == set(specs), f"defaults and argument_specs differ: {set(defaults) ^ set(specs)}"
    for name, spec in specs.items():
        assert name.startswith(role.name + "_"), f"{name} lacks the role prefix {role.name}_"
        assert spec.get("description"), f"{name} has no description"
        assert spec.get("type"), f"{name} has no type"
        assert spec.get("default") == defaults[name], f"{name}: argument_specs default differs from defaults/main.yml"


def test_example_inventory_puts_every_kiosk_in_one_board_group() -> None:
    listing = subprocess.run(
        [str(BIN / "ansible-inventory"), "-i", "inventory/example", "--list"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    inventory = json.loads(listing.stdout)
    kiosks = set(inventory["kiosks"].get("hosts", []))
    for group in inventory["kiosks"]["children"]:
        kiosks |= set(inventory[group].get("hosts", []))
    assert kiosks
    for host in kiosks:
        groups = {g for g in BOARD_GROUPS if host in inventory.get(g, {}).get("hosts", [])}
        assert len(groups) == 1, f"{host} is in board groups {groups}"
    # Each kiosk's own token, from the vault (the role refuses two kiosks of one play sharing one).
    shown = subprocess.run(
        [str(BIN / "ansible"), "-i", "inventory/example", "kiosks", "-m", "ansible.builtin.debug",
         "-a", "var=pi_kiosk_server_token"], capture_output=True, text=True, check=True, cwd=ROOT,
        # No other callback's lines (a profiler someone enabled) in the JSON.
        env={**{k: v for k, v in os.environ.items() if k != "ANSIBLE_CALLBACKS_ENABLED"},
             "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json"})
    tasks = json.loads(shown.stdout)["plays"][0]["tasks"]
    tokens = {host: result["pi_kiosk_server_token"] for host, result in tasks[0]["hosts"].items()}
    assert set(tokens) == kiosks and len(set(tokens.values())) == len(kiosks), shown


# The default model's file (dlib's ResNet as the kiosk's converter writes it, the file its card dlib-resnet-v1 names),
# and the least RAM each example board group comes with (a Pi 4 has 1-8 GB, a Pi 5 from 1 GB, the least assumed).
DEFAULT_MODEL_BYTES = 22438267
LEAST_RAM_MB = {"pi5": 1024, "pi4": 1024, "pi3": 1024, "pizero2": 512}


def test_example_inventory_deploys_the_default_model_and_it_fits_every_board() -> None:
    """No placeholder model to replace: every kiosk of the example gets the default model (pi_kiosk_model_src empty),
    whose first start fits each board group's service limit and its smallest board's RAM, even without swap."""
    listing = subprocess.run(
        [str(BIN / "ansible-inventory"), "-i", "inventory/example", "--list"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    inventory = json.loads(listing.stdout)
    kiosk = ROOT / "roles/pi_kiosk"
    constants = yaml.safe_load((kiosk / "vars/main.yml").read_text())
    defaults = yaml.safe_load((kiosk / "defaults/main.yml").read_text())
    fit = load_module(ROOT / "plugins/filter/pi_kiosk.py").pi_kiosk_memory_fit
    assert set(LEAST_RAM_MB) == {g for g in BOARD_GROUPS if inventory.get(g, {}).get("hosts")}
    for group, ram_mb in LEAST_RAM_MB.items():
        for host in inventory[group]["hosts"]:
            hostvars = {**defaults, **inventory["_meta"]["hostvars"][host]}
            assert not any(hostvars[f"pi_kiosk_model_{k}"] for k in ("src", "sha256", "card")), (host, hostvars)
            need = fit(DEFAULT_MODEL_BYTES, ram_mb=ram_mb, swap_mb=0, reserve_mb=hostvars["pi_kiosk_memory_reserve_mb"],
                       max_mb=hostvars["pi_kiosk_memory_max_mb"],
                       baseline_mb=constants["__pi_kiosk_memory_baseline_mb"],
                       factor=constants["__pi_kiosk_memory_model_factor"])
            assert need["fits"] and need["need"] == 271, (host, need)


def test_coral_extra_is_the_runtime_the_kiosk_imports() -> None:
    """LiteRT reaches a Coral Pi only through the kiosk's `coral` extra (files/kiosk/locks/pi-coral.txt, one pin)."""
    pyproject = tomllib.loads((ROOT / "files/kiosk/pyproject.toml").read_text())
    extra = [Requirement(r) for r in pyproject["project"]["optional-dependencies"]["coral"]]
    assert extra, "the kiosk package has no `coral` extra"
    embed = (ROOT / "files/kiosk/src/pi_kiosk/embed.py").read_text()
    for req in extra:
        module = req.name.replace("-", "_")
        assert f"from {module}." in embed, f"the kiosk does not import {module}, which its coral extra installs"
    assert "ai-edge-litert" in locked(ROOT / "files/kiosk/locks/pi-coral.txt")
    files = [p for p in (ROOT / "roles").rglob("*") if p.is_file()]
    pinned = [p for p in files if "ai-edge-litert==" in p.read_text(errors="ignore")]
    assert not pinned, f"{pinned} pin LiteRT: the kiosk's lock is the one place"


def last_task(role: Path, tasks_file: str = "main.yml") -> dict[str, Any]:
    """The task a role's run ends with, following an include at the end into its file and a block into its end."""
    task: dict[str, Any] = yaml.safe_load((role / "tasks" / tasks_file).read_text())[-1]
    while "block" in task:
        task = task["block"][-1]
    include = task.get("ansible.builtin.include_tasks") or task.get("ansible.builtin.import_tasks")
    return last_task(role, include) if isinstance(include, str) else task


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_role_ends_with_its_report_line(role: Path) -> None:
    """The README promises it: every role's last word says what it changed and what it found."""
    task = last_task(role)
    assert "ansible.builtin.debug" in task and task["name"].startswith("Report"), (
        f"{role.name} ends with {task['name']!r}, not a report")


def locked(path: Path) -> dict[str, str]:
    """name -> version of a lock written by scripts/lock (one `name==version` line per package)."""
    pins = {}
    for line in path.read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            req = Requirement(line.split(" \\")[0])
            (spec,) = req.specifier
            if req.marker is None or req.marker.evaluate({"python_full_version": "3.11.2", "python_version": "3.11"}):
                pins[canonicalize_name(req.name)] = spec.version
    return pins


@pytest.mark.parametrize("name", ["controller", "dev"])
def test_lock_holds_every_direct_pin(name: str) -> None:
    lock = locked(ROOT / f"requirements/{name}.txt")
    for line in (ROOT / f"requirements/{name}.in").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            req = Requirement(line)
            assert lock.get(canonicalize_name(req.name)) == next(iter(req.specifier)).version, (
                f"requirements/{name}.txt is out of date for {req}: run scripts/lock")


def project_sources() -> dict[str, object]:
    pyproject = tomllib.loads((ROOT / "files/kiosk/pyproject.toml").read_text())
    return {canonicalize_name(k): v for k, v in pyproject["tool"]["uv"]["sources"].items()}


@pytest.mark.parametrize("lock", ["pi", "pi-coral"])
def test_pi_lock_satisfies_the_kiosk_and_matches_the_tested_versions(lock: str) -> None:
    pins = locked(ROOT / f"files/kiosk/locks/{lock}.txt")
    project = tomllib.loads((ROOT / "files/kiosk/pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    if lock == "pi-coral":
        wanted += [Requirement(r) for r in project["optional-dependencies"]["coral"]]
    own = set(project_sources())
    for req in wanted:
        name = canonicalize_name(req.name)
        if name in own:  # a package of this repository: the deploy role builds it
            continue
        assert name in pins and req.specifier.contains(pins[name]), f"{lock}.txt lacks {req}: run scripts/lock"
    dev = locked(ROOT / "requirements/dev.txt")
    differ = {n: (v, dev[n]) for n, v in pins.items() if n in dev and dev[n] != v}
    assert not differ, f"the Pis would run other versions than the tests (Pi, tests): {differ}; run scripts/lock"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_role_constants_in_vars_look_private(role: Path) -> None:
    """group_vars cannot override vars/: a public-looking name there would mislead a user."""
    names = [name for f in sorted((role / "vars").glob("*.yml")) for name in (yaml.safe_load(f.read_text()) or {})]
    public = [n for n in names if not n.startswith(f"__{role.name}_")]
    assert not public, f"{role.name}/vars/ holds {public}: name them __{role.name}_*"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_registered_results_never_shadow_a_role_constant(role: Path) -> None:
    """A registered result wins over vars/: a constant of the same name would silently become a task result."""
    constants = {name for f in (role / "vars").glob("*.yml") for name in (yaml.safe_load(f.read_text()) or {})}
    text = "\n".join(f.read_text() for d in ("tasks", "handlers") for f in sorted((role / d).glob("*.yml")))
    registered = set(re.findall(r"^\s+register: (\w+)\s*$", text, re.MULTILINE))
    assert not constants & registered, f"{role.name} registers results under constants' names: {constants & registered}"

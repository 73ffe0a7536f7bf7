"""Project conventions that reviews would otherwise have to catch."""
from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from ansible.module_utils.compat.version import LooseVersion
from packaging.requirements import Requirement

from conftest import ROOT

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


def test_site_yml_only_imports_playbooks() -> None:
    plays = yaml.safe_load((ROOT / "site.yml").read_text())
    assert plays
    for play in plays:
        assert set(play) == {"name", "ansible.builtin.import_playbook"}, play
        assert (ROOT / play["ansible.builtin.import_playbook"]).is_file()


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_role_layout(role: Path) -> None:
    meta = yaml.safe_load((role / "meta/main.yml").read_text())
    assert meta["dependencies"] == []
    specs = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
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
    secrets = inventory["_meta"]["hostvars"][next(iter(kiosks))]
    assert secrets["kiosk_server_token"] == "{{ vault_kiosk_server_token }}"


def test_coral_runtime_pin_is_one_the_kiosk_accepts() -> None:
    """pi_coral installs the Edge TPU runtime the kiosk's `coral` extra imports, at a version it accepts."""
    defaults = yaml.safe_load((ROOT / "roles/pi_coral/defaults/main.yml").read_text())
    pins = {r.name: r for r in map(Requirement, defaults["pi_coral_python_packages"])}
    pyproject = tomllib.loads((ROOT / "files/kiosk/pyproject.toml").read_text())
    extra = [Requirement(r) for r in pyproject["project"]["optional-dependencies"]["coral"]]
    assert extra, "the kiosk package has no `coral` extra"
    for wanted in extra:
        assert wanted.name in pins, f"pi_coral_python_packages lacks {wanted.name}, which the kiosk's backend imports"
        (pinned,) = pins[wanted.name].specifier
        assert pinned.operator == "==", f"{pins[wanted.name]} is not pinned"
        assert wanted.specifier.contains(pinned.version), f"{pins[wanted.name]} does not satisfy the kiosk's {wanted}"
    module = defaults["pi_coral_python_import_check"].split()[1].split(".")[0]
    embed = (ROOT / "files/kiosk/src/pi_kiosk/embed.py").read_text()
    assert f"from {module}." in embed, f"the kiosk does not import {module}, which pi_coral checks"

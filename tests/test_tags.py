"""Tag-limited runs: --tags <concern> lists only that concern's roles, plus pi_facts."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

BIN = Path(sys.executable).parent
PROVISION_TAGS = {
    "base": {"pi_base"},
    "headless": {"pi_headless"},
    "swap": {"pi_swap"},
    "governor": {"pi_governor"},
    "iosched": {"pi_iosched"},
    "openblas": {"pi_openblas"},
    "coral": {"pi_coral"},
    "overclock": {"pi_overclock"},
    # The deploy, rolled out in canary batches: the whole role, or only its configuration or model tasks.
    "recognizer": {"pi_rollout", "pi_kiosk"},
    "recognizer_config": {"pi_rollout", "pi_kiosk"},
    "recognizer_model": {"pi_rollout", "pi_kiosk"},
}


def roles_listed(*args: str) -> set[str]:
    listing = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "inventory/example", "site.yml", "--list-tasks", *args],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    # Ansible validates every role's arguments whatever the tags (read-only): not a task that touches the Pi.
    return set(re.findall(r"^\s{6}pi_fleet\.kiosk\.(\w+) : (?!Validating arguments)", listing.stdout, re.MULTILINE))


@pytest.mark.parametrize(("tag", "roles"), sorted(PROVISION_TAGS.items()))
def test_tag_runs_only_its_roles_and_the_facts(tag: str, roles: set[str]) -> None:
    assert roles_listed("--tags", tag) == {"pi_facts", *roles}


def test_upgrade_runs_the_os_upgrade_and_the_kiosk_health_gate_only() -> None:
    assert roles_listed("--tags", "upgrade") == {"pi_facts", "pi_rollout", "pi_base", "pi_kiosk"}
    upgrade = tasks_listed("--tags", "upgrade")
    assert "Watch the kiosk's health without restarting it" in upgrade
    assert not {t for t in upgrade if t.startswith(("Build the", "Send the wheels", "Switch to"))}


def test_untagged_run_covers_every_provision_role() -> None:
    assert roles_listed() >= {"pi_facts", *set().union(*PROVISION_TAGS.values())}


def tasks_listed(*args: str) -> set[str]:
    listing = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "inventory/example", "site.yml", "--list-tasks", *args],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    return set(re.findall(r"^\s{6}pi_fleet\.kiosk\.pi_kiosk : (.+?)\s+TAGS:", listing.stdout, re.MULTILINE))


def test_config_and_model_runs_never_reinstall() -> None:
    whole = tasks_listed("--tags", "recognizer")
    config = tasks_listed("--tags", "recognizer_config")
    model = tasks_listed("--tags", "recognizer_model")
    install = {t for t in whole if t.startswith(("Build the", "Send the wheels"))}
    reinstall = install & (config | model)
    assert install and not reinstall, f"a config or model run would reinstall: {reinstall}"
    assert "Send the models" in model and "Send the models" not in config
    assert {"Create the directories, the release signing keys and the candidate configuration, token and units",
            "Restart the kiosk and hold it to its health"} <= config & model

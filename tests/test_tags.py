"""Tag-limited runs: --tags <concern> lists only that concern's role, plus pi_facts."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

BIN = Path(sys.executable).parent
PROVISION_TAGS = {
    "base": "pi_base",
    "headless": "pi_headless",
    "swap": "pi_swap",
    "governor": "pi_governor",
    "iosched": "pi_iosched",
    "openblas": "pi_openblas",
    "coral": "pi_coral",
    "overclock": "pi_overclock",
}


def roles_listed(*args: str) -> set[str]:
    listing = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "inventory/example", "site.yml", "--list-tasks", *args],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    # Ansible validates every role's arguments whatever the tags (read-only): not a task that touches the Pi.
    return set(re.findall(r"^\s{6}(\w+) : (?!Validating arguments)", listing.stdout, re.MULTILINE))


@pytest.mark.parametrize(("tag", "role"), sorted(PROVISION_TAGS.items()))
def test_tag_runs_only_its_role_and_the_facts(tag: str, role: str) -> None:
    assert roles_listed("--tags", tag) == {"pi_facts", role}


def test_untagged_run_covers_every_provision_role() -> None:
    assert roles_listed() >= {"pi_facts", *PROVISION_TAGS.values()}

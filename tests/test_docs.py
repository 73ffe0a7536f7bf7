"""The docs say what the code has: each role's variable table is what aar-doc generates from its
meta/argument_specs.yml (.aar_doc.yml), and every tag and project path the READMES name exists."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

BIN = Path(sys.executable).parent
ROLES = sorted(p for p in (ROOT / "roles").iterdir() if (p / "meta/argument_specs.yml").is_file())
READMES = [ROOT / "README.md", *(r / "README.md" for r in ROLES), *sorted(ROOT.glob("files/*/README.md"))]
# Paths the READMES name that are made at run time, or are relative to something else than the repository
# (a timezone: the zoneinfo's).
NOT_IN_THE_REPOSITORY = {"queue/scheduler", "Etc/UTC"}
# Where a path the docs name may be relative to: the repository, the example inventory, a role (the
# README's "each role's defaults/main.yml"), a Python project's directory, its sources or its package.
BASES = [ROOT, ROOT / "inventory/example", *ROLES, *ROOT.glob("files/*"), *ROOT.glob("files/*/src"),
         *ROOT.glob("files/*/src/*")]


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_role_readme_table_is_generated_from_argument_specs(role: Path, tmp_path: Path) -> None:
    copy = tmp_path / role.name
    shutil.copytree(role, copy)
    subprocess.run([BIN / "aar-doc", "--config-file", ROOT / ".aar_doc.yml", copy, "markdown"],
                   check=True, capture_output=True, cwd=ROOT)
    assert (copy / "README.md").read_text() == (role / "README.md").read_text(), (
        f"{role.name}/README.md is out of date: run aar-doc --config-file .aar_doc.yml roles/{role.name} markdown")


def site_tags() -> set[str]:
    listing = subprocess.run([BIN / "ansible-playbook", "-i", "inventory/example", "site.yml", "--list-tags"],
                             capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return {t.strip() for found in re.findall(r"TASK TAGS: \[(.*?)\]", listing) for t in found.split(",")} - {""}


def test_every_tag_the_docs_name_exists() -> None:
    tags = site_tags()
    named = {t for readme in READMES for found in re.findall(r"--tags ([\w,]+)", readme.read_text())
             for t in found.split(",")}
    # The README's table of site.yml's concerns, one tag per row.
    table = re.findall(r"^\| `(\w+)` \| `pi_\w+` \|", (ROOT / "README.md").read_text(), re.MULTILINE)
    assert named and table
    assert (named | set(table)) - tags == set(), f"tags site.yml does not have (it has {sorted(tags)})"


@pytest.mark.parametrize("readme", READMES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_project_path_the_docs_name_exists(readme: Path) -> None:
    # `a/b` in backticks, not a path on a Pi (/...), in a home or the test bed's state (.testbed/, ~), or a pattern.
    named = set(re.findall(r"`([\w.-]+/[\w./-]*)`", readme.read_text()))
    missing = [p for p in sorted(named - NOT_IN_THE_REPOSITORY)
               if not p.startswith((".testbed/", "../"))
               and not any((base / p).exists() for base in (readme.parent, *BASES))]
    assert not missing, f"{readme.relative_to(ROOT)} names paths that do not exist: {missing}"

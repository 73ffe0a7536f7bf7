"""The repository as the collection pi_fleet.kiosk (galaxy.yml): built and installed, from the tarball and from git,
it runs `pi_fleet.kiosk.site` outside the checkout as the checkout runs site.yml; every FQCN of its own that the
project writes names something it has; its dependencies are requirements.yml's; ansible-builder accepts its
execution environment."""
from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from ansible.module_utils.compat.version import LooseVersion

from conftest import ROOT, load_module

BIN = Path(sys.executable).parent
GALAXY = yaml.safe_load((ROOT / "galaxy.yml").read_text())
FQCN = f"{GALAXY['namespace']}.{GALAXY['name']}"


def run(*argv: str | Path, cwd: Path = ROOT, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
    assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("build")
    run(BIN / "ansible-galaxy", "collection", "build", "--output-path", out)
    (built,) = out.glob("*.tar.gz")
    return built


def installed(source: str | Path, tmp: Path) -> tuple[Path, dict[str, str]]:
    """Installs the collection alone (its dependencies come with the `ansible` package here) under `tmp`; returns
    its root and an environment, away from the checkout and its ansible.cfg, in which only this copy answers."""
    into = tmp / "collections"
    into.mkdir()  # and run from its parent: the checkout's ansible.cfg would find the checkout installed already
    run(BIN / "ansible-galaxy", "collection", "install", "--no-deps", "-p", into, source, cwd=tmp)
    env = {"PATH": str(BIN), "HOME": str(tmp), "ANSIBLE_COLLECTIONS_PATH": str(into)}
    return into / "ansible_collections" / GALAXY["namespace"] / GALAXY["name"], env


def tasks(playbook: str, cwd: Path, env: dict[str, str] | None = None) -> list[str]:
    """The playbook's plays and tasks, without the line naming its file."""
    listing = run(BIN / "ansible-playbook", "-i", ROOT / "inventory/example", playbook, "--list-tasks", cwd=cwd,
                  env=env)
    return [line for line in listing.splitlines() if line.strip() and not line.startswith("playbook:")]


def test_the_tarball_holds_what_a_controller_needs_and_nothing_of_development(tarball: Path) -> None:
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    for needed in ("MANIFEST.json", "meta/runtime.yml", "CHANGELOG.md", "playbooks/site.yml",
                   "roles/pi_kiosk/tasks/main.yml", "plugins/modules/pi_kiosk_gate.py",
                   "plugins/module_utils/pi_kiosk_store.py", "plugins/filter/pi_kiosk.py",
                   "plugins/callback/pi_rollout_report.py", "plugins/connection/testbed_podman.py",
                   "files/kiosk/pyproject.toml", "files/mtcnn/pyproject.toml", "requirements/controller.txt",
                   "execution-environment.yml"):
        assert needed in names, needed
    development = re.compile(r"^(molecule|tests|\.venv|\.testbed|collections/ansible_collections)(/|$)|"
                             r"(^|/)(__pycache__|\.mypy_cache|\.pytest_cache|\.ruff_cache|[^/]+\.egg-info)(/|$)")
    assert sorted(n for n in names if development.search(n)) == []


def test_the_installed_collection_runs_site_by_its_fqcn_as_the_checkout_runs_site_yml(tarball: Path,
                                                                                      tmp_path: Path) -> None:
    root, env = installed(tarball, tmp_path)
    assert (root / "playbooks/site.yml").is_file() and not (root / "molecule").exists()
    assert tasks(f"{FQCN}.site", tmp_path, env) == tasks("site.yml", ROOT)


def test_the_collection_installs_from_git(tmp_path: Path) -> None:
    """As AWX or a requirements.yml would name it: git+URL,ref (here this clone's commit)."""
    commit = run("git", "rev-parse", "HEAD").strip()
    root, env = installed(f"git+file://{ROOT},{commit}", tmp_path)
    doc = run(BIN / "ansible-doc", f"{FQCN}.pi_kiosk_gate", cwd=tmp_path, env=env)
    assert "pi_kiosk_gate" in doc and (root / "roles/pi_kiosk/meta/argument_specs.yml").is_file()
    run(BIN / "ansible-playbook", "-i", ROOT / "inventory/example", f"{FQCN}.deploy", "--syntax-check",
        cwd=tmp_path, env=env)


def own_names() -> set[str]:
    """What the collection has by name: modules, filters, roles, playbooks, callbacks, connections."""
    plugins = ROOT / "plugins"
    filters = {name for path in (plugins / "filter").glob("*.py")
               for name in load_module(path).FilterModule().filters()}
    stems = {p.stem for kind in ("modules", "callback", "connection") for p in (plugins / kind).glob("*.py")}
    roles = {p.name for p in (ROOT / "roles").iterdir() if p.is_dir()}
    playbooks = {p.stem for p in (ROOT / "playbooks").glob("*.yml")}
    return filters | stems | roles | playbooks


def test_every_fqcn_of_the_collection_the_project_writes_names_something_it_has() -> None:
    """ansible-lint resolves modules and roles, but a filter's name is only looked up when a task runs."""
    names = own_names()
    files = run("git", "ls-files", "*.yml", "*.j2", "*.py", "*.cfg", "*.md").split()
    written = {(f, m) for f in files if (ROOT / f).is_file()
               for m in re.findall(rf"\b{re.escape(FQCN)}\.([a-z_0-9]+)", (ROOT / f).read_text())}
    assert written, "no FQCN found: the search is wrong"
    assert sorted((f, m) for f, m in written if m not in names | {"plugins"}) == []


def test_galaxy_dependencies_are_the_requirements() -> None:
    required = {c["name"]: c["version"] for c in yaml.safe_load((ROOT / "requirements.yml").read_text())["collections"]}
    assert set(GALAXY["dependencies"]) == set(required)
    for name, at_least in GALAXY["dependencies"].items():
        assert at_least.startswith(">=") and LooseVersion(required[name][2:]) >= LooseVersion(at_least[2:]), name
    # AWX and Semaphore read collections/requirements.yml: the same file.
    assert (ROOT / "collections/requirements.yml").resolve() == (ROOT / "requirements.yml").resolve()


def test_ansible_builder_accepts_the_execution_environment(tmp_path: Path) -> None:
    run(BIN / "ansible-builder", "create", "-f", "execution-environment.yml", "--context", tmp_path / "ee")
    containerfile = (tmp_path / "ee/Containerfile").read_text()
    lock = (ROOT / "requirements/controller.txt").read_text()
    (core,) = re.findall(r"^ansible-core==(\S+)", lock, re.M)
    assert f"ansible-core=={core} " in containerfile, "the image's ansible-core is not the controller lock's"
    assert "--require-hashes -r /tmp/controller.txt" in containerfile
    assert (tmp_path / "ee/_build/requirements/controller.txt").read_text() == lock
    assert yaml.safe_load((tmp_path / "ee/_build/requirements.yml").read_text()) == yaml.safe_load(
        (ROOT / "requirements.yml").read_text())
    bindep = (tmp_path / "ee/_build/bindep.txt").read_text()
    assert "openssh-clients" in bindep and "git-core" in bindep

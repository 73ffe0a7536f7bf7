"""The emulated Pis' bytecode cache (testbed/bytecode): what a zip import compiled once is reused, renamed to the
importing file, and a changed source is compiled afresh."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import ROOT

# One interpreter per import, as each Ansible module runs: the hook loaded as the .pth file loads it, the cache in a
# directory of the test's own; a compile it was not supposed to make fails.
IMPORT = """
import json, sys, traceback
sys.path.insert(0, {hook!r})
import pi_testbed_bytecode as hook
hook.CACHE = {cache!r}
if {forbid_compile!r}:
    def refuse(pathname, source):
        raise AssertionError("compiled " + pathname)
    hook._compile = refuse
sys.path.insert(0, {payload!r})
import payload
try:
    payload.fail()
except ValueError as error:
    where = traceback.extract_tb(error.__traceback__)[-1].filename
print(json.dumps({{"value": payload.VALUE, "where": where}}))
"""


def import_from(payload: Path, cache: Path, forbid_compile: bool = False) -> dict[str, object]:
    code = IMPORT.format(hook=str(ROOT / "testbed/bytecode"), cache=str(cache), payload=str(payload),
                         forbid_compile=forbid_compile)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(run.stdout)


def payload_zip(path: Path, value: int) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("payload.py", f"VALUE = {value}\n\ndef fail():\n    raise ValueError('from the payload')\n")
    return path


def test_a_zip_imported_source_is_compiled_once_and_named_after_the_file_that_imports_it(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = import_from(payload_zip(tmp_path / "run1.zip", 1), cache)
    assert first == {"value": 1, "where": str(tmp_path / "run1.zip/payload.py")}
    assert len(list(cache.iterdir())) == 1

    # Another run's zip of the same source: read from the cache (a compile would fail), tracebacks name this zip.
    again = import_from(payload_zip(tmp_path / "run2.zip", 1), cache, forbid_compile=True)
    assert again == {"value": 1, "where": str(tmp_path / "run2.zip/payload.py")}

    changed = import_from(payload_zip(tmp_path / "run3.zip", 2), cache)
    assert changed["value"] == 2 and len(list(cache.iterdir())) == 2


def test_a_damaged_cache_entry_is_compiled_again(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    import_from(payload_zip(tmp_path / "run1.zip", 1), cache)
    (entry,) = cache.iterdir()
    entry.write_bytes(entry.read_bytes()[:5])
    assert import_from(payload_zip(tmp_path / "run2.zip", 1), cache)["value"] == 1


def test_every_emulated_pi_mounts_it_into_the_system_python_only() -> None:
    mounts = (ROOT / "testbed/tasks/start_pis.yml").read_text()
    for name in ("pi_testbed_bytecode.py", "pi_testbed_bytecode.pth"):
        assert f"/bytecode/{name}:/usr/lib/python3/dist-packages/{name}:ro" in mounts
    assert (ROOT / "testbed/bytecode/pi_testbed_bytecode.pth").read_text() == "import pi_testbed_bytecode\n"

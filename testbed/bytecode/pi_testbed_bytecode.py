"""The emulated Pis' bytecode cache for Ansible's modules (mounted by testbed/tasks/start_pis.yml; never on a Pi).

Ansible runs each module from a zip of its sources, and Python compiles zip-imported sources at every import: under
qemu that is a quarter of a module call's CPU (about 0.4 s of 1.5 s for ansible.builtin.stat), paid by every task on
every Pi. The code compiled once is kept here, keyed by the source's sha256, so a changed source compiles afresh.
A real Pi pays that compile natively, in a tenth of the time.
"""
import hashlib
import marshal
import os
import sys
import types
import zipimport

CACHE = os.path.join("/var/cache/pi-testbed-bytecode", sys.implementation.cache_tag)
_compile = zipimport._compile_source  # type: ignore[attr-defined]


def _renamed(code: types.CodeType, pathname: str) -> types.CodeType:
    # Kept code names the file of the run that compiled it: tracebacks must name this run's.
    consts = tuple(_renamed(c, pathname) if isinstance(c, types.CodeType) else c for c in code.co_consts)
    return code.replace(co_filename=pathname, co_consts=consts)


def _compile_source(pathname: str, source: bytes) -> types.CodeType:
    kept = os.path.join(CACHE, hashlib.sha256(source).hexdigest())
    try:
        with open(kept, "rb") as file:
            return _renamed(marshal.load(file), pathname)
    except (OSError, EOFError, ValueError, TypeError):
        pass
    code = _compile(pathname, source)
    try:
        os.makedirs(CACHE, exist_ok=True)
        # Written aside and renamed: a module running at the same time on the Pi reads a whole file or none.
        with open(f"{kept}.{os.getpid()}", "wb") as file:
            marshal.dump(code, file)
        os.replace(f"{kept}.{os.getpid()}", kept)
    except OSError:
        pass
    return code


zipimport._compile_source = _compile_source  # type: ignore[attr-defined]

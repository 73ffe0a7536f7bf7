"""Shared helpers for the controller-side tests."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def load_module(path: Path) -> ModuleType:
    """Import a project file that is not on sys.path (a filter plugin, a test-bed script)."""
    spec = importlib.util.spec_from_loader(path.stem.replace("-", "_"), loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__file__ = str(path)
    exec(compile(path.read_text(), str(path), "exec"), module.__dict__)
    return module

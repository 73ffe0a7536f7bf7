"""Each Ansible module of the project documents what it takes and what it returns, and the docs cannot drift:
the options of DOCUMENTATION are the argument_spec the module gives AnsibleModule, every EXAMPLES task passes
argument validation against the documented options, and RETURN documents every field the roles read from a
result the module registered.

This is what `ansible-test sanity --test validate-modules` checks of the same contracts; it cannot run here
offline (it downloads pip's bootstrap from ci-files.testing.ansible.com and its requirements into a virtualenv
of its own, and wants the modules inside a collection), so the contracts are checked directly."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from conftest import ROOT, load_module

BIN = Path(sys.executable).parent
MODULES = sorted(ROOT.glob("plugins/modules/*.py"))
# Where the roles read registered results: task files, vars, defaults, handlers, templates.
ROLE_SOURCES = sorted(p for p in (ROOT / "roles").rglob("*")
                      if p.is_file() and (p.suffix in (".yml", ".yaml") or "templates" in p.parts))
# Keys Ansible itself puts in (or derives for) every result: not the module's to document.
COMMON_KEYS = {"changed", "failed", "skipped", "msg", "rc", "stdout", "stdout_lines", "stderr", "stderr_lines",
               "results", "item", "invocation", "diff", "unreachable", "warnings", "deprecations", "ansible_facts",
               "skip_reason", "false_condition", "ansible_loop_var"}
RETURN_TYPES = {"bool", "complex", "dict", "float", "int", "list", "raw", "str"}
# The argument_spec keys DOCUMENTATION states, and their values when left out.
SPEC_KEYS = {"type": "str", "required": False, "default": None, "choices": None, "elements": None, "aliases": []}
# AnsibleModule's constraints between options (kept when an example is validated against the documented options).
CONSTRAINTS = ("mutually_exclusive", "required_together", "required_one_of", "required_if", "required_by")
# A templated value in an example is checked as a value of its documented type.
PLACEHOLDERS: dict[str, Any] = {"int": 0, "float": 0.0, "bool": False, "list": [], "dict": {}}


def ids(path: Path) -> str:
    return path.stem


class Captured(Exception):
    def __init__(self, kwargs: dict[str, Any]) -> None:
        super().__init__("AnsibleModule called")
        self.kwargs = kwargs


def module_kwargs(module: ModuleType, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What the module's main() gives AnsibleModule (argument_spec, required_if, ...), captured at the call."""
    def capture(*args: Any, **kwargs: Any) -> None:
        assert not args, "AnsibleModule is given its arguments by keyword here"
        raise Captured(kwargs)

    monkeypatch.setattr(module, "AnsibleModule", capture)
    with pytest.raises(Captured) as called:
        module.main()
    return called.value.kwargs


def docs(module: ModuleType) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    documentation = yaml.safe_load(module.DOCUMENTATION)
    examples = yaml.safe_load(module.EXAMPLES)
    returns = yaml.safe_load(module.RETURN)
    assert isinstance(documentation, dict) and isinstance(examples, list) and isinstance(returns, dict)
    return documentation, examples, returns


# -- the documented options against the argument_spec -----------------------------------------------------------
def normal(option: dict[str, Any], documented: bool) -> dict[str, Any]:
    """An option's contract as DOCUMENTATION or argument_spec states it."""
    out = {key: option.get(key, empty) for key, empty in SPEC_KEYS.items()}
    out["aliases"] = sorted(out["aliases"] or [])
    nested = option.get("suboptions" if documented else "options")
    out["options"] = {k: normal(v, documented) for k, v in nested.items()} if nested else None
    return out


def spec_differences(documented: dict[str, Any], spec: dict[str, Any], where: str = "") -> Iterator[str]:
    for name in sorted(set(spec) - set(documented)):
        yield f"option {where}{name} is in the argument_spec but not documented"
    for name in sorted(set(documented) - set(spec)):
        yield f"option {where}{name} is documented but not in the argument_spec"
    for name in sorted(set(spec) & set(documented)):
        doc, code = documented[name], spec[name]
        if "type" not in doc:
            yield f"option {where}{name}: no type documented (the argument_spec has {code.get('type', 'str')})"
        if not doc.get("description"):
            yield f"option {where}{name}: no description"
        a, b = normal(doc, documented=True), normal(code, documented=False)
        for key in SPEC_KEYS:
            numbers = {type(a[key]), type(b[key])} <= {int, float}
            if a[key] != b[key] or (type(a[key]) is not type(b[key]) and not numbers):
                yield f"option {where}{name}: {key} documented {a[key]!r}, the argument_spec has {b[key]!r}"
        if a["options"] or b["options"]:
            yield from spec_differences(doc.get("suboptions") or {}, code.get("options") or {}, f"{where}{name}.")


# -- the examples against the documented options ----------------------------------------------------------------
def spec_of(options: dict[str, Any]) -> dict[str, Any]:
    """An argument_spec made from DOCUMENTATION's options: what the examples are validated against."""
    spec = {}
    for name, doc in options.items():
        spec[name] = {key: doc[key] for key in SPEC_KEYS if key in doc}
        if doc.get("suboptions"):
            spec[name]["options"] = spec_of(doc["suboptions"])
    return spec


def untemplated(value: Any, doc: dict[str, Any]) -> Any:
    """A value of the documented type for each "{{ ... }}" of an example (unknown until it runs)."""
    if isinstance(value, str) and "{{" in value:
        return (doc.get("choices") or [PLACEHOLDERS.get(doc.get("type", "str"), "templated")])[0]
    if doc.get("suboptions") and isinstance(value, dict):
        return {k: untemplated(v, doc["suboptions"].get(k, {})) for k, v in value.items()}
    if doc.get("suboptions") and isinstance(value, list):
        return [untemplated(item, {"suboptions": doc["suboptions"]}) for item in value]
    return value


def calls_of(name: str, examples: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(task name, arguments) of each example task that calls the module `name` (short or FQCN)."""
    calls = []
    for task in examples:
        keys = [k for k in task if k == name or k.endswith(f".{name}")]
        if keys:
            args = task[keys[0]]
            assert isinstance(args, dict), f"{name}: example {task.get('name')!r} gives its arguments as a mapping"
            calls.append((str(task.get("name")), args))
    return calls


# -- the fields the roles read from registered results ----------------------------------------------------------
class AnyTagLoader(yaml.SafeLoader):
    """Ansible YAML, its tags (!unsafe, !vault) read as plain values."""


def _untagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


AnyTagLoader.add_multi_constructor("!", _untagged)


def mappings(data: Any) -> Iterator[dict[str, Any]]:
    if isinstance(data, dict):
        yield data
        data = list(data.values())
    if isinstance(data, list):
        for item in data:
            yield from mappings(item)


def yaml_documents(texts: dict[str, str]) -> Iterator[tuple[str, Any]]:
    for where, text in texts.items():
        if where.endswith((".yml", ".yaml")):
            for document in yaml.load_all(text, Loader=AnyTagLoader):
                yield where, document


def assignments(texts: dict[str, str]) -> Iterator[tuple[Any, Any]]:
    """(variable, value) of every set_fact, `vars:` and role vars or defaults file."""
    for where, document in yaml_documents(texts):
        if len(Path(where).parts) > 2 and Path(where).parts[2] in ("vars", "defaults") and isinstance(document, dict):
            yield from document.items()
        for mapping in mappings(document):
            for key, value in mapping.items():
                if isinstance(key, str) and key.split(".")[-1] in ("vars", "set_fact") and isinstance(value, dict):
                    yield from value.items()


SEGMENT = re.compile(r"\.([A-Za-z_]\w*)(\()?|\[([^\[\]]*)\]")


def segments(tail: str) -> list[str | None]:
    """The fields a Jinja access reads, in order; None for a subscript by an expression (a host name, an index),
    which stays at the same level of RETURN; a method call (.split(...)) ends it."""
    out: list[str | None] = []
    for found in SEGMENT.finditer(tail):
        field, call, subscript = found.groups()
        if call:
            break
        if field:
            out.append(field)
        elif re.fullmatch(r"\s*(['\"])(\w+)\1\s*", subscript):
            out.append(re.fullmatch(r"\s*(['\"])(\w+)\1\s*", subscript).group(2))  # type: ignore[union-attr]
        else:
            out.append(None)
    return out


def reads(name: str, prefix: list[str | None], texts: dict[str, str]) -> Iterator[tuple[str, int, list[str | None]]]:
    """(file, line, fields) of every `name.field...` in the texts, after the fields `name` stands for."""
    access = re.compile(rf"(?<![\w.]){re.escape(name)}((?:\.[A-Za-z_]\w*\(?|\[[^\[\]]*\])+)")
    for where, text in texts.items():
        for found in access.finditer(text):
            yield where, text.count("\n", 0, found.start()) + 1, prefix + segments(found.group(1))


def registered(names: set[str], texts: dict[str, str]) -> dict[str, list[tuple[str, list[str | None]]]]:
    """Variable -> [(module, fields of its result it stands for)]: every `register:` of a task calling a module
    of `names`, and every variable set (set_fact, vars) to exactly one access of such a result."""
    found: dict[str, list[tuple[str, list[str | None]]]] = {}
    for _, document in yaml_documents(texts):
        for task in mappings(document):
            called = [n for n in names for key in task if key == n or key.endswith(f".{n}")]
            if called and isinstance(task.get("register"), str):
                sources = found.setdefault(task["register"], [])
                sources += [(n, []) for n in called if (n, []) not in sources]
    variables = list(assignments(texts))
    for _ in range(5):  # aliases of aliases
        for key, value in variables:
            if not isinstance(key, str) or key in found or not isinstance(value, str):
                continue
            whole = re.fullmatch(r"\s*\{\{\s*([A-Za-z_]\w*)((?:\.[A-Za-z_]\w*|\[[^\[\]]*\])*)\s*\}\}\s*", value)
            if whole and whole.group(1) in found:
                found[key] = [(module, fields + segments(whole.group(2))) for module, fields in found[whole.group(1)]]
    return found


def undocumented(returns: dict[str, Any], fields: list[str | None]) -> str | None:
    """The first field read that RETURN does not document, None when all are (it descends where RETURN says
    what a value `contains`, and stops at a value whose keys it does not describe)."""
    level: dict[str, Any] | None = returns
    path: list[str] = []
    for field in fields:
        if field is None:
            continue
        if level is None:
            return None  # a free-form value (RETURN does not describe its keys) or a scalar
        if field not in level:
            return ".".join([*path, field])
        path.append(field)
        level = level[field].get("contains") if isinstance(level[field], dict) else None
    return None


def role_texts() -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text() for p in ROLE_SOURCES}


# -- the tests --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", MODULES, ids=ids)
def test_the_docs_parse_and_have_their_parts(path: Path) -> None:
    documentation, examples, returns = docs(load_module(path))
    assert documentation.get("module") == path.stem
    for key in ("short_description", "description", "options"):
        assert documentation.get(key), f"{path.stem}: DOCUMENTATION has no {key}"
    assert examples and all(isinstance(t, dict) and t.get("name") for t in examples), (
        f"{path.stem}: EXAMPLES must be a list of named tasks")

    def problems(entries: dict[str, Any], where: str, top: bool) -> Iterator[str]:
        for key, spec in entries.items():
            if not isinstance(spec, dict):
                yield f"{where}{key}: not a mapping"
                continue
            if not spec.get("description"):
                yield f"{where}{key}: no description"
            if spec.get("type") not in RETURN_TYPES:
                yield f"{where}{key}: type {spec.get('type')!r} is not one of {sorted(RETURN_TYPES)}"
            if top and not spec.get("returned"):
                yield f"{where}{key}: no `returned` (when it is returned)"
            if spec.get("type") == "list" and not spec.get("elements"):
                yield f"{where}{key}: a list without `elements`"
            if spec.get("contains"):
                yield from problems(spec["contains"], f"{where}{key}.", top=False)

    assert not list(problems(returns, "", top=True)), f"{path.stem}: RETURN: {list(problems(returns, '', True))}"


@pytest.mark.parametrize("path", MODULES, ids=ids)
def test_the_documented_options_are_the_argument_spec(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = load_module(path)
    spec = module_kwargs(module, monkeypatch)["argument_spec"]
    documentation, _, _ = docs(module)
    differences = list(spec_differences(documentation["options"], spec))
    assert not differences, f"{path.stem}: DOCUMENTATION and argument_spec differ:\n  " + "\n  ".join(differences)


@pytest.mark.parametrize("path", MODULES, ids=ids)
def test_every_example_passes_validation_against_the_documented_options(
        path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = load_module(path)
    kwargs = module_kwargs(module, monkeypatch)
    documentation, examples, _ = docs(module)
    options = documentation["options"]
    validator = ArgumentSpecValidator(spec_of(options), **{k: kwargs[k] for k in CONSTRAINTS if k in kwargs})
    calls = calls_of(path.stem, examples)
    assert calls, f"{path.stem}: no example calls the module"
    errors = []
    for task, args in calls:
        params = {k: untemplated(v, options.get(k, {})) for k, v in args.items()}
        errors += [f"{task!r}: {type(e).__name__}: {e}" for e in validator.validate(params).errors]
    assert not errors, f"{path.stem}: EXAMPLES that the documented options refuse:\n  " + "\n  ".join(errors)


def unread(module: str, returns: dict[str, Any], texts: dict[str, str]) -> Iterator[str]:
    """Where the texts read a field of a result `module` registered that its RETURN does not document."""
    for variable, sources in registered({p.stem for p in MODULES}, texts).items():
        for module_name, prefix in sources:
            if module_name != module:
                continue
            for where, line, fields in reads(variable, prefix, texts):
                first = next((f for f in fields if f is not None), None)
                if first is None or (first in COMMON_KEYS and not prefix):
                    continue
                field = undocumented(returns, fields)
                if field:
                    yield f"{where}:{line}: {variable} reads {field}"


@pytest.mark.parametrize("path", MODULES, ids=ids)
def test_return_documents_every_field_the_roles_read(path: Path) -> None:
    module = load_module(path)
    _, _, returns = docs(module)
    # The roles, and apart from them the module's own EXAMPLES (their registered results are read the same way).
    missing = [*unread(path.stem, returns, role_texts()),
               *unread(path.stem, returns, {f"{path.stem} EXAMPLES.yml": module.EXAMPLES})]
    assert not missing, f"{path.stem}: RETURN does not document what is read:\n  " + "\n  ".join(missing)


def test_the_roles_register_the_modules_results() -> None:
    """The scan above finds something to check: the roles register results of the modules and read them."""
    found = registered({p.stem for p in MODULES}, role_texts())
    modules = {module for sources in found.values() for module, _ in sources}
    assert {"pi_kiosk_gate", "pi_kiosk_switch", "pi_kiosk_wheelhouse", "sysfs_attribute"} <= modules, found
    assert any(reads(variable, [], role_texts()) for variable in found)


def test_ansible_doc_reads_every_module() -> None:
    """Ansible's own parser (doc fragments, markup) loads every module's DOCUMENTATION, EXAMPLES and RETURN."""
    paths = ":".join(sorted({str(p.parent) for p in MODULES}))
    proc = subprocess.run([BIN / "ansible-doc", "--json", "-t", "module", "-M", paths, *(p.stem for p in MODULES)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout)
    broken = [p.stem for p in MODULES if not (loaded.get(p.stem) or {}).get("doc") or not loaded[p.stem].get("return")]
    assert not broken, f"ansible-doc cannot read the docs of {broken}: {proc.stderr}"

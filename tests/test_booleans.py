"""Boolean role inputs work however they are given: `-e name=true` and a quoted inventory value are
strings, which ansible-core 2.19 refuses as conditionals (and which are always true in a Jinja
`if`). Every role reads each bool-typed input through `| bool`, which accepts what the argument
spec accepts (true/false, yes/no, on/off, 1/0, in any case)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from jinja2 import Environment, nodes

from conftest import ROOT

ROLES = sorted(p for p in (ROOT / "roles").iterdir() if p.is_dir())
# Keys whose string values are bare Jinja expressions, not templates.
EXPRESSION_KEYS = {"when", "that", "failed_when", "changed_when", "until"}
JINJA = Environment()


def bool_inputs(role: Path) -> set[str]:
    specs = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]
    return {name for entry in specs.values() for name, spec in entry.get("options", {}).items()
            if spec.get("type") == "bool"}


def expressions(node: Any, key: str = "") -> Iterator[str]:
    """Every Jinja template in a YAML document, bare expressions wrapped as templates."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from expressions(v, str(k))
    elif isinstance(node, list):
        for item in node:
            yield from expressions(item, key)
    elif isinstance(node, str):
        if key in EXPRESSION_KEYS:
            yield "{{ " + node + " }}"
        elif "{{" in node or "{%" in node:
            yield node
    elif isinstance(node, bool) and key in EXPRESSION_KEYS:
        return


def unconverted(template: str, names: set[str]) -> list[str]:
    """Names among `names` read in the template other than as the operand of `| bool`."""
    tree = JINJA.parse(template)
    converted = {id(f.node) for f in tree.find_all(nodes.Filter) if f.name == "bool"}
    return [n.name for n in tree.find_all(nodes.Name)
            if n.name in names and n.ctx == "load" and id(n) not in converted]


def role_templates(role: Path) -> Iterator[tuple[Path, str]]:
    for path in sorted(role.rglob("*")):
        rel = path.relative_to(role)
        if not path.is_file() or rel.parts[0] in ("defaults", "meta"):
            continue
        if path.suffix == ".yml":
            for template in expressions(yaml.safe_load(path.read_text())):
                yield rel, template
        elif path.suffix == ".j2":
            yield rel, path.read_text()


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_every_bool_input_is_read_through_the_bool_filter(role: Path) -> None:
    names = bool_inputs(role)
    problems = [f"{rel}: {name} in {template.strip()[:160]!r}"
                for rel, template in role_templates(role) for name in unconverted(template, names)]
    assert not problems, "read these with `| bool`:\n" + "\n".join(problems)


def test_the_check_finds_a_bare_boolean() -> None:
    names = {"pi_x_enabled"}
    assert unconverted("{{ pi_x_enabled }}", names) == ["pi_x_enabled"]
    assert unconverted("{{ 'a' if not pi_x_enabled else 'b' }}", names) == ["pi_x_enabled"]
    assert unconverted("{{ pi_x_enabled | bool and other }}", names) == []
    assert unconverted("{{ 'pi_x_enabled=false' }}", names) == []
    doc = yaml.safe_load("- name: t\n  when: pi_x_enabled\n  debug: {msg: '{{ pi_x_enabled | bool }}'}\n")
    found = [name for template in expressions(doc) for name in unconverted(template, names)]
    assert found == ["pi_x_enabled"]

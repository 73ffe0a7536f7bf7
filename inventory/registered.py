#!/usr/bin/env python3
"""Ansible inventory of the Pis that registered themselves with the attendance server at first boot.

    export PI_FLEET_SERVER_URL=https://attendance.example.com PI_FLEET_SERVER_TOKEN=<the server's admin token>
    ansible-inventory -i inventory/registered.py --graph
    ansible-playbook -i inventory/<site> -i inventory/registered.py site.yml

Reads `GET /api/registrations` (playbooks/firstboot.yml makes each new Pi `POST /api/register`). Each Pi is in
"kiosks" and in its board group (pi5, pi4, pi3, pizero2, pizero), found from its revision code by the same code and
table pi_facts checks it with on the Pi; a board no group takes (a Pi 1 or 2) is in "registered_unsupported" only.
Host variables: ansible_host (the address it registered from), pi_registered_serial, pi_registered_model and
pi_registered_host_key (its SSH host key, for known_hosts). Give your site's directory as a second -i for its
group_vars. AWX: a project inventory source with this file, the two variables from a custom credential.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_SECONDS = 30


@functools.cache
def pi_board() -> Any:
    """pi_facts' own filter that names a board from /proc/cpuinfo and the device-tree model."""
    spec = importlib.util.spec_from_file_location("pi_board", ROOT / "plugins/filter/pi_board.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.pi_board


def pi_board_family(revision: str, model: str) -> str:
    """The board family ("pi4", "zero2w", ...) of a revision code (the model when the code is an old one)."""
    family: str = pi_board()(f"Revision\t: {revision}\n", model)["family"]
    return family


def board_groups() -> dict[str, str]:
    """Board family -> inventory board group, from pi_facts' defaults (pi_facts_board_groups)."""
    defaults = yaml.safe_load((ROOT / "roles/pi_facts/defaults/main.yml").read_text())
    return {family: group for group, families in defaults["pi_facts_board_groups"].items() for family in families}


def fetch(url: str, token: str) -> list[dict[str, Any]]:
    request = urllib.request.Request(f"{url.rstrip('/')}/api/registrations",
                                     headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as answer:
            registrations: list[dict[str, Any]] = json.load(answer)["registrations"]
    except urllib.error.HTTPError as exc:
        hint = " (PI_FLEET_SERVER_TOKEN must be the admin token)" if exc.code in (401, 403) else ""
        raise SystemExit(f"{url}/api/registrations answered {exc.code} {exc.reason}{hint}") from None
    except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"cannot read the registrations from {url}/api/registrations: {exc}") from None
    return registrations


def inventory(registrations: list[dict[str, Any]]) -> dict[str, Any]:
    groups = board_groups()
    members: dict[str, list[str]] = {}
    hostvars = {}
    for pi in registrations:
        group = groups.get(pi_board_family(pi["revision"], pi["model"]), "registered_unsupported")
        members.setdefault(group, []).append(pi["hostname"])
        hostvars[pi["hostname"]] = {"ansible_host": pi["address"], "pi_registered_serial": pi["serial"],
                                    "pi_registered_model": pi["model"], "pi_registered_host_key": pi.get("host_key")}
    found: dict[str, Any] = {group: {"hosts": sorted(hosts)} for group, hosts in members.items()}
    found["kiosks"] = {"children": sorted(g for g in members if g != "registered_unsupported")}
    found["_meta"] = {"hostvars": hostvars}
    return found


def main(argv: list[str]) -> None:
    if argv[1:2] == ["--host"]:
        print("{}")  # every host's variables are in --list's _meta
        return
    if argv[1:] != ["--list"]:
        raise SystemExit(f"usage: {argv[0]} --list | --host NAME")
    url, token = os.environ.get("PI_FLEET_SERVER_URL", ""), os.environ.get("PI_FLEET_SERVER_TOKEN", "")
    if not url.startswith(("http://", "https://")) or not token:
        raise SystemExit("set PI_FLEET_SERVER_URL (the attendance server, http:// or https://) and "
                         "PI_FLEET_SERVER_TOKEN (its admin token) to read the registered Pis")
    print(json.dumps(inventory(fetch(url, token)), indent=2, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv)

"""The emulated Pis' connection: containers.podman.podman with pipelining.

Without pipelining every module costs four or five `podman exec` calls (make a temporary directory,
copy the module in, chmod it, run it, remove it), each starting an emulated shell and an emulated
sudo under qemu. With pipelining the module goes to the Pi's Python on stdin (`podman exec -i`): one
call, as over ssh with the project's `pipelining = true` on a real fleet.
"""
from __future__ import annotations

DOCUMENTATION = r"""
name: testbed_podman
short_description: Run commands in the test bed's podman containers, with pipelining
description:
  - containers.podman.podman, whose C(exec) also passes stdin (C(podman exec -i)), so that Ansible
    pipelines modules instead of copying them into the container.
author: pi-fleet
options:
  remote_addr:
    description: The container.
    default: inventory_hostname
    vars:
      - name: ansible_host
      - name: inventory_hostname
      - name: ansible_podman_host
  remote_user:
    description: User to run commands as inside the container.
    ini:
      - section: defaults
        key: remote_user
    env:
      - name: ANSIBLE_REMOTE_USER
    vars:
      - name: ansible_user
  podman_extra_args:
    description: Extra arguments to the podman command line.
    default: ""
    vars:
      - name: ansible_podman_extra_args
    env:
      - name: ANSIBLE_PODMAN_EXTRA_ARGS
  podman_executable:
    description: The podman executable.
    default: podman
    vars:
      - name: ansible_podman_executable
    env:
      - name: ANSIBLE_PODMAN_EXECUTABLE
  pipelining:
    description: Send modules on stdin instead of copying them into the container.
    type: bool
    default: true
    env:
      - name: ANSIBLE_PIPELINING
    vars:
      - name: ansible_pipelining
"""

import re
import shlex

from ansible.errors import AnsibleConnectionFailure
from ansible.module_utils.common.text.converters import to_native
from ansible_collections.containers.podman.plugins.connection.podman import Connection as PodmanConnection

NOT_RUNNING = re.compile(rb"state improper|is not running|is paused|no such container", re.IGNORECASE)


class Connection(PodmanConnection):
    transport = "pi_fleet.kiosk.testbed_podman"
    has_pipelining = True

    def exec_command(self, cmd: str, in_data: bytes | None = None, sudoable: bool = False) -> tuple[int, bytes, bytes]:
        # The grandparent's bookkeeping; the parent's exec would drop in_data (no -i).
        super(PodmanConnection, self).exec_command(cmd, in_data=in_data, sudoable=sudoable)
        args = ["exec", "-i"] if in_data else ["exec"]
        if self.user:
            args.extend(("--user", self.user))
        rc, stdout, stderr = self._podman(args, shlex.split(to_native(cmd, errors="surrogate_or_strict")), in_data)
        # podman's own error (exit 125, or 255 for a paused container in podman 4) for a container that is
        # stopped, paused or gone: a Pi that is off or cut off, which SSH would report as unreachable (the
        # rollout counts it as such).
        if rc in (125, 255) and NOT_RUNNING.search(stderr):
            raise AnsibleConnectionFailure(f"the emulated Pi {self._container_id} is not running: "
                                           f"{to_native(stderr).strip()}")
        return rc, stdout, stderr

"""A throwaway PostgreSQL cluster on a free port of 127.0.0.1, for the server's tests (tests/conftest.py) and its
load benchmark (benchmarks/load.py): initdb and pg_ctl in a temporary directory, stopped and removed at the end.
Not used by the server itself; here so that both start a cluster the one same way.

It needs Debian's PostgreSQL server programs (`apt-get install postgresql`, which scripts/testbed-setup installs),
found in PI_FLEET_PG_BINDIR, on the PATH, or in Debian's newest /usr/lib/postgresql/<version>/bin."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

USER = "fleet"
PASSWORD = "pg-test-password"  # the cluster's TCP logins take a password (scram): the server's must get there
INSTALL = ("PostgreSQL's server programs (initdb, pg_ctl) are needed: install them with `apt-get install postgresql` "
           "(scripts/testbed-setup does), or set PI_FLEET_PG_BINDIR to the directory that holds them")


@dataclass(frozen=True)
class Cluster:
    url: str  # its `postgres` database, as the user who may create databases
    data: Path  # its data directory

    def pid(self) -> int:
        """The postmaster's process id (the first line of its postmaster.pid)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])


class ClusterError(Exception):
    """No cluster could be started; the message says what to install or what went wrong."""


def bindir() -> Path:
    """PI_FLEET_PG_BINDIR, else initdb on the PATH, else Debian's newest /usr/lib/postgresql/<version>/bin."""
    if os.environ.get("PI_FLEET_PG_BINDIR"):
        return Path(os.environ["PI_FLEET_PG_BINDIR"])
    found = shutil.which("initdb") or max(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                                          key=lambda p: int(Path(p).parts[-3]), default=None)
    if found is None:
        raise ClusterError(INSTALL)
    return Path(found).parent


@contextmanager
def throwaway_cluster(max_connections: int = 300, durable: bool = False) -> Iterator[Cluster]:
    """A cluster of its own, on a free port of 127.0.0.1. initdb refuses root, so as root it runs as the `postgres`
    user Debian's package creates. Not `durable` (the tests: durability is not what they test), it neither syncs
    nor waits for the disk, and is quicker; `durable`, it commits as a production server does (the load
    benchmark, whose figures must not flatter PostgreSQL against SQLite, which syncs each commit)."""
    programs = bindir()
    if not (programs / "initdb").is_file() or not (programs / "pg_ctl").is_file():
        raise ClusterError(f"no initdb or pg_ctl in {programs}. {INSTALL}")
    as_user: list[str] = []
    top = Path(tempfile.mkdtemp(prefix="pi-fleet-pg-"))
    try:
        if os.getuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise ClusterError(f"initdb refuses root and there is no postgres user to run it as. {INSTALL}"
                                   ) from None
            as_user = ["runuser", "-u", "postgres", "--"]
            os.chown(top, owner.pw_uid, owner.pw_gid)
        data, password = top / "data", top / "password"
        run = [*as_user, "env", f"PATH={programs}:/usr/bin:/bin"]
        subprocess.run([*run, "sh", "-c", f"umask 077 && echo {PASSWORD} >{password}"], check=True)
        made = subprocess.run([*run, "initdb", "-D", str(data), "-U", USER, f"--pwfile={password}",
                               "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"],
                              capture_output=True, text=True)
        if made.returncode != 0:
            raise ClusterError(f"initdb failed: {made.stdout}{made.stderr}")
        with socket.socket() as s:  # a free port (the kernel's pick), let go for the cluster to take
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        options = (f"-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={top} "
                   f"-c max_connections={max_connections}")
        if not durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        started = subprocess.run([*run, "pg_ctl", "start", "-w", "-D", str(data), "-l", str(top / "log"),
                                  "-o", options], capture_output=True, text=True)
        try:
            if started.returncode != 0:
                log = (top / "log").read_text() if (top / "log").exists() else ""
                raise ClusterError(f"pg_ctl start failed: {started.stdout}{started.stderr}{log}")
            yield Cluster(f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/postgres", data)
        finally:
            subprocess.run([*run, "pg_ctl", "stop", "-D", str(data), "-m", "immediate"], capture_output=True)
    finally:
        shutil.rmtree(top, ignore_errors=True)

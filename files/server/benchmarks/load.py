"""Load test: the traffic of a fleet of kiosks against the reference server, on loopback, in one bounded run.

    python files/server/benchmarks/load.py [--kiosks 10000] [--minutes 2] [--database sqlite|postgresql]
                                            [--processes 1] [--report load.json]

Starts its own server on a fresh database (a SQLite file, or a throwaway PostgreSQL cluster:
attendance_server.pg_cluster, as the tests start theirs) with a generated settings file of `--kiosks` kiosk tokens,
enrols a gallery (`--gallery` people, one `--dim` embedding each), then sends, open-loop (each request at its time
whether or not earlier ones were answered, so latency under overload is measured from when the kiosk would have
sent, not from when the client got round to it):

- heartbeats: each kiosk one every `--heartbeat-interval` s (60, the kiosks' default), at a phase of its own, the
  body pi-kiosk's heartbeat.py sends;
- gallery syncs: each kiosk's GET /api/employees/embeddings?model=<sha256> every `--sync-interval` s (300, the
  kiosks' default) with the ETag it holds (a 304), but `--fresh-syncs` of them without it (a kiosk that lost its
  cache, or the gallery changed: the whole gallery);
- the 9 a.m. burst: `--burst-kiosks` kiosks (5,000) each post `--events-per-kiosk` attendance events (2) at times
  spread over `--burst-seconds` (60) in the middle of the run, as the kiosk's outbox posts them
  ({"E1", "S1", "TS1"} and a fresh Idempotency-Key each).

Events that got no 2xx are then sent again with the same key, as the kiosk's outbox would, and the database is read:
every event sent must be stored exactly once (no key missing, none twice, nothing else). Exit status 1 when not.

Prints per kind the rate asked and achieved, latency p50/p99/max (from each request's scheduled time), errors by
status, requests the generator sent late, and the CPU of the client, the server processes, PostgreSQL and the whole
machine over the run: on a small machine the client shares the cores with the server, and the figures say how much
it took. With `--processes K` (PostgreSQL only: SQLite is one server process's database) K `pi-fleet-server serve`
processes listen on K ports and kiosk n talks to port n mod K, as a proxy spreading the kiosks' connections evenly
would. One client process (uvloop when installed), HTTP/1.1 keep-alive over `--connections` connections (a small
client of its own on asyncio's streams: see Connection), each kiosk's requests queued for its server's connections.

Needs the server importable (installed, or files/server/src on PYTHONPATH: its processes inherit the environment),
with the postgresql extra and Debian's PostgreSQL server programs for `--database postgresql`.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import random
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from attendance_server import pg_cluster
from attendance_server.store import Store

KINDS = ("heartbeat", "sync", "event")
OK = {"heartbeat": {204}, "sync": {200, 304}, "event": {201}}
LATE_SECONDS = 0.010  # a request sent this much after its time counts as late: the generator fell behind
START_SECONDS = 60.0  # for each server process to answer /healthz
RESENDS = 5  # attempts per event after the run, as the kiosk's outbox retries (with the same key)
RESEND_SECONDS = 120.0  # the resends' bound: an event not taken by then is reported, not waited for
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(slots=True)
class Request:
    at: float  # seconds from the run's start
    kind: str
    kiosk: int
    key: str = ""  # an event's Idempotency-Key
    body: bytes = b""  # an event's body: the same on every attempt (the server refuses a key reused for another)
    fresh: bool = False  # a sync without the ETag
    taken: bool = False  # an event the server answered 201 in the run: recorded


@dataclass
class Fleet:
    """What the client knows: the kiosks' tokens, the servers' base URLs, the admin token, the gallery."""
    tokens: list[str]
    urls: list[str]
    admin: str
    model: str
    employees: list[str]
    etag: str = ""

    def gallery_target(self) -> str:
        return f"/api/employees/embeddings?model={self.model}"


@dataclass
class Outcome:
    """Each answered (or failed) request of one kind: latency from its scheduled time, status or error name."""
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    first_at: float = math.inf
    last_done: float = 0.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kiosks", type=int, default=10_000, help="kiosks in the fleet (default: %(default)s)")
    p.add_argument("--minutes", type=float, default=2.0, help="simulated time, at real rate (default: %(default)s)")
    p.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    p.add_argument("--processes", type=int, default=1, help="server processes (PostgreSQL; default: %(default)s)")
    p.add_argument("--heartbeat-interval", type=float, default=60.0, help="seconds (default: %(default)s)")
    p.add_argument("--sync-interval", type=float, default=300.0, help="seconds (default: %(default)s)")
    p.add_argument("--fresh-syncs", type=float, default=0.01,
                   help="share of syncs without the ETag: the whole gallery (default: %(default)s)")
    p.add_argument("--burst-kiosks", type=int, default=5_000, help="kiosks in the burst (default: %(default)s)")
    p.add_argument("--events-per-kiosk", type=int, default=2, help="(default: %(default)s)")
    p.add_argument("--burst-seconds", type=float, default=60.0, help="the burst's length (default: %(default)s)")
    p.add_argument("--gallery", type=int, default=200, help="people enrolled (default: %(default)s)")
    p.add_argument("--dim", type=int, default=128, help="embedding length (default: %(default)s)")
    p.add_argument("--connections", type=int, default=256, help="the client's connections (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=10.0, help="per request, seconds (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1, help="for the kiosks' phases and the burst (default: %(default)s)")
    p.add_argument("--report", type=Path, help="also write the figures here as JSON")
    args = p.parse_args(argv)
    duration = args.minutes * 60
    problems = [
        (args.kiosks < 1, "--kiosks must be at least 1"),
        (duration <= 0, "--minutes must be positive"),
        (args.processes < 1, "--processes must be at least 1"),
        (args.processes > 1 and args.database != "postgresql",
         "--processes above 1 needs --database postgresql (SQLite is one server process's database)"),
        (not 0 <= args.burst_kiosks <= args.kiosks, "--burst-kiosks must be from 0 to --kiosks"),
        (not 0 < args.burst_seconds <= duration, "--burst-seconds must be positive and fit in --minutes"),
        (args.heartbeat_interval <= 0 or args.sync_interval <= 0, "the intervals must be positive"),
        (not 0 <= args.fresh_syncs <= 1, "--fresh-syncs is a share, from 0 to 1"),
        (args.gallery < 1 or args.dim < 1, "--gallery and --dim must be at least 1"),
        (args.connections < 1 or args.timeout <= 0, "--connections and --timeout must be positive"),
    ]
    for bad, message in problems:
        if bad:
            p.error(message)
    return args


def free_port() -> int:
    with socket.socket() as s:  # the kernel's pick, let go for the server to take
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_settings(path: Path, database: str, admin: str, tokens: list[str]) -> None:
    """The server's settings: mode 600 from the start (the server refuses a file others may read)."""
    lines = [f"database = {json.dumps(database)}", f'admin_token = "{admin}"', "[kiosks]"]
    lines += [f'kiosk-{n:05d} = "{token}"' for n, token in enumerate(tokens)]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")


@contextlib.contextmanager
def servers(settings: Path, count: int, logs: Path) -> Iterator[tuple[list[str], list[subprocess.Popen[bytes]]]]:
    """`count` server processes as an operator starts them, each on a port of its own; their base URLs and
    processes. Their access logs go to files in `logs` (the server logs every request: part of what it costs)."""
    procs: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    try:
        for n in range(count):
            port = free_port()
            with open(logs / f"server-{n}.log", "wb") as log:
                procs.append(subprocess.Popen([sys.executable, "-m", "attendance_server", "serve", "--config",
                                               str(settings), "--port", str(port)], stdout=log, stderr=log))
            urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + START_SECONDS
        for n, (url, proc) in enumerate(zip(urls, procs, strict=True)):
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"load: server {n} exited ({proc.returncode}):\n"
                                     + (logs / f"server-{n}.log").read_text()[-3000:])
                with contextlib.suppress(OSError), urllib.request.urlopen(url + "/healthz", timeout=1) as answer:
                    if answer.status == 200:
                        break
                if time.monotonic() > deadline:
                    raise SystemExit(f"load: server {n} did not answer {url}/healthz within {START_SECONDS:g} s")
                time.sleep(0.2)
        yield urls, procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# CPU time, in seconds, from /proc: the server processes and PostgreSQL are not this process's children to getrusage.

def process_cpu(pid: int, children: bool = False) -> float:
    """A process's user + system time (with `children`, also that of its children it has reaped)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    used = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if children else 0)
    return used / TICKS


def cluster_cpu(postmaster: int) -> float:
    """PostgreSQL's: the postmaster, its live backends, and the backends that have exited (reaped by it)."""
    total = process_cpu(postmaster, children=True)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[1]) == postmaster:
                total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def machine_busy() -> tuple[float, float]:
    """The whole machine's busy and total time in ticks (/proc/stat, all cores)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(values[:8])  # guest time is counted within user time already
    return total - values[3] - values[4], total  # idle, iowait


def client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def schedule(args: argparse.Namespace, fleet: Fleet) -> list[Request]:
    """Every request of the run, in time order: each kiosk's heartbeats and syncs at a phase of its own, and the
    burst's events spread over its window in the middle of the run."""
    rng = random.Random(args.seed)
    duration = args.minutes * 60
    plan: list[Request] = []
    for kind, interval in (("heartbeat", args.heartbeat_interval), ("sync", args.sync_interval)):
        for kiosk in range(args.kiosks):
            at = rng.uniform(0, interval)
            while at < duration:
                plan.append(Request(at, kind, kiosk, fresh=kind == "sync" and rng.random() < args.fresh_syncs))
                at += interval
    start = (duration - args.burst_seconds) / 2
    wall = datetime.now().astimezone()  # TS1: the kiosk's local time with its offset, to the second (outbox.py)
    for kiosk in rng.sample(range(args.kiosks), args.burst_kiosks):
        for _ in range(args.events_per_kiosk):
            at = start + rng.uniform(0, args.burst_seconds)
            body = {"E1": rng.choice(fleet.employees), "S1": "IN",
                    "TS1": (wall + timedelta(seconds=at)).isoformat(timespec="seconds")}
            plan.append(Request(at, "event", kiosk, str(uuid.uuid4()), json.dumps(body).encode()))
    plan.sort(key=lambda r: r.at)
    return plan


def heartbeat_body(fleet: Fleet, kiosk: int) -> bytes:
    """What pi-kiosk's Heartbeat.body() sends from a healthy kiosk: the same keys, plausible values."""
    return json.dumps({
        "release": "0.1.0-3f2a9c1e", "version": "0.1.0", "model_sha256": fleet.model, "status": "ok", "reason": "",
        "camera": "ok", "camera_problem": "", "clock_synchronized": True, "clock_waiting_events": 0,
        "outbox_depth": 0, "outbox_rejected": 0, "seconds_since_last_frame": 0.1, "temperature_celsius": 52.6,
        "throttled": 0, "sent_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "boot_id": f"{kiosk:032x}", "boot_seconds": round(time.monotonic(), 3),
    }).encode()


class Connection:
    """One keep-alive HTTP/1.1 connection to a server, opened when first used and again after a failure. The load's
    own client, not httpx's: httpx2's pool looks at every connection for each request it places, which at a few
    hundred connections was most of the client's CPU (profiled), and the client shares the machine with the server.
    It reads what this server answers: a Content-Length body, a chunked one, or none (204, 304)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.answered = False  # the last exchange read an answer's head

    async def request(self, method: str, target: str, headers: dict[str, str],
                      body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        """The answer's status, headers (names in lower case) and body. As HTTP clients do, a connection the server
        closed while it was idle (uvicorn does after 5 s) is not used, and a request that met such a close as it
        went out (nothing of an answer read: an end of stream, or a reset when the close raced the request) is sent
        once more on a new connection: the server never answered it (and an event's Idempotency-Key makes a second
        copy harmless)."""
        if self.streams is not None and self.streams[0].at_eof():
            self.close()
        reused = self.streams is not None
        try:
            return await self.exchange(method, target, headers, body)
        except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError):
            if not reused or self.answered:
                raise
        return await self.exchange(method, target, headers, body)

    async def exchange(self, method: str, target: str, headers: dict[str, str],
                       body: bytes) -> tuple[int, dict[str, str], bytes]:
        try:
            if self.streams is None:
                self.streams = await asyncio.open_connection(self.host, self.port)
            reader, writer = self.streams
            lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host}:{self.port}",
                     *(f"{name}: {value}" for name, value in headers.items())]
            if body or method == "POST":
                lines.append(f"Content-Length: {len(body)}")
            self.answered = False
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            self.answered = True
            status = int(head[0].split(" ", 2)[1])
            answer = {name.strip().lower(): value.strip() for name, _, value in
                      (line.partition(":") for line in head[1:] if line)}
            content = b""
            if status in (204, 304):
                pass
            elif "content-length" in answer:
                content = await reader.readexactly(int(answer["content-length"]))
            elif answer.get("transfer-encoding") == "chunked":
                while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                    content += (await reader.readexactly(size + 2))[:-2]
                await reader.readuntil(b"\r\n")  # the empty trailer
            else:
                raise ConnectionError(f"{status} answer with neither Content-Length nor chunks")
            if answer.get("connection") == "close":
                self.close()
            return status, answer, content
        except BaseException:  # a timeout or failure halfway leaves the connection in no known state
            self.close()
            raise

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def send(connection: Connection, fleet: Fleet, r: Request) -> str:
    """One request as the kiosk makes it; its status."""
    headers = {"Authorization": f"Bearer {fleet.tokens[r.kiosk]}"}
    if r.kind == "heartbeat":
        headers["Content-Type"] = "application/json"
        status, _, _ = await connection.request("POST", "/api/kiosk/heartbeat", headers,
                                                heartbeat_body(fleet, r.kiosk))
    elif r.kind == "event":
        headers |= {"Content-Type": "application/json", "Idempotency-Key": r.key}
        status, _, _ = await connection.request("POST", "/toon/attendance", headers, r.body)
    else:
        if not r.fresh:
            headers["If-None-Match"] = fleet.etag
        status, _, _ = await connection.request("GET", fleet.gallery_target(), headers)
    return str(status)


class Client:
    """`connections` kept-alive connections spread over the servers, each a worker that takes the next request for its
    server from a queue: the requests are put there at their time, whether or not the earlier ones were answered.
    A request answered after its deadline, or not taken from the queue by then, is a timeout (its connection is
    closed, as a kiosk's would be); `done(request, status, at)` is told each outcome."""

    def __init__(self, fleet: Fleet, connections: int, timeout: float,
                 done: Callable[[Request, str, float], None]) -> None:
        self.fleet, self.timeout, self.done = fleet, timeout, done
        self.queues: list[asyncio.Queue[tuple[Request, float | None]]] = [asyncio.Queue() for _ in fleet.urls]
        self.workers = [asyncio.create_task(self.work(Connection(fleet.urls[n % len(fleet.urls)]),
                                                      self.queues[n % len(fleet.urls)]))
                        for n in range(max(connections, len(fleet.urls)))]

    def submit(self, r: Request, due: float | None) -> None:
        """`due`: when the kiosk sent it (the deadline counts from then); None: when a connection takes it."""
        self.queues[r.kiosk % len(self.queues)].put_nowait((r, due))

    async def work(self, connection: Connection, queue: asyncio.Queue[tuple[Request, float | None]]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            r, due = await queue.get()
            deadline = (loop.time() if due is None else due) + self.timeout
            try:
                if loop.time() >= deadline:
                    status = "timeout"
                else:
                    async with asyncio.timeout_at(deadline):
                        status = await send(connection, self.fleet, r)
            except TimeoutError:
                status = "timeout"
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                status = type(exc).__name__
            self.done(r, status, loop.time())
            queue.task_done()

    async def drain(self) -> None:
        """Until every request submitted has its outcome: at most the timeout after the last was submitted."""
        for queue in self.queues:
            await queue.join()

    async def close(self) -> None:
        for worker in self.workers:
            worker.cancel()
        await asyncio.gather(*self.workers, return_exceptions=True)


async def enrol(fleet: Fleet, dim: int, seed: int) -> None:
    """The gallery: one unit-length embedding per person, then its ETag as every kiosk holds it after a sync."""
    rng = random.Random(seed)
    admin = {"Authorization": f"Bearer {fleet.admin}", "Content-Type": "application/json"}
    connection = Connection(fleet.urls[0])
    try:
        for employee in fleet.employees:
            vector = [rng.gauss(0, 1) for _ in range(dim)]
            norm = math.sqrt(sum(x * x for x in vector))
            body = {"model": fleet.model, "embeddings": [[x / norm for x in vector]], "name": f"Person {employee}"}
            status, _, answer = await connection.request("POST", f"/api/employees/{employee}/embeddings", admin,
                                                         json.dumps(body).encode())
            if status != 201:
                raise SystemExit(f"load: enrolling {employee}: {status} {answer[:300]!r}")
        status, headers, answer = await connection.request("GET", fleet.gallery_target(), admin)
    finally:
        connection.close()
    if status != 200 or len(json.loads(answer)["employees"]) != len(fleet.employees):
        raise SystemExit(f"load: the gallery is not what was enrolled: {status} {answer[:300]!r}")
    fleet.etag = headers["etag"]


async def run(args: argparse.Namespace, fleet: Fleet, plan: list[Request]) -> tuple[dict[str, Outcome], int, float]:
    """The schedule, open-loop: each request is submitted at its time, whatever is still waiting or in flight.
    Returns the outcomes per kind, how many the generator itself submitted late, and the run's wall time."""
    outcomes = {kind: Outcome() for kind in KINDS}
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2
    late = 0

    def done(r: Request, status: str, at: float) -> None:
        outcome, due = outcomes[r.kind], start + r.at
        outcome.latencies.append(at - due)
        outcome.statuses[status] += 1
        outcome.first_at = min(outcome.first_at, due)
        outcome.last_done = max(outcome.last_done, at)
        r.taken = status == "201"

    client = Client(fleet, args.connections, args.timeout, done)
    try:
        for r in plan:
            due = start + r.at
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay > LATE_SECONDS:
                late += 1
            client.submit(r, due)
        await client.drain()
    finally:
        await client.close()
    return outcomes, late, loop.time() - start


async def resend(args: argparse.Namespace, fleet: Fleet, plan: list[Request]) -> tuple[int, Counter[str]]:
    """The events that got no 201 in the run, sent again with their keys until a 2xx, as the kiosk's outbox does
    (at most RESENDS times each, RESEND_SECONDS in all): how many were sent again, and the last answer of each
    still not taken."""
    pending = [r for r in plan if r.kind == "event" and not r.taken]
    last = {r.key: "not sent again" for r in pending}

    def done(r: Request, status: str, _: float) -> None:
        last[r.key] = status

    client = Client(fleet, min(32, args.connections), args.timeout, done)
    try:
        async with asyncio.timeout(RESEND_SECONDS):
            for attempt in range(RESENDS):
                for r in pending:
                    client.submit(r, None)
                await client.drain()
                pending = [r for r in pending if last[r.key] not in ("200", "201")]
                if not pending:
                    break
                await asyncio.sleep(2 ** attempt)
    except TimeoutError:
        pass  # what is still not taken is reported
    finally:
        await client.close()
    return len(last), Counter(status for status in last.values() if status not in ("200", "201"))


def stored_keys(database: str) -> Counter[str]:
    """Every event's key in the database, read with the server's own store (either backend)."""
    store = Store(database)
    try:
        return Counter(e.key for e in store.events(limit=None))
    finally:
        store.close()


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1)] if sorted_values else 0


def summary(args: argparse.Namespace, plan: list[Request], outcomes: dict[str, Outcome]) -> dict[str, Any]:
    duration = args.minutes * 60
    figures: dict[str, Any] = {}
    for kind in KINDS:
        o = outcomes[kind]
        asked = sum(1 for r in plan if r.kind == kind)
        span = args.burst_seconds if kind == "event" else duration  # the time the kind's requests were asked over
        ok = sum(n for status, n in o.statuses.items() if status.isdigit() and int(status) in OK[kind])
        latencies = sorted(o.latencies)
        figures[kind] = {
            "requests": asked, "asked_per_s": asked / span,
            # Answers that succeeded, over the time from the first's scheduled time to the last answer.
            "achieved_per_s": ok / (o.last_done - o.first_at) if ok else 0.0,
            "p50_ms": 1000 * percentile(latencies, 0.50), "p99_ms": 1000 * percentile(latencies, 0.99),
            "max_ms": 1000 * (latencies[-1] if latencies else 0),
            "ok": ok, "statuses": dict(sorted(o.statuses.items())),
            "errors": {s: n for s, n in sorted(o.statuses.items()) if not (s.isdigit() and int(s) in OK[kind])},
        }
    figures["sync"]["not_modified"] = outcomes["sync"].statuses.get("304", 0)
    return figures


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown CPU")
    return f"{os.cpu_count()} x {model}"


def print_report(report: dict[str, Any]) -> None:
    s = report["setup"]
    print(f"{s['kiosks']} kiosks, {s['minutes']:g} min, {s['database']}, {s['processes']} server process(es), "
          f"{s['connections']} client connections, event loop {s['loop']}; machine: {s['machine']}")
    heads = ("requests", "asked/s", "done/s", "p50 ms", "p99 ms", "max ms")
    print(f"{'kind':<10} " + " ".join(f"{h:>8}" for h in heads) + "  errors")
    for kind in KINDS:
        k = report[kind]
        errors = ", ".join(f"{s}: {n}" for s, n in k["errors"].items()) or "none"
        print(f"{kind:<10} {k['requests']:>8} {k['asked_per_s']:>8.1f} {k['achieved_per_s']:>8.1f} "
              f"{k['p50_ms']:>8.1f} {k['p99_ms']:>8.1f} {k['max_ms']:>8.1f}  {errors}")
    print(f"syncs answered 304: {report['sync']['not_modified']} of {report['sync']['requests']}; "
          f"requests sent more than {LATE_SECONDS * 1000:g} ms late by the generator: {report['late']}")
    c = report["cpu"]
    pg = f", PostgreSQL {c['postgresql']:.0%}" if c["postgresql"] is not None else ""
    print(f"CPU over the run's {c['wall_seconds']:.1f} s, in cores: client {c['client']:.0%}, "
          f"server(s) {c['servers']:.0%}{pg}; the machine's {os.cpu_count()} cores were {c['machine_busy']:.0%} busy")
    pg = (f", PostgreSQL {c['postgresql_ms_per_request']:.2f} ms" if c["postgresql_ms_per_request"] is not None
          else "")
    print(f"CPU per request: server(s) {c['server_ms_per_request']:.2f} ms{pg}")
    e = report["exactly_once"]
    verdict = "yes" if e["ok"] else "NO"
    print(f"every event stored exactly once: {verdict} ({e['stored']} stored of {e['sent']} sent; missing "
          f"{e['missing']}, duplicated {e['duplicated']}, unexpected {e['unexpected']}; sent again after the run "
          f"{e['resent']}, still not taken {e['still_failing'] or 0})")


def load(args: argparse.Namespace, database: str, postmaster: int | None, work: Path) -> dict[str, Any]:
    tokens = [f"kiosk-{n:05d}-{uuid.uuid4().hex}" for n in range(args.kiosks)]
    admin = f"admin-{uuid.uuid4().hex}"
    settings = work / "server.toml"
    write_settings(settings, database, admin, tokens)
    with servers(settings, args.processes, work) as (urls, procs):
        fleet = Fleet(tokens, urls, admin, hashlib.sha256(b"load-test model").hexdigest(),
                      [f"E{n:05d}" for n in range(args.gallery)])
        runner = asyncio.Runner(loop_factory=loop_factory())
        with runner:
            runner.run(enrol(fleet, args.dim, args.seed))
            plan = schedule(args, fleet)
            before = (client_cpu(), [process_cpu(p.pid) for p in procs],
                      cluster_cpu(postmaster) if postmaster else 0.0, machine_busy())
            outcomes, late, wall = runner.run(run(args, fleet, plan))
            after = (client_cpu(), [process_cpu(p.pid) for p in procs],
                     cluster_cpu(postmaster) if postmaster else 0.0, machine_busy())
            resent, still_failing = runner.run(resend(args, fleet, plan))
    keys = stored_keys(database)
    sent = {r.key for r in plan if r.kind == "event"}
    missing, unexpected = len(sent - keys.keys()), len(keys.keys() - sent)
    duplicated = sum(n - 1 for n in keys.values())
    busy = (after[3][0] - before[3][0]) / max(1, after[3][1] - before[3][1])
    answered = sum(sum(o.statuses.values()) for o in outcomes.values())
    server_cpu, postgresql_cpu = sum(after[1]) - sum(before[1]), after[2] - before[2]
    return {
        "setup": {"kiosks": args.kiosks, "minutes": args.minutes, "database": args.database,
                  "processes": args.processes, "connections": args.connections, "loop": loop_name(),
                  "machine": machine(), "burst_kiosks": args.burst_kiosks, "gallery": [args.gallery, args.dim]},
        **summary(args, plan, outcomes), "late": late,
        # In cores (CPU seconds per second of the run), and the servers' and PostgreSQL's CPU per request: what
        # sizes a machine for a fleet, and holds better than latency when other jobs share the cores.
        "cpu": {"wall_seconds": wall, "client": (after[0] - before[0]) / wall, "servers": server_cpu / wall,
                "postgresql": postgresql_cpu / wall if postmaster else None, "machine_busy": busy,
                "server_ms_per_request": 1000 * server_cpu / max(1, answered),
                "postgresql_ms_per_request": 1000 * postgresql_cpu / max(1, answered) if postmaster else None},
        "exactly_once": {"ok": not (missing or unexpected or duplicated),
                         "sent": len(sent), "stored": sum(keys.values()), "missing": missing,
                         "duplicated": duplicated, "unexpected": unexpected, "resent": resent,
                         "still_failing": dict(still_failing)},
    }


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when installed (a cheaper client), else asyncio's own."""
    try:
        import uvloop  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def loop_name() -> str:
    return "uvloop" if loop_factory() else "asyncio"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The client's connections and the servers' ends of them (the servers, started from here, inherit the limit).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.connections + 256)), hard))
    with tempfile.TemporaryDirectory(prefix="pi-fleet-load-") as tmp:
        work = Path(tmp)
        if args.database == "sqlite":
            report = load(args, str(work / "attendance.sqlite3"), None, work)
        else:
            try:
                with pg_cluster.throwaway_cluster(durable=True) as cluster:
                    report = load(args, cluster.url, cluster.pid(), work)
            except pg_cluster.ClusterError as exc:
                raise SystemExit(f"load: {exc}") from None
    print_report(report)
    if args.report:
        args.report.write_text(json.dumps(report, indent=1) + "\n")
    return 0 if report["exactly_once"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""The fleet report's pages, rendered by Ansible from the role's templates for a fleet of twelve kiosks (some fine,
one of each problem, long names and long problem texts) and the HTML page opened in a real headless browser
(Debian's chromium): one line per kiosk leading with its name, status, release and last heard, problems first,
no sideways scrolling on a 1280-pixel screen (kiosks closed or open), flagged facts highlighted, nothing from the
network. Screenshots (a laptop's, a phone's) are kept under .testbed/artifacts (a CI artefact) and the test's
tmp dir, whose path the test prints."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, load_module

report = load_module(ROOT / "plugins/filter/pi_report.py")
BIN = Path(sys.executable).parent
NOW = 1_800_000_000.0
FLEET = "0.3.0-c4f1e2a9b7d1"
OLD = "0.2.0-a1b2c3d4e5f6"
CANDIDATE = "0.3.1-rc1-9f8e7d6c5b4a"
WAREHOUSE = "kiosk-warehouse-north-loading-dock-entrance-2"
TURNSTILE = "kiosk-east-wing-visitor-entrance-turnstile-3"
METRICS = ('kiosk_stage_seconds_bucket{le="0.1",stage="embed"} 5.0\n'
           'kiosk_stage_seconds_bucket{le="0.25",stage="embed"} 10.0\n'
           'kiosk_stage_seconds_bucket{le="+Inf",stage="embed"} 10.0\n'
           'kiosk_stage_seconds_bucket{le="0.05",stage="detect"} 10.0\n'
           'kiosk_stage_seconds_bucket{le="+Inf",stage="detect"} 10.0\n'
           f"kiosk_outbox_depth 0.0\nkiosk_last_successful_sync_timestamp_seconds {NOW - 60}\n")
HEALTHZ = {"status": "ok", "seconds_since_last_frame": 0.4, "camera": "ok", "delivery": "ok", "outbox": "ok",
           "sync": "ok", "clock": "synchronized", "version": "0.3.0", "threads": 4}


def iso(seconds_ago: float) -> str:
    return datetime.fromtimestamp(NOW - seconds_ago, UTC).isoformat()


def heartbeat(seconds_ago: float | None, failures: int = 0, error: str = "") -> dict[str, Any]:
    return {"last_ok": None if seconds_ago is None else iso(seconds_ago), "failures": failures, "error": error}


def row(host: str, board: str = "pi4", healthz: dict[str, Any] | None = None, **kiosk: Any) -> dict[str, Any]:
    """A reachable kiosk's row as the role's 'Judge the kiosk' task makes it; healthz: the fields that differ
    from a healthy kiosk's (a heartbeat a minute ago unless given)."""
    body = {**HEALTHZ, "heartbeat": heartbeat(60), **(healthz or {})}
    if body["status"] == "no answer":  # the probe's own words: nothing of the kiosk's
        body = {key: body[key] for key in ("status", "reason")}
    probe = {"live": FLEET, "last_known_good": FLEET, "active": "active", "restarts": 0, "healthz": body,
             "metrics": METRICS, "fps": 2.0, "model_size": 5_000_000, "model_quantized": False, "exposure": 1.4,
             "throttled": "throttled=0x0", **kiosk}
    return {"host": host, "board": board, "model": f"Raspberry Pi ({board})", "reachable": True,
            "os": "Debian GNU/Linux 12 (bookworm)", "kernel": "6.6.51+rpt-rpi-v8", "governor": "performance",
            "swap": [{"name": "/dev/zram0", "type": "zram", "size_mb": 512}], "schedulers": {"mmcblk0": "mq-deadline"},
            "overclock": [], "throttled": probe["throttled"], "temperature": "temp=51.1'C",
            "arm_freq": "frequency(48)=1800000000", "uptime_s": 3 * 86400 + 7200, "load": 0.42, "kiosk": probe,
            "judged": report.kiosk_row(probe, board, False, NOW)}


# Listed in no particular order: the report puts the problems first.
ROWS = [
    row("kiosk-lobby", healthz={"heartbeat": heartbeat(125)}),
    row("kiosk-door", "pi3+", throttled="throttled=0x50005", restarts=3, live=CANDIDATE,
        healthz={"status": "stale", "reason": "no frame processed for 95 s (metrics.stale_seconds = 60)"}),
    report.row_of("kiosk-gone", {"kiosk-gone": {}}),
    # A release from before heartbeats: its /healthz has no such field.
    row("kiosk-canteen", "zero2w", live=FLEET, healthz={"heartbeat": None}),
    row(WAREHOUSE, healthz={"heartbeat": heartbeat(40)}),
    row("kiosk-lab", active="failed", restarts=5,
        healthz={"status": "no answer", "reason": "<urlopen error [Errno 111] Connection refused>"}),
    row("kiosk-gym", "pi3+", healthz={
        "status": "camera_missing", "camera": "missing",
        "reason": "camera /dev/video0 missing since 2027-01-15T08:12:03+01:00 (3 h 12 min): [Errno 2] No such "
                  "file or directory: '/dev/video0'; 41 reopen attempt(s), the next within 30 s"}),
    row("kiosk-library", healthz={
        "status": "degraded", "clock": "unsynchronized",
        "reason": "clock not synchronised for 2 h 3 min (no /run/systemd/timesync/synchronized): 4 attendance "
                  "event(s) waiting for it"}),
    row("kiosk-annex-b", metrics=METRICS.replace("kiosk_outbox_depth 0.0", "kiosk_outbox_depth 42.0\n"
                                                 "kiosk_outbox_blocked_seconds 10800.0"),
        healthz={"delivery": "auth", "heartbeat": heartbeat(3 * 3600 + 300, 37, "HTTP 401 from "
                 "https://attendance.example.org/api/v1/heartbeat: check server.token")}),
    row("kiosk-staff-room", "pi3+", healthz={
        "status": "degraded", "outbox": "disk_full",
        "reason": "disk full (database or disk is full): 12 attendance event(s) held in memory until it takes "
                  "them again (at most 1000, 0 dropped)"}),
    row(TURNSTILE, live=OLD, last_known_good=OLD),
    # Started a minute ago: no heartbeat sent yet, none failed.
    row("kiosk-reception", healthz={"heartbeat": heartbeat(None)}),
]
# What each kiosk's status says, and the facts flagged when it is opened.
EXPECTED = {
    "kiosk-annex-b": (["delivery failing", "heartbeat failing"], ["delivery", "heartbeat", "outbox"]),
    "kiosk-door": (["under-voltage", "no frames processed", "restarting", "release not committed"],
                   ["health", "release", "service", "throttled"]),
    "kiosk-gone": (["unreachable"], ["host"]),
    "kiosk-gym": (["camera missing"], ["health"]),
    "kiosk-lab": (["service failed", "restarting"], ["health", "service"]),
    "kiosk-library": (["clock not synchronised"], ["clock", "health"]),
    "kiosk-staff-room": (["disk full"], ["health", "outbox"]),
}
FINE = ["kiosk-canteen", TURNSTILE, "kiosk-lobby", "kiosk-reception", WAREHOUSE]


class Page(HTMLParser):
    """Per kiosk (data-host) in page order: its class, status chips, lead texts and titles, flagged facts."""

    def __init__(self) -> None:
        super().__init__()
        self.kiosks: dict[str, dict[str, Any]] = {}
        self.kiosk: dict[str, Any] = {}
        self.into = ""
        self.external: list[str] = []
        self.scroll_width: dict[str, int] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "details":
            self.kiosk = self.kiosks.setdefault(a["data-host"], {"class": a["class"], "chips": [], "bad": [],
                                                                 "heard": "", "title": ""})
        classes = a.get("class", "").split()
        if "data-col" in a and "bad" in classes:
            self.kiosk["bad"].append(a["data-col"])
        self.into = next((c for c in ("chip", "heard") if c in classes), self.into)
        if self.into == "heard" and "title" in a:
            self.kiosk["title"] = a["title"]
        if tag == "body" and "data-scroll-width" in a:
            self.scroll_width = json.loads(a["data-scroll-width"])
        for key in ("src", "href"):
            if re.match(r"^(https?:)?//", a.get(key, "")):
                self.external.append(a[key])

    def handle_endtag(self, tag: str) -> None:
        if (tag == "span" and self.into == "chip") or tag == "summary":
            self.into = ""

    def handle_data(self, data: str) -> None:
        if self.into == "chip":
            self.kiosk["chips"].append(data)
        elif self.into == "heard":
            self.kiosk["heard"] += data.strip()


def render(tmp_path: Path) -> tuple[Path, str]:
    """The HTML page and the terminal's table, as the role's tasks render them."""
    page, text = tmp_path / "report.html", tmp_path / "report.txt"
    playbook = tmp_path / "render.yml"
    playbook.write_text(json.dumps([{
        "hosts": "localhost", "gather_facts": False, "connection": "local",
        "vars": {"__pi_report_fleet": report.fleet(ROWS), "ansible_python_interpreter": sys.executable},
        "tasks": [{"name": f"Render {dest.name}", "ansible.builtin.template": {
            "src": str(ROOT / "roles/pi_report/templates" / f"{dest.name}.j2"), "dest": str(dest), "mode": "0644"}}
            for dest in (page, text)],
    }]))
    subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", str(playbook)], check=True,
                   capture_output=True, cwd=ROOT)
    return page, text.read_text()


def chromium() -> list[str]:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "Debian's chromium is needed (scripts/testbed-setup installs it)"
    return [found, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]


def measured(page: Path) -> Path:
    """A test-only copy of the page whose script writes the document's width into the DOM, the kiosks closed and
    all open (the report itself has no script)."""
    probe = ("<script>const w = () => document.documentElement.scrollWidth; const closed = w();"
             "document.querySelectorAll('details').forEach(d => { d.open = true; });"
             "document.body.dataset.scrollWidth = JSON.stringify({closed, open: w()});</script></body>")
    copy = page.with_name("measured.html")
    copy.write_text(page.read_text().replace("</body>", probe))
    return copy


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return render(tmp_path_factory.mktemp("report"))


def test_the_page_leads_with_what_a_person_looks_for_and_fits_a_laptop(rendered: tuple[Path, str]) -> None:
    page, _ = rendered
    dom = subprocess.run([*chromium(), "--window-size=1280,900", "--dump-dom", measured(page).as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    found = Page()
    found.feed(dom)
    assert found.scroll_width["closed"] <= 1280 and found.scroll_width["open"] <= 1280, (
        f"the page scrolls sideways on a 1280-pixel screen: {found.scroll_width}")
    order = list(found.kiosks)
    assert order == sorted(EXPECTED) + FINE, "problems first, each group by name"
    for host, (chips, bad) in EXPECTED.items():
        assert found.kiosks[host]["class"] == "problem"
        assert found.kiosks[host]["chips"] == chips, host
        assert sorted(found.kiosks[host]["bad"]) == bad, host
    for host in FINE:
        assert found.kiosks[host]["class"] == "fine" and found.kiosks[host]["bad"] == [], host
    heard = {host: (k["heard"], k["title"]) for host, k in found.kiosks.items()}
    assert heard["kiosk-lobby"] == ("2 min ago", "2027-01-15 07:57:55 UTC")
    assert heard[WAREHOUSE] == ("40 s ago", "2027-01-15 07:59:20 UTC")
    assert heard["kiosk-annex-b"][0] == "3 h ago"
    assert heard["kiosk-canteen"][0] == "—" and heard["kiosk-reception"][0] == "never"
    assert heard["kiosk-lab"][0] == "?" and heard["kiosk-gone"][0] == "?"
    summary = re.search(r'<p class="summary">(.*?)</p>\s*<p class="issues">(.*?)</p>', dom, re.DOTALL)
    assert summary and "12 kiosks: 5 ok, 7 with problems" in summary.group(1)
    assert summary.group(2).startswith("restarting (2) · delivery failing · ")
    # The full words of each problem, one click away.
    assert "under-voltage now" in dom and "restarted 3 time(s)" in dom and "unreachable: not read" in dom
    assert re.search(rf'Fleet release <span class="mono">{FLEET}</span>\s+\(9 of the 11 read\)', dom)
    assert "check server.token" in dom and "51.1 °C" in dom and "1800 MHz" in dom
    assert found.external == []


def test_the_screenshots_are_readable_on_a_laptop_and_a_phone(rendered: tuple[Path, str]) -> None:
    page, _ = rendered
    # The first problem kiosk opened, as a person would click it.
    opened = page.with_name("opened.html")
    opened.write_text(page.read_text().replace('<details class="problem"', '<details open class="problem"', 1))
    shots = ROOT / ".testbed/artifacts"
    shots.mkdir(parents=True, exist_ok=True)
    for name, size, source in (("laptop", "1280,900", page), ("laptop-opened", "1280,900", opened),
                               ("phone", "412,915", page)):
        shot = page.with_name(f"fleet-report-{name}.png")
        subprocess.run([*chromium(), f"--window-size={size}", f"--screenshot={shot}", source.as_uri()],
                       capture_output=True, timeout=120, check=True)
        assert shot.stat().st_size > 10_000
        shutil.copy(shot, shots / shot.name)
        print(f"screenshot: {shot}")


def test_the_terminal_table_has_the_same_lead_columns(rendered: tuple[Path, str]) -> None:
    _, text = rendered
    lines = text.splitlines()
    assert lines[0].startswith("PI-FLEET REPORT: 12 kiosk(s): 5 ok, 7 with problems: ")
    assert lines[1].split()[:5] == ["KIOSK", "STATUS", "RELEASE", "LAST", "HEARD"]
    kiosks = [line.split()[0] for line in lines[2:] if not line.startswith(" ")]
    assert kiosks == sorted(EXPECTED) + FINE
    by_host = {line.split()[0]: line.split() for line in lines[2:] if not line.startswith(" ")}
    assert by_host["kiosk-door"][1:4] == ["under-voltage", "+3", CANDIDATE]
    assert by_host["kiosk-lobby"][1:5] == ["ok", FLEET, "2", "min"]
    assert by_host["kiosk-gone"][1:] == ["unreachable", "?", "?"]
    assert "    ! heartbeat failing: 37 in a row (HTTP 401 from " in text

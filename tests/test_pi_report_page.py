"""The fleet report's HTML page, rendered by Ansible from the role's template and opened in a real headless
browser (Debian's chromium): the problem cells are highlighted, the page needs nothing from the network,
and a phone-sized screenshot is kept under .testbed/ (a CI artefact)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

from conftest import ROOT, load_module

report = load_module(ROOT / "roles/pi_report/filter_plugins/pi_report.py")
BIN = Path(sys.executable).parent
NOW = 1_800_000_000.0
METRICS = ('kiosk_stage_seconds_bucket{le="0.1",stage="embed"} 5.0\n'
           'kiosk_stage_seconds_bucket{le="0.25",stage="embed"} 10.0\n'
           'kiosk_stage_seconds_bucket{le="+Inf",stage="embed"} 10.0\n'
           f"kiosk_outbox_depth 0.0\nkiosk_last_successful_sync_timestamp_seconds {NOW - 60}\n")


def row(host: str, board: str, **kiosk: object) -> dict[str, object]:
    probe = {"live": "0.2.0-a", "last_known_good": "0.2.0-a", "active": "active", "restarts": 0,
             "healthz": {"status": "ok"}, "metrics": METRICS, "fps": 2.0, "model_size": 5_000_000,
             "model_quantized": False, "exposure": 1.4, "throttled": "throttled=0x0", **kiosk}
    return {"host": host, "board": board, "model": f"Raspberry Pi ({board})", "reachable": True,
            "os": "Debian GNU/Linux 12 (bookworm)", "kernel": "6.6.51", "governor": "performance",
            "swap": [{"name": "/var/swap", "type": "file", "size_mb": 1024}], "schedulers": {"mmcblk0": "mq-deadline"},
            "overclock": [], "throttled": probe["throttled"], "kiosk": probe,
            "judged": report.kiosk_row(probe, board, False, NOW)}


ROWS = [
    row("kiosk-lobby", "pi4"),
    row("kiosk-door", "pi3+", throttled="throttled=0x50005", healthz={"status": "stale", "reason": "no frame"},
        restarts=3, live="0.3.0-b"),
    report.row_of("kiosk-gone", {"kiosk-gone": {}}),
]


class Cells(HTMLParser):
    """td elements per row's data-host: (data-col, class)."""

    def __init__(self) -> None:
        super().__init__()
        self.host = ""
        self.cells: dict[str, list[tuple[str, str]]] = {}
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr" and a.get("data-host"):
            self.host = a["data-host"] or ""
        if tag == "td" and a.get("data-col"):
            self.cells.setdefault(self.host, []).append((a["data-col"] or "", a.get("class") or ""))
        for key in ("src", "href"):
            if re.match(r"^(https?:)?//", a.get(key) or ""):
                self.external.append(a[key] or "")


def render(tmp_path: Path) -> Path:
    page = tmp_path / "report.html"
    playbook = tmp_path / "render.yml"
    playbook.write_text(json.dumps([{
        "hosts": "localhost", "gather_facts": False, "connection": "local",
        "vars": {"__pi_report_rows": ROWS, "ansible_python_interpreter": sys.executable},
        "tasks": [{"name": "Render", "ansible.builtin.template": {
            "src": str(ROOT / "roles/pi_report/templates/report.html.j2"), "dest": str(page), "mode": "0644"}}],
    }]))
    subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", str(playbook)], check=True,
                   capture_output=True, cwd=ROOT)
    return page


def test_the_page_highlights_each_problem_in_a_real_browser(tmp_path: Path) -> None:
    page = render(tmp_path)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is needed (scripts/testbed-setup installs it)"
    browser = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run([*browser, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    cells = Cells()
    cells.feed(dom)
    bad = {host: sorted(col for col, cls in found if "bad" in cls.split()) for host, found in cells.cells.items()}
    assert bad == {"kiosk-lobby": [], "kiosk-door": ["health", "release", "service", "throttled"],
                   "kiosk-gone": ["host"]}
    assert "under-voltage now" in dom and "restarted 3 time(s)" in dom and "unreachable" in dom
    assert cells.external == []

    shots = ROOT / ".testbed/artifacts"
    shots.mkdir(parents=True, exist_ok=True)
    shot = shots / "fleet-report-phone.png"
    shot.unlink(missing_ok=True)
    subprocess.run([*browser, "--window-size=412,915", f"--screenshot={shot}", page.as_uri()], capture_output=True,
                   timeout=120, check=True)
    assert shot.stat().st_size > 10_000

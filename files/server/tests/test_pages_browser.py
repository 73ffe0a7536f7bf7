"""The employees pages in a real browser (Debian's headless chromium): a person enrolled from a photo through the
server's own form, then deleted through its confirmation page, as a browser fills and posts them (a test-only page
of the server's origin fills the forms in a frame: chromium takes no input from the command line). Each state is
screenshot at a desktop's width and a phone's, under <repo>/.testbed/artifacts/ (CI keeps them)."""
from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

from conftest import ADMIN, LOBBY, astronaut
from fastapi.responses import HTMLResponse
from test_browser import chromium, listening, recording

from attendance_server.app import create_app
from attendance_server.config import EmbeddingModel, Settings
from attendance_server.store import Store

ARTIFACTS = Path(__file__).resolve().parents[3] / ".testbed" / "artifacts"
WIDTHS = {"desktop": "1280,900", "phone": "412,915"}


def driver(page: str, fill: str) -> str:
    """A page that opens `page` in a frame and, once it has loaded, runs `fill` on its document (`doc`), then
    notes in the title that the frame loaded the answer."""
    return f"""<!doctype html><html><body><iframe id=f src="{page}" width=1200 height=900></iframe><script>
const frame = document.getElementById("f");
let sent = false;
frame.onload = () => {{
  if (sent) {{ document.title = "answered: " + frame.contentWindow.location.pathname; return; }}
  const doc = frame.contentDocument;
  {fill}
  sent = true;
}};
</script></body></html>"""


ENROL = driver("/employees", f"""const form = doc.getElementById("enrol");
  form.elements.employee.value = "E042";
  form.elements.name.value = "Eileen Collins";
  const photo = Uint8Array.from(atob("{base64.b64encode(astronaut()).decode()}"), c => c.charCodeAt(0));
  const files = new DataTransfer();
  files.items.add(new File([photo], "astronaut.png", {{type: "image/png"}}));
  form.elements.photos.files = files.files;
  form.requestSubmit();  // as the Enrol button does: the form's own checks (required fields) first""")
DELETE = driver("/employees/E042/delete", 'doc.querySelector("#remove button").click();')


def browse(url: str, *options: str) -> str:
    run = subprocess.run([*chromium(), *options, "--virtual-time-budget=20000", url], capture_output=True,
                         text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


def screenshots(server: str, path: str, name: str) -> None:
    for device, size in WIDTHS.items():
        shot = ARTIFACTS / f"server-{name}-{device}.png"
        shot.unlink(missing_ok=True)
        browse(f"http://ops:{ADMIN}@{server}{path}", f"--screenshot={shot}", f"--window-size={size}",
               "--hide-scrollbars")
        assert shot.stat().st_size > 0
        print(shot)


def test_a_person_is_enrolled_and_deleted_through_the_pages_in_a_browser(tmp_path: Path,
                                                                          face_model: EmbeddingModel) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    store = Store(tmp_path / "attendance.sqlite3")
    app = create_app(Settings(tmp_path / "attendance.sqlite3", ADMIN, {"lobby": LOBBY},
                              {"mobilefacenet": face_model}), store)
    # Test-only pages, on the server's own origin as its own pages are: what they post is same-origin.
    app.add_api_route("/test/enrol", lambda: HTMLResponse(ENROL))
    app.add_api_route("/test/delete", lambda: HTMLResponse(DELETE))
    answers: list[dict[str, Any]] = []
    with listening(recording(app, answers)) as server:
        assert "answered: /employees/E042" in browse(f"http://ops:{ADMIN}@{server}/test/enrol", "--dump-dom")
        # The browser posts the form, is asked to log in (401, its body unread), and posts it with the login.
        posts = [(a["path"], a["status"], a["authorized"], a["sec-fetch-site"], a["origin"])
                 for a in answers if a["method"] == "POST"]
        assert posts[-1] == ("/employees", 303, True, "same-origin", f"http://{server}")
        assert {p[1] for p in posts[:-1]} <= {401}
        (model,) = store.employees()["E042"]["embeddings"]  # type: ignore[misc]
        assert store.employees()["E042"]["name"] == "Eileen Collins"
        assert len(store.gallery(str(model)).employees["E042"]) == 1

        screenshots(server, "/employees", "employees")
        screenshots(server, "/employees/E042", "person")
        screenshots(server, "/employees/E042/delete", "confirm")
        assert "E042" in store.employees()  # nothing deleted by looking

        answers.clear()
        assert "answered: /employees" in browse(f"http://ops:{ADMIN}@{server}/test/delete", "--dump-dom")
        posts = [(a["path"], a["status"], a["sec-fetch-site"]) for a in answers if a["method"] == "POST"]
        assert posts[-1] == ("/employees/E042/delete", 303, "same-origin") and {p[1] for p in posts[:-1]} <= {401}
        assert store.employees() == {}
        screenshots(server, "/employees", "employees-after-delete")
        screenshots(server, "/", "attendance")

"""`pi-kiosk check`: the deploy role's smoke test, and `--config-only`, its config validator."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fakeserver import FakeServer
from kioskcli import cli


def test_a_refused_token_fails_the_check(write_config: Callable[..., Path], server: FakeServer) -> None:
    server.get_status = 401
    done = cli("check", "--config", str(write_config(server.url, server={"token": "old"})))
    assert done.returncode == 1
    assert (f"server.url = '{server.url}' answered HTTP 401 to GET {server.url}/api/employees/embeddings: "
            "check server.token") in done.stderr
    assert server.gets[0]["Authorization"] == "Bearer old"
    assert "ok: embedder OnnxEmbedder, 512-d, model " in done.stdout  # everything else was checked first


def test_a_password_in_server_url_is_never_printed(write_config: Callable[..., Path], server: FakeServer) -> None:
    server.get_status = 401
    url = server.url.replace("http://", "http://kiosk:s3cr3t@")
    done = cli("check", "--config", str(write_config(url)))
    assert done.returncode == 1
    assert f"server.url = '{server.url.replace('http://', 'http://kiosk:***@')}' answered HTTP 401" in done.stderr
    assert "s3cr3t" not in done.stdout + done.stderr


def test_an_unreachable_or_failing_server_is_only_a_warning(write_config: Callable[..., Path],
                                                            server: FakeServer, refused_url: str) -> None:
    down = cli("check", "--config", str(write_config(refused_url)))
    assert down.returncode == 0, down.stderr
    assert (f"warning: server.url = '{refused_url}': ConnectionError to GET "
            f"{refused_url}/api/employees/embeddings: server unreachable") in down.stdout
    server.get_status = 503
    failing = cli("check", "--config", str(write_config(server.url)))
    assert failing.returncode == 0, failing.stderr
    assert "warning: server.url" in failing.stdout and "HTTP 503" in failing.stdout


def test_a_working_server_and_offline(write_config: Callable[..., Path], server: FakeServer, tmp_path: Path) -> None:
    done = cli("check", "--config", str(write_config(server.url)))
    assert done.returncode == 0, done.stderr
    assert f"ok: server answered HTTP 200 to GET {server.url}/api/employees/embeddings" in done.stdout
    assert "ok: outbox" in done.stdout and "not created yet" in done.stdout
    assert not (tmp_path / "outbox.sqlite3").exists()  # created as root it would lock the service out
    assert not (tmp_path / "gallery.npz").exists()  # asking is not syncing
    server.get_status = 401
    offline = cli("check", "--offline", "--config", str(write_config(server.url)))
    assert offline.returncode == 0, offline.stderr
    assert len(server.gets) == 1  # no request
    assert offline.stdout.splitlines()[-1].startswith("ok: outbox")  # the last line: no server line


def test_the_deploys_candidate_token_and_a_required_server(write_config: Callable[..., Path], server: FakeServer,
                                                           refused_url: str, tmp_path: Path) -> None:
    """Issue 27: a deploy with a wrong token passed the gate (the smoke test ran offline). The smoke test asks the
    server with the candidate token (--token-file, not the live config's) and, required, fails unless it is accepted."""
    candidate = tmp_path / "candidate-token"
    candidate.write_text("new-token\n")
    server.get_status = 401
    refused = cli("check", "--require-server", "--token-file", str(candidate),
                  "--config", str(write_config(server.url, server={"token": "live-token"})))
    assert refused.returncode == 1 and "answered HTTP 401" in refused.stderr
    assert server.gets[-1]["Authorization"] == "Bearer new-token"
    server.get_status = 200
    accepted = cli("check", "--require-server", "--token-file", str(candidate),
                   "--config", str(write_config(server.url)))
    assert accepted.returncode == 0, accepted.stderr
    down = cli("check", "--require-server", "--config", str(write_config(refused_url)))
    assert down.returncode == 1
    assert (f"server.url = '{refused_url}': ConnectionError to GET {refused_url}/api/employees/embeddings: server "
            "unreachable") in down.stderr
    assert "(--require-server: the server must accept this kiosk's token)" in down.stderr


def test_config_only_validates_the_file_and_nothing_else(write_config: Callable[..., Path], tmp_path: Path) -> None:
    cfg = write_config(embedder={"model_path": str(tmp_path / "not-there.onnx")})
    before = sorted(tmp_path.iterdir())
    done = cli("check", "--config-only", "--config", str(cfg))
    assert (done.returncode, done.stdout) == (0, f"ok: config {cfg}\n"), done.stderr
    assert sorted(tmp_path.iterdir()) == before  # no model, no cache, no outbox
    bad = write_config(camera={"width": 1}, outbox={"auth_degraded_seconds": 0})
    done = cli("check", "--config-only", "--config", str(bad))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines()[1:] == [
        "  camera.width = 1: expected an integer from 16 to 7680",
        "  outbox.auth_degraded_seconds = 0: expected a number from 1 to 86400",
    ]

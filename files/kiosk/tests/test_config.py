from __future__ import annotations

import re
from pathlib import Path

import pytest

from pi_kiosk import config
from pi_kiosk.errors import ConfigError

KIOSK = Path(__file__).resolve().parents[1]
VALID = {"embedder": {"model_path": "/m.onnx", "card": "arcface"}, "server": {"url": "http://srv:8000"}}


def parse_with(**sections: dict[str, object]) -> config.Config:
    data: dict[str, dict[str, object]] = {k: dict(v) for k, v in VALID.items()}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return config.parse(data)


def error_of(**sections: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_with(**sections)
    return str(info.value)


def test_example_config_is_valid() -> None:
    cfg = config.load(KIOSK / "config.example.toml")
    assert cfg.server.url == "https://attendance.example.com"
    assert cfg.camera.max_fps == 10.0


def test_defaults_fill_missing_sections() -> None:
    cfg = parse_with()
    assert cfg.matching.threshold is None  # the card's published threshold
    assert cfg.metrics.host == "127.0.0.1"
    assert cfg.heartbeat.interval_seconds == 60.0
    assert cfg.embedder.model_path == Path("/m.onnx")


def test_readme_documents_every_key_with_its_default() -> None:
    readme = (KIOSK / "README.md").read_text()
    for key, default, _ in config.describe_keys():
        row = re.search(rf"^\| `{re.escape(key)}` \| (.*?) \|", readme, re.M)
        assert row, f"README.md has no table row for {key}"
        assert default.strip('"') in row.group(1), f"{key}: README default {row.group(1)!r}, code {default}"


def test_unknown_key_is_rejected_with_allowed_keys() -> None:
    msg = error_of(camera={"fps": 5})
    assert "camera.fps: unknown key" in msg and "max_fps" in msg


def test_unknown_section_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"\[kamera\]: unknown section"):
        config.parse({**VALID, "kamera": {}})


@pytest.mark.parametrize(("section", "values", "expected"), [
    ("camera", {"width": "640"}, "camera.width = '640': expected an integer from 16 to 7680"),
    ("camera", {"width": True}, "camera.width = True: expected an integer"),
    ("camera", {"width": 8}, "camera.width = 8: expected an integer from 16 to 7680"),
    ("camera", {"loop": 1}, "camera.loop = 1: expected true or false"),
    ("camera", {"source": ""}, "camera.source = '': expected a non-empty string"),
    ("matching", {"threshold": 1.5}, "matching.threshold = 1.5: built-in card 'arcface' compares by cosine "
                                     "similarity: expected a cosine similarity from -1.0 to 1.0"),
    ("matching", {"threshold": float("nan")}, "matching.threshold = nan: expected a finite number"),
    ("embedder", {"card": "arcfac"}, "embedder.card = 'arcfac': no built-in card of that name; built-in cards: "
                                     "arcface, dlib-resnet-v1, sface, or a card file's path"),
    ("embedder", {"card": ""}, "embedder.card = '': expected a built-in card's name"),
    ("detector", {"backend": "haar"}, "detector.backend = 'haar': expected one of 'mtcnn', 'yunet'"),
    ("detector", {"backend": "yunet"}, "detector.model_path: required when detector.backend = 'yunet'"),
    ("embedder", {"backend": "coral"}, "embedder.coral_model_path: required when embedder.backend = 'coral'"),
    ("embedder", {"model_sha256": "abc"}, "embedder.model_sha256 = 'abc': expected 64 hexadecimal digits"),
    ("embedder", {"model_path": ""}, "embedder.model_path = '': expected a non-empty path"),
    ("server", {"url": "ftp://x"}, "server.url = 'ftp://x': expected an http:// or https:// URL"),
    ("logging", {"level": "debug"}, "logging.level = 'debug': expected one of"),
    ("clock", {"synchronized_path": "run/timesync"},
     """clock.synchronized_path = 'run/timesync': expected an absolute path, or """""),
    ("clock", {"synchronized_path": False}, """clock.synchronized_path = False: expected an absolute path, or """""),
    ("outbox", {"retry_initial_seconds": 10.0, "retry_max_seconds": 5.0},
     "outbox.retry_max_seconds = 5.0: must be at least outbox.retry_initial_seconds"),
    ("outbox", {"memory_events": 0}, "outbox.memory_events = 0: expected an integer from 1 to 1000000"),
    ("sync", {"max_response_mb": 0.5}, "sync.max_response_mb = 0.5: expected an integer from 1 to 4096"),
    ("heartbeat", {"interval_seconds": 0}, "heartbeat.interval_seconds = 0: expected a number from 1 to 86400"),
    ("heartbeat", {"interval_seconds": -60}, "heartbeat.interval_seconds = -60: expected a number from 1 to 86400"),
])
def test_bad_values_name_key_value_and_allowed(section: str, values: dict[str, object], expected: str) -> None:
    assert expected in error_of(**{section: values})


def test_integers_are_accepted_for_numbers() -> None:
    assert parse_with(report={"cooldown_seconds": 60}).report.cooldown_seconds == 60.0


def test_missing_required_key_and_section() -> None:
    with pytest.raises(ConfigError) as info:
        config.parse({"embedder": {}})
    assert "embedder.model_path: missing" in str(info.value)
    assert "[server]: missing" in str(info.value)


def test_all_errors_reported_at_once() -> None:
    msg = error_of(camera={"width": 0, "height": 0}, metrics={"port": 70000})
    assert "camera.width" in msg and "camera.height" in msg and "metrics.port" in msg


def test_section_must_be_a_table() -> None:
    with pytest.raises(ConfigError, match=r"\[camera\] must be a table"):
        config.parse({**VALID, "camera": 3})


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configuration file not found"):
        config.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[camera\nwidth = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(bad)


def test_token_comes_from_the_config_or_from_its_file(tmp_path: Path) -> None:
    assert config.server_token(parse_with(server={"token": "abc"}).server) == "abc"
    (tmp_path / "token").write_text("from-file\n")
    assert config.server_token(parse_with(server={"token_file": str(tmp_path / "token")}).server) == "from-file"
    assert config.server_token(parse_with().server) == ""


def test_token_and_token_file_exclude_each_other(tmp_path: Path) -> None:
    assert "set one of them, not both" in error_of(server={"token": "abc", "token_file": str(tmp_path / "t")})


def test_unreadable_token_file_names_the_key(tmp_path: Path) -> None:
    cfg = parse_with(server={"token_file": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match=r"server.token_file = '.*missing': cannot read it"):
        config.server_token(cfg.server)


def test_a_bad_server_url_is_shown_without_its_password() -> None:
    msg = error_of(server={"url": "ftp://kiosk:s3cr3t@srv/"})
    assert "server.url = 'ftp://kiosk:***@srv/': expected an http:// or https:// URL" in msg and "s3cr3t" not in msg

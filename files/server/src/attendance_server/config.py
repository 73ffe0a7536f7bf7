"""The server's settings, from one TOML file (tokens are secrets: keep it readable by the server only).

    database = "/var/lib/pi-fleet-server/attendance.sqlite3"
    admin_token = "..."                # enrollment, the employee list and the attendance page
    [kiosks]                           # each kiosk's own token: the server knows which kiosk reported
    kiosk-lobby-01 = "..."
    [models]                           # models photos are enrolled with (the photos extra)
    mobilefacenet = "/srv/models/mobilefacenet.onnx"
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIN_TOKEN = 16


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class Settings:
    database: Path
    admin_token: str
    kiosk_tokens: dict[str, str]
    models: dict[str, Path] = field(default_factory=dict)

    def principal(self, token: str) -> str | None:
        """"admin", "kiosk:<name>", or None for an unknown token."""
        holders = [("admin", self.admin_token), *((f"kiosk:{name}", t) for name, t in self.kiosk_tokens.items())]
        # The server's one token comparison: how tokens are compared is decided here alone.
        return next((who for who, t in holders if t == token), None)


def parse(data: dict[str, Any], origin: str) -> Settings:
    def token(value: Any, what: str) -> str:
        if not isinstance(value, str) or len(value) < MIN_TOKEN:
            raise ConfigError(f"{origin}: {what} must be a string of at least {MIN_TOKEN} characters "
                              f"(e.g. from `openssl rand -hex 24`), got {value!r:.20}")
        return value

    unknown = set(data) - {"database", "admin_token", "kiosks", "models"}
    if unknown:
        raise ConfigError(f"{origin}: unknown settings {', '.join(sorted(unknown))} "
                          "(allowed: database, admin_token, [kiosks], [models])")
    if not isinstance(data.get("database"), str) or not data["database"]:
        raise ConfigError(f"{origin}: database must be the SQLite file's path")
    kiosks = data.get("kiosks", {})
    if not isinstance(kiosks, dict) or not kiosks:
        raise ConfigError(f"{origin}: [kiosks] must name at least one kiosk and its token")
    settings = Settings(Path(data["database"]), token(data.get("admin_token"), "admin_token"),
                        {str(name): token(t, f"kiosks.{name}") for name, t in kiosks.items()},
                        {str(k): Path(v) for k, v in data.get("models", {}).items()})
    tokens = [settings.admin_token, *settings.kiosk_tokens.values()]
    if len(set(tokens)) != len(tokens):
        raise ConfigError(f"{origin}: every kiosk and the admin need a token of their own")
    for name, path in settings.models.items():
        if not path.is_file():
            raise ConfigError(f"{origin}: models.{name} = {str(path)!r} is not a file")
    return settings


def load(path: Path) -> Settings:
    try:
        return parse(tomllib.loads(path.read_text()), str(path))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None

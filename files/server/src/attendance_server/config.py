"""The server's settings, from one TOML file (tokens are secrets: keep it readable by the server only).

    database = "/var/lib/pi-fleet-server/attendance.sqlite3"
    admin_token = "..."                # enrollment, the employee list and the attendance page
    [kiosks]                           # each kiosk's own token: the server knows which kiosk reported
    kiosk-lobby-01 = "..."
    [models]                           # models photos are enrolled with (the photos extra), each with its card
    mobilefacenet = { path = "/srv/models/mobilefacenet.onnx", card = "arcface" }
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
class EmbeddingModel:
    """A model photos are enrolled with, and its card (pi-kiosk's model cards: a built-in card's name, or a card
    file's path): the kiosk's pipeline aligns, feeds and normalises as the card says, as the kiosks do."""
    path: Path
    card: str


@dataclass(frozen=True)
class Settings:
    database: Path
    admin_token: str
    kiosk_tokens: dict[str, str]
    models: dict[str, EmbeddingModel] = field(default_factory=dict)

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
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise ConfigError(f"{origin}: [models] must be a table of name = {{ path = ..., card = ... }}")
    settings = Settings(Path(data["database"]), token(data.get("admin_token"), "admin_token"),
                        {str(name): token(t, f"kiosks.{name}") for name, t in kiosks.items()},
                        {str(name): _model(str(name), entry, origin) for name, entry in models.items()})
    tokens = [settings.admin_token, *settings.kiosk_tokens.values()]
    if len(set(tokens)) != len(tokens):
        raise ConfigError(f"{origin}: every kiosk and the admin need a token of their own")
    return settings


def _builtin_cards() -> str:
    try:
        from pi_kiosk.cards import builtin_names
    except ImportError:  # no photos extra: the photo route says so
        return "see pi-kiosk's README"
    return ", ".join(builtin_names())


def _model(name: str, entry: Any, origin: str) -> EmbeddingModel:
    """models.<name> = { path = "...", card = "..." }: a model without its card is refused."""
    where = f"{origin}: models.{name}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} = {entry!r:.80}: a model needs its card: write "
                          f"{name} = {{ path = \"{entry!s:.60}\", card = \"...\" }} with a built-in card "
                          f"({_builtin_cards()}) or a card file's path")
    unknown = set(entry) - {"path", "card"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {', '.join(sorted(unknown))} (allowed: path, card)")
    path, card = entry.get("path"), entry.get("card")
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{where}.path: missing; the model file's path")
    if not isinstance(card, str) or not card:
        raise ConfigError(f"{where}.card: missing; every model needs its card: a built-in card "
                          f"({_builtin_cards()}) or a card file's path")
    if not Path(path).is_file():
        raise ConfigError(f"{where}.path = {path!r} is not a file")
    try:
        from pi_kiosk.cards import CardError, resolve
    except ImportError:
        return EmbeddingModel(Path(path), card)  # without the photos extra nothing reads the card
    try:
        resolve(card, key=f"models.{name}.card")
    except CardError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    return EmbeddingModel(Path(path), card)


def load(path: Path) -> Settings:
    try:
        return parse(tomllib.loads(path.read_text()), str(path))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None

"""The server's settings, from one TOML file (tokens are secrets: keep it readable by the server only).

    database = "/var/lib/pi-fleet-server/attendance.sqlite3"   # or "postgresql://user@host/dbname" (postgresql extra)
    database_password_file = "/etc/pi-fleet-server/db-password"  # optional: a PostgreSQL password not in the URL
    admin_token = "..."                # enrollment, the employee list, the attendance page and /metrics
    registration_token = "..."         # optional: fresh Pis register themselves with it at first boot, and may do
                                       # nothing else (POST /api/register); absent: registration is off
    silent_after_seconds = 180         # optional: a kiosk not heard from for longer is marked silent
    trusted_origins = ["https://attendance.example.com"]  # optional: pages that may post (api/guard.py)
    [kiosks]                           # each kiosk's own token: the server knows which kiosk reported
    kiosk-lobby-01 = "..."
    [models]                           # models photos are enrolled with (the photos extra), each with its card
    mobilefacenet = { path = "/srv/models/mobilefacenet.onnx", card = "arcface" }
    [limits]                           # optional: what one request may send (each omitted: Limits' default)
    photos = 10
    [retention]                        # optional: how long the server keeps what it holds (each omitted: for ever)
    events_days = 400
    left_days = 30
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hmac
import secrets
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .backends import is_url, masked

MIN_TOKEN = 16
MiB = 1024 * 1024
# OpenCV refuses to decode more pixels than this anyway (its CV_IO_MAX_IMAGE_PIXELS default).
MAX_PHOTO_PIXELS = 1 << 30
DEFAULT_PORTS = {"http": 80, "https": 443}
# Three missed heartbeats at the kiosks' default interval (60 s): one lost on the way is no alarm.
SILENT_AFTER_SECONDS = 180
MAX_SILENT_AFTER_SECONDS = 7 * 86400
# A century: more is a typo (and a cutoff before year 1 would not compute); omit a retention to keep for ever.
MAX_RETENTION_DAYS = 36500


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class EmbeddingModel:
    """A model photos are enrolled with, and its card (pi-kiosk's model cards: a built-in card's name, or a card
    file's path): the kiosk's pipeline aligns, feeds and normalises as the card says, as the kiosks do."""
    path: Path
    card: str


@dataclass(frozen=True)
class Limits:
    """What one request may send: a body is refused before it is read, a photo before it is decoded."""
    body_bytes: int = 2 * MiB  # any request's body but a photo upload's (100 embeddings of 512 floats fit)
    photos: int = 10  # photos per upload
    photo_bytes: int = 16 * MiB  # each photo's file
    photo_pixels: int = 25_000_000  # each photo's width x height, read from its header

    @property
    def upload_bytes(self) -> int:
        """A photo upload's body: its photos, and body_bytes for the form around them."""
        return self.photos * self.photo_bytes + self.body_bytes


@dataclass(frozen=True)
class Retention:
    """How long the server keeps what it holds, in days; None: for ever (nothing is deleted unasked)."""
    events_days: int | None = None  # attendance events, counted from when the server received them
    left_days: int | None = None  # embeddings of people marked as having left, counted from the mark (0: at once)


@dataclass(frozen=True)
class Settings:
    database: Path | str  # a SQLite file's path, or a PostgreSQL URL (backends.py)
    admin_token: str
    kiosk_tokens: dict[str, str]
    models: dict[str, EmbeddingModel] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    # Origins whose pages a browser may send state-changing requests from, besides the server's own (api/guard.py).
    trusted_origins: frozenset[str] = frozenset()
    # A kiosk whose last heartbeat is older than this is silent: on the page, in GET /api/kiosks, in /metrics.
    silent_after_seconds: int = SILENT_AFTER_SECONDS
    retention: Retention = field(default_factory=Retention)
    # PostgreSQL's password when the URL holds none (database_password_file); never shown.
    database_password: str | None = field(default=None, repr=False)
    # What a fresh Pi registers itself with (POST /api/register), and nothing else; None: registration is off.
    registration_token: str | None = None

    def database_shown(self) -> str:
        """The database setting as messages and logs may show it: a URL's password masked."""
        return masked(self.database)

    @functools.cached_property
    def _holders(self) -> tuple[bytes, dict[bytes, str]]:
        """Each token's keyed hash (a key of this process, never stored) -> whose token it is."""
        key = secrets.token_bytes(32)
        holders = {"admin": self.admin_token, **{f"kiosk:{name}": t for name, t in self.kiosk_tokens.items()},
                   **({"registrar": self.registration_token} if self.registration_token else {})}
        return key, {hmac.digest(key, t.encode(), "sha256"): who for who, t in holders.items()}

    def principal(self, token: str) -> str | None:
        """"admin", "kiosk:<name>", "registrar", or None for an unknown token."""
        # The server's one token comparison: how tokens are compared is decided here alone. The given token's keyed
        # hash is looked up, so a request costs the same with 10 kiosks or 10,000 (comparing every token did not),
        # and how long it takes tells nothing of which token, or how much of one, matched: without the key no one
        # can make a hash that shares a prefix with a token's.
        key, holders = self._holders
        return holders.get(hmac.digest(key, token.encode(), "sha256"))


def origin_of(scheme: str, host: str) -> str:
    """`scheme://host[:port]` as a browser's Origin header has it: lower case, without the scheme's default port."""
    host = host.lower().removesuffix(f":{DEFAULT_PORTS.get(scheme.lower())}")
    return f"{scheme.lower()}://{host}"


def parse(data: dict[str, Any], origin: str) -> Settings:
    def token(value: Any, what: str) -> str:
        if not isinstance(value, str) or len(value) < MIN_TOKEN:
            raise ConfigError(f"{origin}: {what} must be a string of at least {MIN_TOKEN} characters "
                              f"(e.g. from `openssl rand -hex 24`), got {value!r:.20}")
        return value

    unknown = set(data) - {"database", "database_password_file", "admin_token", "registration_token",
                           "trusted_origins", "silent_after_seconds", "kiosks", "models", "limits", "retention"}
    if unknown:
        raise ConfigError(f"{origin}: unknown settings {', '.join(sorted(unknown))} (allowed: database, "
                          "database_password_file, admin_token, registration_token, trusted_origins, "
                          "silent_after_seconds, [kiosks], [models], [limits], [retention])")
    database, password = _database(data.get("database"), data.get("database_password_file"), origin)
    registration = data.get("registration_token")
    kiosks = data.get("kiosks", {})
    if not isinstance(kiosks, dict) or not kiosks:
        raise ConfigError(f"{origin}: [kiosks] must name at least one kiosk and its token")
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise ConfigError(f"{origin}: [models] must be a table of name = {{ path = ..., card = ... }}")
    settings = Settings(database, token(data.get("admin_token"), "admin_token"),
                        {str(name): token(t, f"kiosks.{name}") for name, t in kiosks.items()},
                        {str(name): _model(str(name), entry, origin) for name, entry in models.items()},
                        _limits(data.get("limits", {}), origin), _origins(data.get("trusted_origins", []), origin),
                        _silent_after(data.get("silent_after_seconds", SILENT_AFTER_SECONDS), origin),
                        _retention(data.get("retention", {}), origin), password,
                        None if registration is None else token(registration, "registration_token"))
    _distinct_tokens(settings, origin)
    return settings


def _distinct_tokens(settings: Settings, origin: str) -> None:
    """Each token names one holder (Settings.principal): a shared one would be taken for one of them only. The
    message names the settings that share one, never the token."""
    holders: dict[str, list[str]] = {}
    named = {"admin_token": settings.admin_token, "registration_token": settings.registration_token,
             **{f"kiosks.{name}": t for name, t in settings.kiosk_tokens.items()}}
    for name, value in named.items():
        if value is not None:
            holders.setdefault(value, []).append(name)
    shared = [" and ".join(names) for names in holders.values() if len(names) > 1]
    if shared:
        raise ConfigError(f"{origin}: {'; '.join(shared)} have the same token: every kiosk, the admin and the "
                          "registrar need a token of their own")


def _database(value: Any, password_file: Any, origin: str) -> tuple[Path | str, str | None]:
    """database = a SQLite file's path, or postgresql://user[:password]@host[:port]/dbname; the password from the
    URL or from database_password_file (a file the server alone may read), not both."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{origin}: database must be the SQLite file's path or a postgresql://user@host/dbname URL")
    if not is_url(value):
        if password_file is not None:
            raise ConfigError(f"{origin}: database_password_file is for a PostgreSQL database; "
                              f"database = {value!r} is a SQLite file")
        return Path(value), None
    parts = urlsplit(value)
    if not parts.path.strip("/"):
        raise ConfigError(f"{origin}: database = {masked(value)!r}: name the database, e.g. "
                          "postgresql://attendance@db.example/attendance")
    try:
        import psycopg_pool  # noqa: F401
    except ImportError:
        raise ConfigError(f"{origin}: database = {masked(value)!r} is PostgreSQL, and psycopg is not installed: "
                          "install the server with its postgresql extra (pip install 'pi-fleet-server[postgresql]')"
                          ) from None
    if password_file is None:
        return value, None
    if parts.password is not None or "password=" in parts.query:
        raise ConfigError(f"{origin}: database = {masked(value)!r} holds a password, and database_password_file "
                          "names another: keep one")
    if not isinstance(password_file, str) or not password_file:
        raise ConfigError(f"{origin}: database_password_file must be a file's path, got {password_file!r:.40}")
    path = Path(password_file)
    try:
        _private(path, "the database password")
        password = path.read_text().strip("\n")
    except OSError as exc:
        raise ConfigError(f"{origin}: database_password_file: {exc}") from None
    if not password:
        raise ConfigError(f"{origin}: database_password_file {path} is empty")
    return value, password


def _retention(entry: Any, origin: str) -> Retention:
    """[retention]: events_days a whole number from 1, left_days from 0 (at the next prune), each at most a
    century; omitted: kept for ever."""
    names = [f.name for f in dataclasses.fields(Retention)]
    if not isinstance(entry, dict):
        raise ConfigError(f"{origin}: [retention] must be a table of {', '.join(names)}")
    unknown = set(entry) - set(names)
    if unknown:
        raise ConfigError(f"{origin}: unknown retention settings {', '.join(sorted(unknown))} "
                          f"(allowed: {', '.join(names)})")
    for name, value in entry.items():
        least = 0 if name == "left_days" else 1
        if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= MAX_RETENTION_DAYS:
            raise ConfigError(f"{origin}: retention.{name} must be a whole number of days from {least} to "
                              f"{MAX_RETENTION_DAYS} (omit it to keep for ever), got {value!r:.20}")
    return Retention(**entry)


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


def _limits(entry: Any, origin: str) -> Limits:
    """[limits]: each a whole number of at least 1 (photo_pixels: at most what OpenCV decodes); omitted: the default."""
    names = [f.name for f in dataclasses.fields(Limits)]
    if not isinstance(entry, dict):
        raise ConfigError(f"{origin}: [limits] must be a table of {', '.join(names)}")
    unknown = set(entry) - set(names)
    if unknown:
        raise ConfigError(f"{origin}: unknown limits {', '.join(sorted(unknown))} (allowed: {', '.join(names)})")
    for name, value in entry.items():
        most = MAX_PHOTO_PIXELS if name == "photo_pixels" else None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (most and value > most):
            raise ConfigError(f"{origin}: limits.{name} must be a whole number from 1"
                              f"{f' to {most}' if most else ''}, got {value!r:.20}")
    return Limits(**entry)


def _silent_after(value: Any, origin: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SILENT_AFTER_SECONDS:
        raise ConfigError(f"{origin}: silent_after_seconds must be a whole number from 1 to "
                          f"{MAX_SILENT_AFTER_SECONDS} (seconds; a few of the kiosks' heartbeat.interval_seconds), "
                          f"got {value!r:.20}")
    return value


def _origins(value: Any, origin: str) -> frozenset[str]:
    """trusted_origins = ["https://attendance.example.com"]: each a browser's Origin, scheme://host[:port]."""
    if not isinstance(value, list):
        raise ConfigError(f"{origin}: trusted_origins must be a list of origins, e.g. [\"https://attendance.example.com\"]")
    return frozenset(_origin(v, origin) for v in value)


def _origin(value: Any, origin: str) -> str:
    """One trusted origin, as origin_of writes it; a path, user info or another scheme is refused."""
    parts = urlsplit(value) if isinstance(value, str) else None
    with contextlib.suppress(ValueError):  # parts.port: not a port number
        if (parts and parts.scheme in DEFAULT_PORTS and parts.hostname and parts.port != 0
                and "@" not in parts.netloc and value == f"{parts.scheme}://{parts.netloc}"):
            return origin_of(parts.scheme, parts.netloc)
    raise ConfigError(f"{origin}: trusted_origins: {value!r:.80} is not an origin; write http(s)://host[:port] "
                      "without a path, as browsers send it in Origin, e.g. \"https://attendance.example.com\"")


def _private(path: Path, holds: str = "the tokens") -> None:
    """The file holds secrets: one that group or others may read (or change) stops the server."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(f"{path}: mode {mode:04o} lets group or others at {holds} it holds: "
                          f"chmod 600 {path} (readable by the server's user alone)")


def load(path: Path) -> Settings:
    try:
        _private(path)
        return parse(tomllib.loads(path.read_text()), str(path))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None

"""The one configuration file (TOML), validated completely at start-up.

Each section is a frozen dataclass; a field's metadata says which values are allowed, so the
validator, the error messages and the README table all come from one place. Every problem in
the file is reported at once, each naming the key, the bad value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from . import cards, csi
from .errors import ConfigError
from .redact import redact_url

DEFAULT_PATH = Path("/etc/pi-kiosk/config.toml")


def _range(lo: float, hi: float) -> dict[str, Any]:
    return {"min": lo, "max": hi}


def _choices(*values: str) -> dict[str, Any]:
    return {"choices": values}


NONEMPTY: dict[str, Any] = {"nonempty": True}
# A file's absolute path, or "" for none (a string: a Path cannot be empty).
ABSOLUTE_OR_EMPTY: dict[str, Any] = {"absolute_or_empty": True}
# embedder.card: which card describes the model; no default, so that no kiosk runs a model on a guess.
CARD: dict[str, Any] = {"nonempty": True, "card": True}


@dataclass(frozen=True)
class CameraConfig:
    # A string so one key covers an index ("0"), a device path, a URL, a CSI camera ("csi", "csi:1") or a file.
    source: str = field(default="0", metadata=NONEMPTY)
    width: int = field(default=640, metadata=_range(16, 7680))
    height: int = field(default=480, metadata=_range(16, 4320))
    max_fps: float = field(default=0.0, metadata=_range(0, 120))
    loop: bool = False
    # Mean grey-level change (0-255) of the scene that counts as motion; 0 runs detection on every frame.
    motion_threshold: float = field(default=3.0, metadata=_range(0, 255))
    motion_recheck_seconds: float = field(default=2.0, metadata=_range(0.1, 3600))


@dataclass(frozen=True)
class DetectorConfig:
    backend: str = field(default="mtcnn", metadata=_choices("mtcnn", "yunet"))
    model_path: Path | None = None
    min_face_size: int = field(default=80, metadata=_range(20, 4000))
    score_threshold: float = field(default=0.9, metadata=_range(0.0, 1.0))
    max_faces: int = field(default=3, metadata=_range(1, 100))
    # MTCNN on a camera stream: a found face is followed by the two later stages only (and keeps the
    # person it was matched to), the full cascade every this many frames; 1 = the full cascade on every frame.
    track_frames: int = field(default=5, metadata=_range(1, 1000))


@dataclass(frozen=True)
class EmbedderConfig:
    model_path: Path
    card: str = field(metadata=CARD)  # a built-in card's name, or a card file's path (cards.py)
    model_sha256: str | None = None
    backend: str = field(default="onnxruntime", metadata=_choices("onnxruntime", "coral"))
    coral_model_path: Path | None = None
    threads: int = field(default=0, metadata=_range(0, 256))
    cache_dir: Path = Path("/var/cache/pi-kiosk")


@dataclass(frozen=True)
class MatchingConfig:
    # Unset: the card's published threshold. Set: this one, in the card's metric (checked against it).
    threshold: float | None = field(default=None, metadata={"finite": True})


@dataclass(frozen=True)
class ServerConfig:
    url: str
    token: str = ""
    # The token kept out of this file (a deploy tool writes it with tighter permissions); read at start-up.
    token_file: Path | None = None
    timeout_seconds: float = field(default=5.0, metadata=_range(0.1, 300))


@dataclass(frozen=True)
class ReportConfig:
    status: str = field(default="IN", metadata=NONEMPTY)
    cooldown_seconds: float = field(default=300.0, metadata=_range(0, 86400))


@dataclass(frozen=True)
class OutboxConfig:
    path: Path = Path("/var/lib/pi-kiosk/outbox.sqlite3")
    retry_initial_seconds: float = field(default=2.0, metadata=_range(0.01, 3600))
    retry_max_seconds: float = field(default=300.0, metadata=_range(0.01, 86400))
    # A token being rotated may be refused for a moment; /healthz says "degraded" only after this.
    auth_degraded_seconds: float = field(default=300.0, metadata=_range(1, 86400))
    # Events kept in memory while the outbox cannot be written (a full disk), ~0.6 kB each: the
    # default holds days of a busy kiosk's events in ~6 MB (outbox_writer.py).
    memory_events: int = field(default=10000, metadata=_range(1, 1000000))
    # Days delivered and rejected events are kept (personal data: bounded); 0 deletes an event once delivered.
    # Delivered events go after a day in any case (all the cooldown needs); pending ones are never pruned.
    keep_days: int = field(default=30, metadata=_range(0, 3650))


@dataclass(frozen=True)
class SyncConfig:
    interval_seconds: float = field(default=300.0, metadata=_range(0, 86400))
    cache_path: Path = Path("/var/lib/pi-kiosk/gallery.npz")
    enrolled_path: Path = Path("/var/lib/pi-kiosk/enrolled.npz")
    # The largest gallery answer read (MB, decoded): ~21 bytes a number, so 32 MB is ~12,000 embeddings
    # of 128 numbers (the default model) or ~3,000 of 512; parsing peaks near 3.6x the answer (sync.py).
    max_response_mb: int = field(default=32, metadata=_range(1, 4096))


@dataclass(frozen=True)
class MetricsConfig:
    host: str = field(default="127.0.0.1", metadata=NONEMPTY)
    port: int = field(default=9108, metadata=_range(0, 65535))
    stale_seconds: float = field(default=30.0, metadata=_range(1, 86400))


@dataclass(frozen=True)
class HeartbeatConfig:
    # How often the kiosk tells the server it is alive (heartbeat.py); the server's silent_after_seconds
    # should allow a few missed ones.
    interval_seconds: float = field(default=60.0, metadata=_range(1, 86400))


@dataclass(frozen=True)
class ClockConfig:
    # A file that exists once the system clock is synchronised in this boot (systemd-timesyncd's);
    # "" trusts the clock always (timekeeping.py).
    synchronized_path: str = field(default="/run/systemd/timesync/synchronized", metadata=ABSOLUTE_OR_EMPTY)


@dataclass(frozen=True)
class LoggingConfig:
    level: str = field(default="INFO", metadata=_choices("DEBUG", "INFO", "WARNING", "ERROR"))


@dataclass(frozen=True)
class Config:
    embedder: EmbedderConfig
    server: ServerConfig
    camera: CameraConfig = CameraConfig()
    detector: DetectorConfig = DetectorConfig()
    matching: MatchingConfig = MatchingConfig()
    report: ReportConfig = ReportConfig()
    outbox: OutboxConfig = OutboxConfig()
    sync: SyncConfig = SyncConfig()
    metrics: MetricsConfig = MetricsConfig()
    heartbeat: HeartbeatConfig = HeartbeatConfig()
    clock: ClockConfig = ClockConfig()
    logging: LoggingConfig = LoggingConfig()


T = TypeVar("T")


def _describe(kind: type[Any], meta: typing.Mapping[str, Any], optional: bool) -> str:
    if "choices" in meta:
        return "one of " + ", ".join(repr(c) for c in meta["choices"])
    if meta.get("absolute_or_empty"):
        return 'an absolute path, or ""'
    if meta.get("card"):
        return (f"a built-in card's name ({', '.join(cards.builtin_names())}) or a card file's path "
                "(containing '/' or ending in .toml)")
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
             Path: "a non-empty path"}
    text = names[kind]
    if meta.get("finite"):
        text = "a finite number"
    if meta.get("nonempty"):
        text = "a non-empty string"
    if "min" in meta:
        text += f" from {meta['min']} to {meta['max']}"
    if optional:
        text += " (or leave the key out)"
    return text


def _unwrap(hint: Any) -> tuple[type[Any], bool]:
    """(base type, optional?) for `X` or `X | None`."""
    if isinstance(hint, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], True
    return hint, False


def _convert(key: str, raw: Any, f: dataclasses.Field[Any], hint: Any, errors: list[str]) -> Any:
    kind, optional = _unwrap(hint)
    meta = f.metadata
    allowed = _describe(kind, meta, optional)
    bad = f"{key} = {raw!r}: expected {allowed}"
    # bool is a subclass of int in Python; TOML keeps them apart, so do we.
    if kind is bool:
        ok = isinstance(raw, bool)
    elif kind is int:
        ok = isinstance(raw, int) and not isinstance(raw, bool)
    elif kind is float:
        ok = isinstance(raw, int | float) and not isinstance(raw, bool)
        raw = float(raw) if ok else raw
    else:  # str and Path; an empty path is always a mistake
        ok = isinstance(raw, str) and (raw.strip() != "" or (kind is str and not meta.get("nonempty")))
    if not ok:
        errors.append(bad)
        return None
    if "choices" in meta and raw not in meta["choices"]:
        errors.append(bad)
        return None
    if "min" in meta and not meta["min"] <= raw <= meta["max"]:
        errors.append(bad)
        return None
    if meta.get("finite") and not math.isfinite(raw):
        errors.append(bad)
        return None
    if meta.get("absolute_or_empty") and raw and not raw.startswith("/"):
        errors.append(bad)
        return None
    return Path(raw) if kind is Path else raw


def _section(name: str, cls: type[T], raw: Any, errors: list[str]) -> T | None:
    if not isinstance(raw, dict):
        errors.append(f"[{name}] must be a table, got {raw!r}")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for unknown in sorted(set(raw) - set(fields)):
        errors.append(f"{name}.{unknown}: unknown key; allowed keys are {', '.join(sorted(fields))}")
    before = len(errors)
    values: dict[str, Any] = {}
    for fname, f in fields.items():
        key = f"{name}.{fname}"
        if fname not in raw:
            if f.default is dataclasses.MISSING:
                if f.metadata.get("card"):
                    errors.append(f"{key}: missing; every model needs its card, it has no default: "
                                  f"{_describe(str, f.metadata, False)}")
                else:
                    errors.append(f"{key}: missing; it is required and has no default")
            continue
        values[fname] = _convert(key, raw[fname], f, hints[fname], errors)
    if len(errors) > before:
        return None
    return cls(**values)


def _cross_checks(cfg: Config, errors: list[str]) -> None:
    try:
        if csi.camera_number(cfg.camera.source) is not None:
            errors += csi.geometry_problems(cfg.camera.width, cfg.camera.height)
    except ConfigError as exc:
        errors.append(str(exc))
    if cfg.server.token and cfg.server.token_file is not None:
        errors.append("server.token and server.token_file: set one of them, not both")
    url = urlparse(cfg.server.url)
    if url.scheme not in ("http", "https") or not url.netloc:
        errors.append(f"server.url = {redact_url(cfg.server.url)!r}: expected an http:// or https:// URL")
    if cfg.detector.backend == "yunet" and cfg.detector.model_path is None:
        errors.append("detector.model_path: required when detector.backend = 'yunet' (a YuNet .onnx file)")
    if cfg.embedder.backend == "coral" and cfg.embedder.coral_model_path is None:
        errors.append("embedder.coral_model_path: required when embedder.backend = 'coral' "
                      "(an Edge TPU compiled .tflite file)")
    sha = cfg.embedder.model_sha256
    if sha is not None and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha.lower())):
        errors.append(f"embedder.model_sha256 = {sha!r}: expected 64 hexadecimal digits")
    if cfg.outbox.retry_max_seconds < cfg.outbox.retry_initial_seconds:
        errors.append(f"outbox.retry_max_seconds = {cfg.outbox.retry_max_seconds}: must be at least "
                      f"outbox.retry_initial_seconds ({cfg.outbox.retry_initial_seconds})")


def _check_card(embedder: EmbedderConfig, matching: MatchingConfig, errors: list[str]) -> None:
    """embedder.card names a built-in card or a file; a built-in card is read here (on the deploy
    controller too) and matching.threshold checked against its metric. A card file is read when the
    model is loaded: it lives on the kiosk."""
    ref = embedder.card
    problem = cards.reference_problem(ref)
    if problem is not None:
        errors.append(f"embedder.card = {ref!r}: {problem}")
        return
    if cards.is_path(ref):
        return
    try:
        cards.threshold(cards.builtin(ref), matching.threshold)
    except cards.CardError as exc:
        errors.append(str(exc))


def parse(data: dict[str, Any], source: str = "config") -> Config:
    """Validate a parsed TOML document; raises ConfigError listing every problem."""
    errors: list[str] = []
    sections = {f.name: f for f in dataclasses.fields(Config)}
    hints = typing.get_type_hints(Config)
    for unknown in sorted(set(data) - set(sections)):
        errors.append(f"[{unknown}]: unknown section; allowed sections are {', '.join(sorted(sections))}")
    values: dict[str, Any] = {}
    for name, f in sections.items():
        if name not in data and f.default is not dataclasses.MISSING:
            continue
        if name not in data:
            errors.append(f"[{name}]: missing; this section is required")
            continue
        values[name] = _section(name, hints[name], data[name], errors)
    # The card's checks need only these two sections: reported beside the other sections' problems.
    embedder, matching = values.get("embedder"), values.get("matching", MatchingConfig())
    if embedder is not None and matching is not None:
        _check_card(embedder, matching, errors)
    if errors:
        raise ConfigError(f"{source}: " + "\n  ".join(["invalid configuration:", *errors]))
    cfg = Config(**values)
    _cross_checks(cfg, errors)
    if errors:
        raise ConfigError(f"{source}: " + "\n  ".join(["invalid configuration:", *errors]))
    return cfg


def server_token(server: ServerConfig) -> str:
    """The bearer token: server.token, or the first line of server.token_file ("" when neither is set)."""
    if server.token_file is None:
        return server.token
    try:
        lines = server.token_file.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"server.token_file = {str(server.token_file)!r}: cannot read it: {exc.strerror}") from None
    return lines[0].strip() if lines else ""


def load(path: Path) -> Config:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse(data, str(path))


def describe_keys() -> list[tuple[str, str, str]]:
    """(key, default, allowed values) for every key: the README table is checked against this."""
    rows: list[tuple[str, str, str]] = []
    for section in dataclasses.fields(Config):
        cls = typing.get_type_hints(Config)[section.name]
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind, optional = _unwrap(hints[f.name])
            if f.default is dataclasses.MISSING:
                default = "required"
            elif f.default is None:
                default = "unset"
            elif isinstance(f.default, bool):
                default = str(f.default).lower()
            elif isinstance(f.default, str | Path):
                default = f'"{f.default}"'
            else:
                default = str(f.default)
            rows.append((f"{section.name}.{f.name}", default, _describe(kind, f.metadata, optional)))
    return rows

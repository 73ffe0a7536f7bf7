"""Errors the service reports to the operator as one clear line, without a traceback."""
from __future__ import annotations


class KioskError(Exception):
    """Base class: the message names the bad value and what is allowed."""


class ConfigError(KioskError):
    """The configuration file is missing, unreadable or invalid."""


class ModelError(KioskError):
    """A model file is missing, corrupt or does not have the expected contract."""


class CaptureError(KioskError):
    """The frame source cannot be opened or read."""


class EnrollError(KioskError):
    """A photo cannot be enrolled (not exactly one usable face, unreadable file)."""


class GalleryError(KioskError):
    """Enrolled embeddings are malformed or do not fit the embedding model."""


class OutboxError(KioskError):
    """The outbox database is missing, or an operator command on it names events it does not hold."""


class RootError(KioskError):
    """A command that writes the service's files was run as root (privileges.py)."""

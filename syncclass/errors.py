"""The project's error hierarchy. Never raise bare ``Exception``."""

from __future__ import annotations


class SyncClassError(Exception):
    """Base of every error raised by syncclass code."""


class ConfigError(SyncClassError, ValueError):
    """A configuration file is missing, unreadable or invalid.

    The message names the file, the field path and what is wrong.
    """


class ProtocolError(SyncClassError, ValueError):
    """A signaling message is malformed, oversized or of an unknown type."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class AuthError(SyncClassError):
    """A credential is unknown or a classroom asked for something it may not do."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class InvalidStateError(SyncClassError):
    """An operation is not allowed in the object's current state."""


class DeviceError(SyncClassError):
    """A configured capture or playback device is missing or failed."""


class RecordingError(SyncClassError):
    """A lesson recording could not be written, finalised or archived (the message says
    which file or target and why)."""


class FontMissingError(SyncClassError, FileNotFoundError):
    """No font that can draw Chinese labels was found (the message says what to install
    or set)."""

"""User-facing errors.

Library code raises :class:`SmafError` (or a subclass) for problems a person can fix: a missing
file, a corrupt image, a bad config value, a checksum mismatch. The message names the thing and
the fix; workflow scripts print it as one line instead of a traceback.
"""

from __future__ import annotations


class SmafError(Exception):
    """A problem with the user's input, data or configuration (not a bug in SMAF)."""


class DataError(SmafError):
    """A dataset file or folder is missing, unreadable or inconsistent."""


class DownloadError(SmafError):
    """A download failed, was truncated, or did not match its checksum."""


class ConfigError(SmafError):
    """A configuration value is missing, of the wrong type or out of range."""

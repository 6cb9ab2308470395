"""The exception hierarchy every layer shares (DESIGN §7).

Defined here, in the lowest layer that knows about retrace, so `stream`,
`proxy`, `install` and the CLI raise and catch the same classes.
"""
from __future__ import annotations


class RetraceError(Exception):
    """Base of every error retracesoftware raises on its own behalf."""

    #: CLI exit code when this error ends a run.
    exit_code = 1


class ConfigError(RetraceError):
    """A boundary config (TOML) is invalid: names file, line, key, expectation."""

    exit_code = 2


class RecordingError(RetraceError):
    """Recording could not be started or written."""

    exit_code = 1


class RecordingFormatError(RetraceError):
    """A recording file is damaged, truncated or not a recording at all."""

    exit_code = 4


class VersionMismatch(RetraceError):
    """The recording was made by another Python / source tree / format."""

    exit_code = 4


class ReplayDivergence(RetraceError):
    """The replaying program did something the recording does not contain."""

    exit_code = 3

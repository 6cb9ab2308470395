"""The recording's stream, opened for one process.

This is where ``stream`` and ``proxy`` meet (DESIGN §2): the stream's
StreamWriter/StreamReader already satisfy proxy's Writer/Reader protocols,
so the adapters are the objects themselves, configured here.
"""
from __future__ import annotations

import os

from retracesoftware.utils.errors import RecordingFormatError


def stream_writer(path, preamble, *, thread_id=None, **options):
    """The recording writer (a proxy ``Writer``)."""
    from retracesoftware.stream import StreamWriter
    return StreamWriter(path, preamble, thread_id=thread_id, **options)


def stream_reader(path):
    """The recording reader (a proxy ``Reader``)."""
    from retracesoftware.stream import StreamReader
    return StreamReader(path)


def open_recording(path, pid=None):
    try:
        if os.path.isfile(path) and os.path.getsize(path) == 0:
            raise RecordingFormatError(f"{path} is empty (0 bytes): the recording was never written "
                                       f"— re-record")
        reader = stream_reader(path)
    except RecordingFormatError:
        raise
    except IsADirectoryError:
        raise RecordingFormatError(f"{path} is a directory, not a recording — give the recording file") from None
    except PermissionError:
        raise RecordingFormatError(f"cannot read recording {path}: permission denied — check its mode") from None
    except OSError as exc:
        raise RecordingFormatError(f"cannot open recording {path}: {exc.strerror} — check the path") from None
    return reader

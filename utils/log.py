"""The runtime's own log messages, without importing :mod:`logging`.

Importing logging is about 2 ms of every start-up, and the import makes
boundary calls (``time.time_ns``): our runtime never imports it. A message
goes through logging when the program has loaded it (the program's logging
configuration applies, as for any library's logger). Otherwise a debug
message is dropped, and a warning or an error is written to ``sys.stderr``
the way logging's last-resort handler would write it.
"""
from __future__ import annotations

import sys

__all__ = ["Log"]


class Log:
    """A named logger with ``debug``, ``warning`` and ``exception``."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def _logger(self):
        logging = sys.modules.get("logging")
        return None if logging is None else logging.getLogger(self.name)

    def debug(self, msg, *args, **kwargs) -> None:
        logger = self._logger()
        if logger is not None:
            logger.debug(msg, *args, **kwargs)

    def warning(self, msg, *args) -> None:
        self._emit("warning", msg, args, with_traceback=False)

    def exception(self, msg, *args) -> None:
        """Inside an ``except`` block: the message and the traceback."""
        self._emit("exception", msg, args, with_traceback=True)

    def _emit(self, level: str, msg, args: tuple, with_traceback: bool) -> None:
        logger = self._logger()
        if logger is not None:
            getattr(logger, level)(msg, *args)
            return
        text = (msg % args) if args else str(msg)
        if with_traceback:
            import traceback
            text += "\n" + traceback.format_exc().rstrip("\n")
        stream = sys.stderr
        if stream is not None:
            stream.write(text + "\n")

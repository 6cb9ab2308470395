"""What the views commands share: argparse with the CLI's one-line usage
errors, masking of secrets in what they print, quiet ends on a closed pipe."""
from __future__ import annotations

import argparse
import sys

from retracesoftware.runner import UsageError


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are the CLI's (one line, exit code 2)."""

    def __init__(self, prog, **kw):
        super().__init__(prog=f"python -m retracesoftware {prog}", **kw)

    def error(self, message):
        raise UsageError(message)


def int_arg(flag):
    def parse(text):
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} needs an integer, got {text!r}") from None
    return parse


_TRIGGERS = ("private", "bearer", "basic", "token", "secret", "passw", "passphrase", "key", "auth",
             "credential", "cookie", "session", "signature", "://", "akia", "asia", "gh", "github_pat_",
             "xox", "sk-", "eyj")


class Masker:
    """`install.masking.mask` with the secret values found once (it is
    applied to every printed line)."""

    def __init__(self):
        from retracesoftware.install import masking
        self._masking = masking
        self._secrets = sorted(masking.secret_values(), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for value in self._secrets:
            if value in text:
                text = text.replace(value, self._masking.MASK)
        # Every pattern of install/masking.py needs one of these words: a
        # line without any (nearly all) skips them (they cost ~100 us a line).
        low = text.lower()
        for word in _TRIGGERS:
            if word in low:
                break
        else:
            return text
        for pattern, repl in self._masking._PATTERNS:
            text = pattern.sub(repl, text)
        return text

    def data(self, value):
        return _mask_strings(value, self)


def _mask_strings(value, masker):
    if isinstance(value, str):
        return masker(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_mask_strings(v, masker) for v in value)
    if isinstance(value, dict):
        return {k: _mask_strings(v, masker) for k, v in value.items()}
    return value


def run_quietly_on_closed_pipe(fn) -> int:
    """Run *fn*; a reader that went away (``| head``, a pager quit) ends it quietly."""
    try:
        return fn()
    except BrokenPipeError:
        try:
            sys.stdout = None
        except Exception:
            pass
        import os
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        return 0

"""Python-version quirks, in one place (coverage.py's env.py habit).

Code asks ``env.PY312_PLUS``, never ``sys.version_info`` inline; version
specific spots carry a greppable ``# PYVERSIONS`` comment.
"""
import sys

PYVERSION = sys.version_info[:2]
PY312_PLUS = PYVERSION >= (3, 12)
PY313_PLUS = PYVERSION >= (3, 13)

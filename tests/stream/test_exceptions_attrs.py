"""Exceptions keep the plain attributes their raiser set beyond args
(ssl's verify_code, json's pos, a library's own codes), on both backends,
byte-identically."""
import json

import pytest

from retracesoftware.stream import _common as C


class LibraryError(Exception):
    pass


def roundtrip(value):
    code, payload = C.reduce_value(value)
    assert code == C.EXT_OBJECT
    return C.rebuild_value(payload)


def test_plain_attributes_survive():
    exc = LibraryError("boom")
    exc.code = 42
    exc.detail = ("a", 1, None)
    exc.handle = object()          # not plain: dropped
    exc._retrace_token = 7         # our bookkeeping: dropped
    got = roundtrip(exc)
    assert type(got) is LibraryError and got.args == ("boom",)
    assert got.code == 42 and got.detail == ("a", 1, None)
    assert not hasattr(got, "handle") and not hasattr(got, "_retrace_token")


def test_json_decode_error_positions():
    try:
        json.loads("[1, 2,")
    except json.JSONDecodeError as exc:
        got = roundtrip(exc)
        assert (got.msg, got.pos, got.lineno, got.colno) == (exc.msg, exc.pos, exc.lineno, exc.colno)
    else:
        pytest.fail("json accepted a broken document")


def test_oserror_attributes_still_recorded():
    exc = FileNotFoundError(2, "No such file or directory", "x.txt")
    got = roundtrip(exc)
    assert (got.errno, got.strerror, got.filename) == (2, "No such file or directory", "x.txt")

"""The compiled-config cache (install/config.py): load_config() with its
defaults keeps the effective BoundaryConfig (marshalled), used only while every
config file is byte for byte the same; it never changes the digest."""
from __future__ import annotations

import os

import pytest

from retracesoftware.install import config as C


@pytest.fixture
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv(C.CACHE_ENV, str(d))
    monkeypatch.delenv(C.ENV_VAR, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return d


def fresh(monkeypatch):
    with monkeypatch.context() as m:
        m.setenv(C.CACHE_ENV, "0")
        return C.load_config()


def no_parse(monkeypatch):
    def refuse(name, data):
        raise AssertionError(f"parsed {name} although the cache is valid")
    monkeypatch.setattr(C, "_parse_bytes", refuse)


def test_cached_config_equals_a_fresh_parse(cache, monkeypatch):
    expected = fresh(monkeypatch)
    first = C.load_config()
    assert len(list(cache.glob("config-*.bin"))) == 1
    no_parse(monkeypatch)
    second = C.load_config()
    assert second == expected == first
    assert second.digest == expected.digest
    assert list(second.modules) == list(expected.modules)
    assert second.modules["time"] == expected.modules["time"]


def test_a_changed_config_file_is_parsed_again(cache, monkeypatch):
    user = os.path.join(C.USER_DIR)
    os.makedirs(user)
    path = os.path.join(user, "mine.toml")
    with open(path, "w") as f:
        f.write('[modules."time"]\nproxy = ["time"]\n')
    one = C.load_config()
    assert one.modules["time"].proxy == ("time",)
    with open(path, "w") as f:
        f.write('[modules."time"]\nproxy = ["time", "monotonic"]\n')
    two = C.load_config()
    assert two.modules["time"].proxy == ("time", "monotonic")
    assert two.digest != one.digest
    assert two == fresh(monkeypatch)


def test_a_damaged_cache_file_is_ignored(cache, monkeypatch):
    expected = C.load_config()
    (entry,) = cache.glob("config-*.bin")
    data = entry.read_bytes()
    assert data.count(b"time") >= 1
    entry.write_bytes(data.replace(b"time", b"tame", 1))    # the checksum no longer matches
    assert C.load_config() == expected
    entry.write_text("garbage")
    assert C.load_config() == expected


def test_a_bad_config_still_fails_with_its_error(cache):
    os.makedirs(C.USER_DIR)
    with open(os.path.join(C.USER_DIR, "bad.toml"), "w") as f:
        f.write("[modules.\n")
    with pytest.raises(C.ConfigError, match="bad.toml"):
        C.load_config()
    assert not list(cache.glob("config-*.bin"))


def test_cache_off(tmp_path, monkeypatch):
    monkeypatch.setenv(C.CACHE_ENV, "0")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    C.load_config()
    assert not list(tmp_path.rglob("*.bin"))


def test_toml_cache_returns_the_parsed_document(cache, tmp_path):
    import tomllib
    path = tmp_path / "x.toml"
    path.write_text('a = [1, "b"]\n[t]\nc = true\n')
    assert C.load_toml_cached(path) == tomllib.loads(path.read_text())
    assert C.load_toml_cached(path) == tomllib.loads(path.read_text())
    assert len(list(cache.glob("toml-*.bin"))) == 1
    path.write_text('a = 2\n')
    assert C.load_toml_cached(path) == {"a": 2}

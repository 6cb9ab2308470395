"""The boundary-config loader: schema, precedence, version gates, digest."""
from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from retracesoftware.utils.records import FrozenInstanceError
from retracesoftware.install import config as cfgmod
from retracesoftware.install.config import (
    BoundaryConfig,
    ModuleConfig,
    TypeConfig,
    default_search_path,
    load_config,
    load_file,
    parse_text,
    parse_version,
    shipped_config_dir,
)
from retracesoftware.utils.errors import ConfigError

EXAMPLE = Path(__file__).parent / "config_example.toml"


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def example_dir(tmp_path):
    """A directory holding only the example config."""
    d = tmp_path / "example"
    write(d, EXAMPLE.name, EXAMPLE.read_text())
    return d


# -- schema ---------------------------------------------------------------


def test_example_parses_into_every_directive(example_dir):
    cfg = load_config([example_dir], python_version=(3, 12, 1), platform="linux")
    mod = cfg.modules["retrace_example"]
    assert mod == ModuleConfig(
        name="retrace_example",
        proxy=("fetch", "now", "register_handler"),
        disable=("_read_own_source",),
        bind=("_default_client",),
        immutable=("Stamp",),
        patch_hash=("Token",),
        callback={"register_handler": (0, "on_error")},
        types={
            "Client": TypeConfig(
                name="Client",
                methods=("send", "recv", "close"),
                getters=("timeout",),
                construct=False,
                callback={"send": (1,)},
            ),
            "Client312": TypeConfig(name="Client312", methods=("poll",)),
        },
    )
    assert list(cfg.modules) == ["retrace_example", "retrace_example.linux"]
    assert cfg.modules["retrace_example.linux"].proxy == ("epoll_wait",)
    assert cfg.sources["retrace_example"].endswith("config_example.toml")


def test_when_gates_modules_and_types(example_dir):
    d = example_dir
    old = load_config([d], python_version="3.11.7", platform="linux")
    assert "Client312" not in old.modules["retrace_example"].types
    assert "Client" in old.modules["retrace_example"].types
    mac = load_config([d], python_version=(3, 13), platform="darwin")
    assert "retrace_example.linux" not in mac.modules
    assert "Client312" in mac.modules["retrace_example"].types
    # python clauses compare at the precision written: <4 holds for 3.x
    assert "retrace_example.linux" in load_config([d], python_version=(3, 99), platform="linux").modules
    # the resolved config no longer carries its gates
    assert all(t.when is None for t in mac.modules["retrace_example"].types.values())


@pytest.mark.parametrize(
    "spec,version,expected",
    [
        (">=3.12", (3, 11, 9), False),
        (">=3.12", (3, 12, 0), True),
        (">3.12", (3, 12, 5), False),  # precision of the spec: 3.12 is not > 3.12
        (">3.12", (3, 13, 0), True),
        ("==3.12", (3, 12, 7), True),
        ("!=3.12", (3, 12, 7), False),
        (">=3.11, <3.13", (3, 13, 0), False),
        (">=3.11, <3.13", (3, 11, 0), True),
        ("<=3.12.1", (3, 12, 1), True),
        ("<=3.12.1", (3, 12, 2), False),
    ],
)
def test_python_spec(spec, version, expected, tmp_path):
    write(tmp_path, "m.toml", f'[modules."m"]\nproxy = ["f"]\nwhen = {{ python = "{spec}" }}\n')
    assert ("m" in load_config([tmp_path], python_version=version).modules) is expected


def test_default_python_version_is_this_interpreter(tmp_path):
    major, minor = sys.version_info[:2]
    write(tmp_path, "a.toml", f'[modules."here"]\nwhen = {{ python = "=={major}.{minor}" }}\n')
    write(tmp_path, "b.toml", f'[modules."elsewhere"]\nwhen = {{ python = "!={major}.{minor}" }}\n')
    assert list(load_config([tmp_path]).modules) == ["here"]


def test_platform_default_is_sys_platform(tmp_path):
    write(tmp_path, "a.toml", f'[modules."here"]\nwhen = {{ platform = "{sys.platform}" }}\n')
    write(tmp_path, "b.toml", '[modules."elsewhere"]\nwhen = { platform = ["no-such-os"] }\n')
    assert list(load_config([tmp_path]).modules) == ["here"]


def test_config_objects_are_read_only(example_dir):
    cfg = load_config([example_dir])
    with pytest.raises(FrozenInstanceError):      # (an AttributeError, as dataclasses')
        cfg.digest = "x"
    with pytest.raises(TypeError):
        cfg.modules["time"] = ModuleConfig("time")
    with pytest.raises(TypeError):
        cfg.modules["retrace_example"].callback["x"] = (0,)


def test_empty_module_table_is_allowed(tmp_path):
    write(tmp_path, "ssl.toml", '[modules."ssl"]\n')
    assert load_config([tmp_path]).modules["ssl"] == ModuleConfig("ssl")


def test_factory_and_type_may_share_a_name(tmp_path):
    # select.poll() is a function returning objects of a type named poll
    write(tmp_path, "s.toml", '[modules."select"]\nproxy = ["poll"]\n[modules."select".types."poll"]\nmethods = ["poll"]\n')
    mod = load_config([tmp_path]).modules["select"]
    assert mod.proxy == ("poll",) and mod.types["poll"].methods == ("poll",)


# -- search path and precedence -------------------------------------------


def test_override_replaces_the_whole_module(tmp_path):
    shipped = tmp_path / "shipped"
    override = tmp_path / "override"
    write(shipped, "time.toml", """\
        [modules."time"]
        proxy = ["time", "sleep"]
        immutable = ["struct_time"]
        [modules."random"]
        bind = ["_inst"]
        """)
    write(override, "mine.toml", '[modules."time"]\nproxy = ["monotonic"]\n')
    cfg = load_config([override, shipped])
    assert cfg.modules["time"] == ModuleConfig("time", proxy=("monotonic",))  # nothing merged in
    assert cfg.modules["random"].bind == ("_inst",)
    assert cfg.sources == {"time": str(override / "mine.toml"), "random": str(shipped / "time.toml")}
    assert cfg.files == (str(override / "mine.toml"), str(shipped / "time.toml"))
    # order matters: the other way round the shipped one wins
    assert load_config([shipped, override]).modules["time"].proxy == ("time", "sleep")


def test_default_search_path_order(tmp_path, monkeypatch):
    env1, env2 = tmp_path / "env1", tmp_path / "env2"
    env1.mkdir()
    env2.mkdir()
    monkeypatch.setenv("RETRACE_MODULES_PATH", os.pathsep.join([str(env1), "", str(env2)]))
    monkeypatch.chdir(tmp_path)
    dirs = default_search_path()
    assert dirs[:3] == [env1, env2, tmp_path / ".retrace" / "modules"]
    assert dirs[3] == shipped_config_dir()
    assert len(dirs) == 4


def test_env_beats_dot_retrace_beats_shipped(tmp_path, monkeypatch):
    env = tmp_path / "env"
    user = tmp_path / "proj" / ".retrace" / "modules"
    write(env, "a.toml", '[modules."retrace_probe"]\nproxy = ["from_env"]\n')
    write(user, "a.toml", '[modules."retrace_probe"]\nproxy = ["from_user"]\n[modules."time"]\nproxy = ["from_user"]\n')
    monkeypatch.setenv("RETRACE_MODULES_PATH", str(env))
    monkeypatch.chdir(tmp_path / "proj")
    cfg = load_config()
    assert cfg.modules["retrace_probe"].proxy == ("from_env",)
    assert cfg.sources["retrace_probe"] == str(env / "a.toml")
    # ./.retrace/modules replaces the shipped time config (if one ships)
    assert cfg.modules["time"].proxy == ("from_user",)
    assert cfg.sources["time"] == str(user / "a.toml")
    monkeypatch.delenv("RETRACE_MODULES_PATH")
    assert load_config().modules["retrace_probe"].proxy == ("from_user",)


def test_missing_env_directory_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRACE_MODULES_PATH", str(tmp_path / "typo"))
    with pytest.raises(ConfigError, match=r"^\$RETRACE_MODULES_PATH: '.*typo' is not a directory — expected"):
        load_config()


def test_missing_directories_in_search_path_are_skipped(tmp_path):
    cfg = load_config([tmp_path / "nope", tmp_path])
    assert dict(cfg.modules) == {} and cfg.files == ()


def test_only_toml_files_are_read_in_name_order(tmp_path):
    write(tmp_path, "b.toml", '[modules."b"]\n')
    write(tmp_path, "a.toml", '[modules."a"]\n')
    write(tmp_path, "notes.txt", "not toml [")
    write(tmp_path, ".hidden.toml", "not toml [")
    assert load_config([tmp_path]).files == (str(tmp_path / "a.toml"), str(tmp_path / "b.toml"))


def test_same_module_twice_in_one_directory_is_an_error(tmp_path):
    write(tmp_path, "a.toml", '[modules."time"]\nproxy = ["time"]\n')
    write(tmp_path, "b.toml", '# second\n[modules."time"]\nproxy = ["sleep"]\n')
    with pytest.raises(ConfigError) as info:
        load_config([tmp_path])
    assert str(info.value) == (
        f'{tmp_path / "b.toml"}:2: modules."time": also defined in {tmp_path / "a.toml"}:1 (same directory)'
        " — expected one active definition per directory; gate alternatives with [requires] or when"
    )


def test_alternatives_gated_apart_may_share_a_directory(tmp_path):
    write(tmp_path, "a.toml", '[modules."m"]\nproxy = ["old"]\nwhen = { python = "<3.12" }\n')
    write(tmp_path, "b.toml", '[modules."m"]\nproxy = ["new"]\nwhen = { python = ">=3.12" }\n')
    assert load_config([tmp_path], python_version=(3, 11)).modules["m"].proxy == ("old",)
    assert load_config([tmp_path], python_version=(3, 13)).modules["m"].proxy == ("new",)


def test_gated_out_override_does_not_override(tmp_path):
    shipped, override = tmp_path / "shipped", tmp_path / "override"
    write(shipped, "time.toml", '[modules."time"]\nproxy = ["time"]\n')
    write(override, "a.toml", '[requires]\ndistribution = "absent-dist"\n[modules."time"]\nproxy = ["sleep"]\n')
    write(override, "b.toml", '[modules."time".types.struct_time]\nwhen = { python = "<3" }\n[modules."time"]\nwhen = { python = "<3" }\n')
    cfg = load_config([override, shipped], installed={})
    assert cfg.modules["time"].proxy == ("time",)
    assert cfg.sources["time"] == str(shipped / "time.toml")
    cfg = load_config([override, shipped], installed={"absent_dist": "1"})
    assert cfg.modules["time"].proxy == ("sleep",)


def test_errors_in_gated_out_files_are_still_errors(tmp_path):
    write(tmp_path, "a.toml", '[requires]\ndistribution = "not-installed-xyz"\n[modules."m"]\nproxxy = []\n')
    with pytest.raises(ConfigError, match="did you mean 'proxy'"):
        load_config([tmp_path], installed={})


def test_shipped_configs_all_validate():
    # whatever the package ships today (possibly nothing) must load cleanly
    cfg = load_config([shipped_config_dir()])
    for name, source in cfg.sources.items():
        assert source.endswith(".toml"), (name, source)


# -- version gates --------------------------------------------------------

REQUESTS_CFG = """\
[requires]
distribution = "Requests"
min_version = "2.0"
max_version = "3"

[modules."requests.sessions"]
proxy = ["request"]
"""


@pytest.mark.parametrize(
    "installed,applied",
    [
        ({}, False),  # not installed
        ({"requests": "1.9.9"}, False),
        ({"requests": "2.0rc1"}, False),  # a pre-release of 2.0 is below 2.0
        ({"requests": "2.0"}, True),
        ({"requests": "2.0.0"}, True),
        ({"requests": "2.31.0"}, True),
        ({"requests": "2.99.dev3"}, True),
        ({"requests": "3.0.dev1"}, True),  # below 3 (max is exclusive)
        ({"requests": "3.0"}, False),
        ({"requests": "not a version"}, False),
        ({"REQUESTS": "2.5"}, True),  # names are normalised (PEP 503)
        ({"other": "2.5"}, False),
    ],
)
def test_requires_gate_with_injected_versions(tmp_path, installed, applied):
    write(tmp_path, "requests.toml", REQUESTS_CFG)
    cfg = load_config([tmp_path], installed=installed)
    assert ("requests.sessions" in cfg.modules) is applied
    assert cfg.files == (str(tmp_path / "requests.toml"),)  # read either way


def test_requires_gate_against_a_really_installed_distribution(tmp_path):
    have = importlib.metadata.version("msgpack")
    write(tmp_path, "low.toml", '[requires]\ndistribution = "msgpack"\nmin_version = "0.1"\n[modules."mp_low"]\n')
    write(tmp_path, "here.toml", f'[requires]\ndistribution = "msgpack"\nmin_version = "{have}"\n[modules."mp_here"]\n')
    write(tmp_path, "high.toml", '[requires]\ndistribution = "msgpack"\nmin_version = "9999"\n[modules."mp_high"]\n')
    write(tmp_path, "capped.toml", f'[requires]\ndistribution = "msgpack"\nmax_version = "{have}"\n[modules."mp_capped"]\n')
    write(tmp_path, "absent.toml", '[requires]\ndistribution = "retrace-no-such-distribution"\n[modules."absent"]\n')
    write(tmp_path, "any.toml", '[requires]\ndistribution = "msgpack"\n[modules."mp_any"]\n')
    assert sorted(load_config([tmp_path]).modules) == ["mp_any", "mp_here", "mp_low"]


@pytest.mark.parametrize(
    "lower,higher",
    [
        ("1.0.dev1", "1.0a1"),
        ("1.0a1", "1.0a2"),
        ("1.0a2", "1.0b1"),
        ("1.0b1", "1.0rc1"),
        ("1.0rc1", "1.0"),
        ("1.0", "1.0.post1"),
        ("1.0.post1", "1.1.dev0"),
        ("1.9", "1.10"),
        ("2.0.1", "2.1"),
        ("1!0.1", "1!0.2"),
        ("99", "1!0"),
        ("1.0a1.dev1", "1.0a1"),
    ],
)
def test_version_order(lower, higher):
    assert parse_version(lower) < parse_version(higher)


@pytest.mark.parametrize("a,b", [("1.0", "1.0.0"), ("1.0", "v1.0"), ("1.0+local", "1.0"), ("1.0RC1", "1.0rc1"), ("1.0-1", "1.0.post1")])
def test_version_equal(a, b):
    assert parse_version(a) == parse_version(b)


@pytest.mark.parametrize("bad", ["", "abc", "1..0", "1.0-beta-x", "1.0+"])
def test_version_unparsable(bad):
    with pytest.raises(ValueError):
        parse_version(bad)


# -- digest ---------------------------------------------------------------

DIGEST_SCRIPT = """
import sys
from retracesoftware.install.config import load_config
print(load_config([sys.argv[1]], python_version=(3, 12), platform="linux", installed={}).digest)
"""


def test_digest_is_stable_across_processes(tmp_path, example_dir):
    d = example_dir
    digests = set()
    for seed in ("0", "1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run(
            [sys.executable, "-W", "ignore", "-c", DIGEST_SCRIPT, str(d)],
            env=env, capture_output=True, text=True, check=True, cwd=tmp_path,
        )
        digests.add(out.stdout.strip())
    here = load_config([d], python_version=(3, 12), platform="linux", installed={}).digest
    assert digests == {here}
    assert len(here) == 64 and int(here, 16) >= 0


def test_digest_changes_with_any_directive(tmp_path):
    base = '[modules."m"]\nproxy = ["a", "b"]\n[modules."m".types."T"]\nmethods = ["x"]\n'
    write(tmp_path / "0", "m.toml", base)
    seen = {load_config([tmp_path / "0"]).digest}
    variants = [
        base.replace('["a", "b"]', '["a", "b", "c"]'),
        base.replace("proxy", "disable"),
        base.replace('methods = ["x"]', 'methods = ["x"]\nconstruct = false'),
        base.replace('methods = ["x"]', 'getters = ["x"]'),
        base + 'callback = { x = [0] }\n',
        base.replace('"m"', '"n"'),
        base.replace('"T"', '"U"'),
    ]
    for i, text in enumerate(variants, 1):
        write(tmp_path / str(i), "m.toml", text)
        seen.add(load_config([tmp_path / str(i)]).digest)
    assert len(seen) == len(variants) + 1


def test_digest_ignores_layout_and_order(tmp_path):
    grouped = tmp_path / "grouped"
    split = tmp_path / "split"
    write(grouped, "all.toml", '[modules."a"]\nproxy = ["f", "g"]\ncallback = { f = [0, "cb", 2] }\n[modules."b"]\nbind = ["x"]\n')
    write(split, "b.toml", '[modules."b"]\nbind = ["x"]\n')
    write(split, "a.toml", '# same thing, other order\n[modules."a"]\ncallback.f = ["cb", 2, 0]\nproxy = ["g", "f"]\n')
    assert load_config([grouped]).digest == load_config([split]).digest


def test_digest_reflects_gating(tmp_path):
    write(tmp_path, "m.toml", '[modules."m"]\nproxy = ["f"]\n[modules."m".types.T]\nmethods = ["x"]\nwhen = { python = ">=3.12" }\n')
    assert load_config([tmp_path], python_version=(3, 11)).digest != load_config([tmp_path], python_version=(3, 12)).digest
    write(tmp_path / "plain", "m.toml", '[modules."m"]\nproxy = ["f"]\n')
    assert load_config([tmp_path], python_version=(3, 11)).digest == load_config([tmp_path / "plain"]).digest


def test_empty_config_has_a_digest(tmp_path):
    cfg = load_config([tmp_path])
    assert isinstance(cfg, BoundaryConfig) and len(cfg.digest) == 64


# -- single files ---------------------------------------------------------


def test_load_file_keeps_gates_unresolved():
    f = load_file(EXAMPLE)
    assert f.requires is None
    assert f.modules["retrace_example.linux"].when.platform == ("linux",)
    assert f.modules["retrace_example"].types["Client312"].when.python == ((">=", (3, 12)),)
    assert f.lines["retrace_example"] == 4


def test_parse_text_requires():
    f = parse_text(REQUESTS_CFG, "r.toml")
    assert f.requires == cfgmod.Requires("Requests", "2.0", "3")
    assert f.path == "r.toml"

"""Every broken config gives one exact line: file, line, key path, problem,
expectation (DESIGN §6).  One fixture file per case in configs_bad/."""
from __future__ import annotations

from pathlib import Path

import pytest

from retracesoftware.install.config import load_file, parse_text
from retracesoftware.utils.errors import ConfigError, RetraceError

BAD = Path(__file__).parent / "configs_bad"

CASES = {
    "syntax_error.toml":
        "syntax_error.toml:3: TOML syntax error: expected '=' after a key in a key/value pair (column 7)"
        " — expected valid TOML (https://toml.io)",
    "unknown_directive.toml":
        "unknown_directive.toml:3: modules.\"time\".proxxy: unknown directive — did you mean 'proxy'?",
    "unknown_directive_no_match.toml":
        "unknown_directive_no_match.toml:3: modules.\"time\".frobnicate: unknown directive"
        " — expected one of proxy, disable, bind, immutable, patch_hash, callback, summarise, when, types",
    "string_not_list.toml":
        "string_not_list.toml:2: modules.\"time\".proxy: got a string — expected an array of names like [\"a\", \"b\"]",
    "non_string_item.toml":
        "non_string_item.toml:5: modules.\"random\".bind[1]: got an integer — expected a string",
    "construct_not_bool.toml":
        "construct_not_bool.toml:6: modules.\"_socket\".types.\"socket\".construct: got a string — expected true or false",
    "empty_module_name.toml":
        "empty_module_name.toml:4: modules.\"\": empty module name — expected a module import name like [modules.\"time\"]",
    "unknown_top_level.toml":
        "unknown_top_level.toml:2: module: unknown top-level table — did you mean 'modules'?",
    "requires_no_distribution.toml":
        "requires_no_distribution.toml:1: requires: missing 'distribution' — expected distribution = \"<name on PyPI>\"",
    "requires_bad_version.toml":
        "requires_bad_version.toml:3: requires.min_version: unparsable version 'two point oh'"
        " — expected a PEP 440 version like \"2.31\" or \"2.0rc1\"",
    "empty_version_range.toml":
        "empty_version_range.toml:4: requires.max_version: '2.0rc1' is not above min_version '2.0'"
        " — expected min_version < max_version (max_version is exclusive)",
    "bad_when.toml":
        "bad_when.toml:3: modules.\"asyncio.base_events\".when.python: bad version spec '3.12+'"
        " — expected comma-separated clauses like '>=3.12' or '>=3.11, <3.13'",
    "when_unknown_key.toml":
        "when_unknown_key.toml:5: modules.\"select\".when.pyhton: unknown condition — did you mean 'python'?",
    "proxy_and_disable.toml":
        "proxy_and_disable.toml:5: modules.\"os\".disable[1]: 'listdir' is also in proxy"
        " — expected each name in only one of proxy, disable, bind, immutable, types",
    "immutable_and_type.toml":
        "immutable_and_type.toml:4: modules.\"time\".types.\"struct_time\": 'struct_time' is also in immutable"
        " — expected each name in only one of proxy, disable, bind, immutable, types",
    "method_and_getter.toml":
        "method_and_getter.toml:6: modules.\"time\".types.\"struct_time\".getters[1]: '__reduce__' is also in methods"
        " — expected each name in only one of methods, getters",
    "listed_twice.toml":
        "listed_twice.toml:2: modules.\"time\".proxy[2]: 'time' is listed twice — expected each name once",
    "callback_bad_index.toml":
        "callback_bad_index.toml:3: modules.\"signal\".callback.\"signal\"[0]: got a float"
        " — expected an argument position (int >= 0) or a keyword name (str)",
    "callback_not_array.toml":
        "callback_not_array.toml:5: modules.\"atexit\".callback.\"register\": got an integer"
        " — expected a non-empty array of argument positions (int) or keyword names (str)",
    "callback_bad_function_name.toml":
        "callback_bad_function_name.toml:4: modules.\"_sqlite3\".types.\"Connection\".callback.\"create-collation\":"
        " invalid function name 'create-collation' — expected a Python identifier",
    "type_unknown_key.toml":
        "type_unknown_key.toml:2: modules.\"_socket\".types.\"socket\".method: unknown type directive"
        " — did you mean 'methods'?",
    "invalid_identifier.toml":
        "invalid_identifier.toml:2: modules.\"time\".proxy[1]: invalid name 'time-ns' — expected a Python identifier",
    "invalid_module_name.toml":
        "invalid_module_name.toml:1: modules.\"os..path\": invalid module name 'os..path'"
        " — expected a dotted import name like \"os.path\" or \"_socket\"",
}


def test_every_fixture_has_an_expected_message():
    assert sorted(p.name for p in BAD.glob("*.toml")) == sorted(CASES)
    assert len(CASES) >= 10


@pytest.mark.parametrize("name", sorted(CASES))
def test_broken_config_message(name, monkeypatch):
    monkeypatch.chdir(BAD)  # so the message names the file as given: "<name>:<line>"
    with pytest.raises(ConfigError) as info:
        load_file(name)
    message = str(info.value)
    assert message == CASES[name]
    assert "\n" not in message
    assert isinstance(info.value, RetraceError)
    assert info.value.file == name
    assert message.startswith(f"{name}:{info.value.line}: ")


def test_error_attributes_carry_the_parts():
    with pytest.raises(ConfigError) as info:
        parse_text('[modules."time"]\nproxy = ["time"]\nproxxy = ["sleep"]\n', "t.toml")
    err = info.value
    assert (err.file, err.line, err.key) == ("t.toml", 3, 'modules."time".proxxy')
    assert err.problem == "unknown directive"
    assert err.expected == "did you mean 'proxy'?"


def test_full_path_is_named_when_loaded_from_elsewhere(tmp_path):
    path = tmp_path / "x.toml"
    path.write_text('[modules."time"]\nproxy = "time"\n')
    with pytest.raises(ConfigError, match=r"^" + str(path).replace("\\", "\\\\") + r":2: "):
        load_file(path)


# Lines are found by re-scanning the text; these cases are built to fool a
# naive line search (a key name that also appears earlier in a string, a
# comment or another table).
SCANNER_CASES = [
    (
        'note = """\n[modules."time"]\nproxxy = 1\n"""\n',
        "t.toml:1: note: unknown top-level key",
    ),
    (
        '[modules."a"]\nproxy = ["x"]  # proxxy = [] in a comment\n\n[modules."b"]\n# proxxy\nproxxy = []\n',
        't.toml:6: modules."b".proxxy: unknown directive',
    ),
    (
        "[modules.'time']\n"
        'proxy = [\n    "time", # ]\n    """multi\nline""",\n]\n',
        't.toml:4: modules."time".proxy[1]: invalid name',
    ),
    (
        '[modules]\n"ti\\u006de" = { proxy = ["time"], disable = ["time"] }\n',
        't.toml:2: modules."time".disable[0]: \'time\' is also in proxy',
    ),
    (
        '[modules."x"]\nproxy = []\n[modules."x".types]\nA = { methods = ["a"] }\nB.methods = ["b", 3]\n',
        't.toml:5: modules."x".types."B".methods[1]: got an integer',
    ),
    (
        '[modules."x"]\nproxy = [\n  \'\'\'a\'\'\',\n  "b",\n  "c d",\n]\n',
        't.toml:5: modules."x".proxy[2]: invalid name \'c d\'',
    ),
    (
        '[requires]\ndistribution = "x"\n[modules."m"]\nproxy = ["f"]\n[modules."m".when]\nplatform = []\n',
        't.toml:6: modules."m".when.platform: got an array',
    ),
    (
        '[modules."x"]\nproxy = ["ok"]\nbind = ["class"]\n',
        't.toml:3: modules."x".bind[0]: invalid name \'class\' — expected a Python identifier',
    ),
    (
        '[modules."x"]\nimmutable = ["A.B", "A..B"]\n',
        't.toml:2: modules."x".immutable[1]: invalid name \'A..B\' — expected a dotted Python name',
    ),
    (
        '[modules."x"]\ncallback = { f = [-1] }\n',
        't.toml:2: modules."x".callback."f"[0]: negative position -1 — expected an int >= 0',
    ),
    (
        '[modules."x"]\ncallback = { f = [true] }\n',
        't.toml:2: modules."x".callback."f"[0]: got a boolean',
    ),
    (
        'modules = 3\n',
        't.toml:1: modules: got an integer',
    ),
    (
        '[[modules]]\nproxy = []\n',
        't.toml:1: modules: got an array',
    ),
    (
        '[modules."x"]\nproxy = ["a"',
        "t.toml:2: TOML syntax error:",
    ),
]


@pytest.mark.parametrize("text,prefix", SCANNER_CASES)
def test_error_line_is_found_past_decoys(text, prefix):
    with pytest.raises(ConfigError) as info:
        parse_text(text, "t.toml")
    assert str(info.value).startswith(prefix), str(info.value)
    assert "\n" not in str(info.value)


def test_not_utf8(tmp_path):
    path = tmp_path / "latin.toml"
    path.write_bytes(b'[modules."time"]\n# caf\xe9\nproxy = ["time"]\n')
    with pytest.raises(ConfigError, match=r"latin\.toml:2: invalid UTF-8 at byte 22 — expected UTF-8 text$"):
        load_file(path)


def test_unreadable_path(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read file"):
        load_file(tmp_path / "missing.toml")

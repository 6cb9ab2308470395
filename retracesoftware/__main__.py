"""`python -m retracesoftware ...` — see retracesoftware/cli.py."""
import os
import sys

#: options of the main command that take a value (cli.parse_args)
_VALUE_OPTIONS = ("--recording", "--pid", "--redact", "--no-redact", "--test", "--remap", "--thread-timeout")


def _plainly_records(argv) -> bool:
    """True when ``argv`` is certainly a record command (cli.parse_args would
    say "record"): ``[options] [record] --recording PATH [options] -- program``.
    Anything less certain says False and is left to cli/session."""
    if "--" not in argv:
        return False
    head = argv[:argv.index("--")]
    positional = []
    has_recording = False
    it = iter(head)
    for arg in it:
        if arg in ("-h", "--help"):
            return False
        name = arg.split("=", 1)[0] if arg.startswith("--") else arg
        if name == "--recording":
            has_recording = True
        if name in _VALUE_OPTIONS:
            if "=" not in arg and next(it, None) is None:
                return False
        elif not arg.startswith("-"):
            positional.append(arg)
    return has_recording and positional in ([], ["record"])


def _pin_hash_seed_first() -> None:
    """A recording runs with a known PYTHONHASHSEED; when none is set the
    interpreter must restart with one (session.py). Doing it here, before
    retrace imports anything, makes that restart cost one bare interpreter
    start instead of one with our imports. Same environment as session.py's
    own re-exec (which still runs when this one did not)."""
    seed = os.environ.get("PYTHONHASHSEED")
    if (seed is not None and seed != "random") or not _plainly_records(sys.argv[1:]):
        return
    seed = str(int.from_bytes(os.urandom(8), "little") % (2**32 - 1) + 1)   # 1 .. 2**32-1
    env = dict(os.environ)
    env["PYTHONHASHSEED"] = seed
    env["RETRACE_PINNED_HASHSEED"] = seed    # record_replay._HASHSEED_MARK (not imported: start-up)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable] + sys.orig_argv[1:], env)


def _plainly_replays(argv) -> bool:
    """True when ``argv`` is certainly a replay of one recording file
    (cli.parse_args would say "replay", no --pid/--test: the file named is
    the one replayed): ``[options] [replay] --recording PATH [options]``."""
    if "--" in argv:
        return False
    positional = []
    has_recording = False
    it = iter(argv)
    for arg in it:
        if arg in ("-h", "--help"):
            return False
        name = arg.split("=", 1)[0] if arg.startswith("--") else arg
        if name in ("--pid", "--test"):
            return False
        if name == "--recording":
            has_recording = True
        if name in _VALUE_OPTIONS:
            if "=" not in arg and next(it, None) is None:
                return False
        elif not arg.startswith("-"):
            positional.append(arg)
    return has_recording and positional in ([], ["replay"])


def _recording_arg(argv):
    for i, arg in enumerate(argv):
        if arg == "--recording" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--recording="):
            return arg.split("=", 1)[1]
    return None


#: docs/FORMAT.md: MAGIC, then the format version (u32 LE); frames are
#: length (u32 LE), crc32 (u32 LE), payload. (stream/_common.py, not
#: imported here: start-up.)
# Taken at import (before any program runs): recorded_hash_seed is also
# called by a replay's parent for each child it spawns (children.py), and
# our runtime never calls through an attribute the program may patch.
_stat = os.stat
_open = open
_S_IFMT, _S_IFREG = 0o170000, 0o100000

_MAGIC = b"\x89RTRC\r\n\x1a"
_VERSIONS = (1, 2)
#: msgpack type byte -> (bytes of its length field, fixed bytes after it) for
#: the kinds whose payload is skipped whole (str, bin, ext, numbers)
_SKIP = {0xc0: (0, 0), 0xc2: (0, 0), 0xc3: (0, 0),
         0xc4: (1, 0), 0xc5: (2, 0), 0xc6: (4, 0),          # bin
         0xc7: (1, 1), 0xc8: (2, 1), 0xc9: (4, 1),          # ext (+ type byte)
         0xca: (0, 4), 0xcb: (0, 8),                        # float
         0xcc: (0, 1), 0xcd: (0, 2), 0xce: (0, 4), 0xcf: (0, 8),
         0xd0: (0, 1), 0xd1: (0, 2), 0xd2: (0, 4), 0xd3: (0, 8),
         0xd4: (0, 2), 0xd5: (0, 3), 0xd6: (0, 5), 0xd7: (0, 9), 0xd8: (0, 17),   # fixext
         0xd9: (1, 0), 0xda: (2, 0), 0xdb: (4, 0)}          # str


def recorded_hash_seed(path):
    """The ``hash_seed`` entry of the recording's preamble (str or int as
    written), read with the file's framing and a msgpack walk only, not the
    stream package (~20 ms of imports in an image that only restarts).
    None when the file is not a whole, CRC-checked recording preamble that
    is a map with that key: the caller then leaves everything to
    replay_main, which reads the preamble with the stream reader and checks
    all of it (and the seed again) as before."""
    try:
        if _stat(path).st_mode & _S_IFMT != _S_IFREG:   # (a FIFO would block the open)
            return None
    except (OSError, ValueError):
        return None
    with _open(path, "rb") as f:
        head = f.read(len(_MAGIC) + 4 + 8)
        if len(head) < len(_MAGIC) + 12 or head[:len(_MAGIC)] != _MAGIC:
            return None
        if int.from_bytes(head[8:12], "little") not in _VERSIONS:
            return None
        length = int.from_bytes(head[12:16], "little")
        crc = int.from_bytes(head[16:20], "little")
        if length & 0x80000000 or length > 1 << 26:     # (the preamble is never compressed)
            return None
        data = f.read(length)
    import zlib
    if len(data) != length or zlib.crc32(data) != crc:
        return None
    return _map_entry(data, b"hash_seed")


def _map_entry(data, wanted):
    """The value of key *wanted* (a UTF-8 str key) in the msgpack map that is
    all of *data*, when it is an int or a str; None otherwise."""
    kind = data[0]
    if 0x80 <= kind <= 0x8f:
        n, pos = kind & 0x0f, 1
    elif kind == 0xde:
        n, pos = int.from_bytes(data[1:3], "big"), 3
    elif kind == 0xdf:
        n, pos = int.from_bytes(data[1:5], "big"), 5
    else:
        return None
    found = None
    for _ in range(n):
        key_start = pos
        pos = _skip(data, pos)
        key = data[key_start:pos]
        value_start = pos
        pos = _skip(data, pos)
        if key[1:] == wanted and key[0] == 0xa0 | len(wanted) and found is None:
            found = _scalar(data[value_start:pos])
    if pos != len(data):
        return None         # not exactly one map: not for us to judge
    return found


def _skip(data, pos):
    """The position after the msgpack value at *pos* (IndexError/ValueError
    on bytes that are not one)."""
    todo = 1
    while todo:
        todo -= 1
        kind = data[pos]
        if kind <= 0x7f or kind >= 0xe0:
            pos += 1
        elif kind <= 0x8f:
            todo += 2 * (kind & 0x0f)
            pos += 1
        elif kind <= 0x9f:
            todo += kind & 0x0f
            pos += 1
        elif kind <= 0xbf:
            pos += 1 + (kind & 0x1f)
        elif kind in (0xdc, 0xdd, 0xde, 0xdf):
            width = 2 if kind in (0xdc, 0xde) else 4
            count = int.from_bytes(data[pos + 1:pos + 1 + width], "big")
            todo += count * (2 if kind >= 0xde else 1)
            pos += 1 + width
        else:
            width, fixed = _SKIP[kind]        # KeyError (0xc1): not msgpack
            size = int.from_bytes(data[pos + 1:pos + 1 + width], "big") if width else 0
            pos += 1 + width + fixed + size
        if pos > len(data):
            raise ValueError("truncated")
    return pos


def _scalar(raw):
    kind = raw[0]
    if kind <= 0x7f:
        return kind
    if 0xcc <= kind <= 0xcf:
        return int.from_bytes(raw[1:], "big")
    if 0xa0 <= kind <= 0xbf:
        return raw[1:].decode("utf-8")
    if kind == 0xd9:
        return raw[2:].decode("utf-8")
    return None


def _pin_replay_hash_seed_first() -> None:
    """A replay runs with the recording's PYTHONHASHSEED; when this
    interpreter has another one it must restart (record_replay.replay_main).
    Read the seed here, with the stream reader only, and restart before the
    runtime's imports: the first image then costs one interpreter start and
    the reader's import instead of one with our whole runtime. Anything
    unusual (no file, a damaged or foreign preamble, a bad seed) is left to
    replay_main, which checks and reports it, and re-execs there as before."""
    argv = sys.argv[1:]
    pinned = os.environ.get("RETRACE_PINNED_HASHSEED")
    if (pinned is not None and pinned == os.environ.get("PYTHONHASHSEED")) or not _plainly_replays(argv):
        return     # (restarted by us already: replay_main checks the seed)
    path = _recording_arg(argv)
    if not path:
        return
    # What replay reads imports nothing from the current directory
    # (cli._forget_cwd_on_path, done again there).
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = None
    sys.path[:] = [p for p in sys.path if p not in ("", ".") and p != cwd]
    try:
        seed = recorded_hash_seed(path)
        if type(seed) is str and seed.isascii() and seed.isdigit() and len(seed) <= 10:
            seed = int(seed)
        if type(seed) is not int or not 0 <= seed <= 2**32 - 1:
            return
    except Exception:
        return
    seed = str(seed)
    if os.environ.get("PYTHONHASHSEED") == seed:
        return
    env = dict(os.environ)
    env["PYTHONHASHSEED"] = seed
    env["RETRACE_PINNED_HASHSEED"] = seed    # record_replay._HASHSEED_MARK (not imported: start-up)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable] + sys.orig_argv[1:], env)


def main(argv=None) -> int:
    """The ``retrace`` console script and ``python -m retracesoftware``."""
    if argv is None:
        _pin_hash_seed_first()
        _pin_replay_hash_seed_first()
        args = sys.argv[1:]
        if _plainly_records(args) or _plainly_replays(args):
            # No automatic collection while our runtime imports and
            # installs; the session resumes it (utils/startup.py).
            from retracesoftware.utils.startup import pause_collector
            pause_collector()
    from retracesoftware.cli import main as cli_main
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())

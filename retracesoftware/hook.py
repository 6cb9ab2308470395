"""``enable-hook`` / ``disable-hook``: record every python started in a venv.

``enable-hook`` writes ``retracesoftware-autoenable.pth`` into this
environment's site-packages. Its one line costs an environment lookup at
start-up; only when ``RETRACE=1`` or ``RETRACE_RECORDING`` is set (a
recording path is enough) does it import us and start recording the
process into ``$RETRACE_RECORDING`` (default ``retrace-{pid}.bin`` in the
current directory; ``{pid}`` and strftime patterns expanded). pip, and our
own commands, are never recorded.
"""
from __future__ import annotations

import os
import sys
import sysconfig

PTH_NAME = "retracesoftware-autoenable.pth"
PTH_LINE = ("import os; (os.environ.get('RETRACE') == '1' or bool(os.environ.get('RETRACE_RECORDING'))) "
            "and __import__('retracesoftware.autoenable').autoenable.start()\n")


def pth_path() -> str:
    return os.path.join(sysconfig.get_paths()["purelib"], PTH_NAME)


def enable_main(opts) -> int:
    path = pth_path()
    with open(path, "w") as fh:
        fh.write(PTH_LINE)
    sys.stderr.write(f"retrace: hook enabled ({path}); set RETRACE=1 to record every python in this environment\n")
    return 0


def disable_main(opts) -> int:
    path = pth_path()
    try:
        os.unlink(path)
    except FileNotFoundError:
        sys.stderr.write("retrace: hook was not enabled\n")
        return 0
    sys.stderr.write(f"retrace: hook disabled ({path} removed)\n")
    return 0

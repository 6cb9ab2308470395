"""`python -m retracesoftware ...` — see retracesoftware/cli.py."""
import sys

from retracesoftware.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""retracesoftware.install — configs, patching, import hooks (see README.md)."""

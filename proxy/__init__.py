"""retracesoftware.proxy — the record/replay engine (see README.md)."""

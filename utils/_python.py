"""Pure-Python backend of retracesoftware.utils."""

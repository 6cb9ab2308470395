"""Pure-Python backend of retracesoftware.stream."""

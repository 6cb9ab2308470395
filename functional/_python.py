"""Pure-Python backend of retracesoftware.functional."""

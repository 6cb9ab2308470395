"""Views of recordings: ``events``, ``diff``, ``fork`` (one module per
command, each a thin CLI over a function a Python user can call)."""

"""Suite-wide set-up. Tests import the *installed* package (importlib mode);
only this folder goes on sys.path, for the shared helpers in retrace_testing.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

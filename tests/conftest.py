"""Suite-wide fixtures. Tests import the *installed* package (importlib mode)."""

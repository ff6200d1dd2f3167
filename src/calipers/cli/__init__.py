"""The ``calipers`` command line: one thin module per command over the library."""

from calipers.cli.main import app, main

__all__ = ["app", "main"]

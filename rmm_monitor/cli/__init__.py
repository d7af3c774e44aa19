"""The `rmm` console script."""

from .app import main

__all__ = ["main"]

"""The quarterly effectiveness evaluation: one snapshot as of T (evaluation.py) from the file or the worker
(sources.py), written as xlsx, csv/parquet, html/pdf with charts, and a manifest of hashes."""

from .evaluation import FILES, Progress, Snapshot, export, gather
from .sources import LocalSource, RemoteSource, extras

__all__ = ["FILES", "Progress", "Snapshot", "export", "gather", "LocalSource", "RemoteSource", "extras"]

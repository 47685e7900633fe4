"""Shipped data: ``<device-profile>/<LayerType>.csv``, link profiles and trained bundles.

Installed as ``dnnsplit.datasets`` (the repository folder is ``datasets/``), so it cannot clash
with other distributions' top-level ``datasets`` package.
"""

from importlib.resources import files
from pathlib import Path


def root() -> Path:
    """Folder holding one sub-folder per device profile."""
    return Path(str(files(__name__)))


def profiles() -> list[str]:
    """Names of the shipped device profiles (folders with at least one CSV)."""
    return sorted(p.name for p in root().iterdir() if p.is_dir() and any(p.glob("*.csv")))

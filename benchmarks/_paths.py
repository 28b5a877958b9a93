"""Where the benchmark scripts find the datasets they share: ``../shared/data/<name>`` beside the repository.

The scripts run as ``python benchmarks/NAME.py``, so this sibling module imports as ``_paths`` (the script's
folder is first on ``sys.path``). The datasets are not in the repository; every script takes ``--root`` (or
``--kvasir``) for another place, and these paths are only the defaults.

Example:
    >>> shared_dataset("kvasir_seg") == REPO.parent / "shared" / "data" / "kvasir_seg"
    True
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["REPO", "shared_dataset"]

#: The repository root (the folder holding ``benchmarks/``).
REPO: Path = Path(__file__).resolve().parents[1]


def shared_dataset(name: str) -> Path:
    """``<repository>/../shared/data/<name>``: the default folder of the shared dataset ``name`` (say
    ``"kvasir_seg"``); it need not exist."""
    return REPO.parent / "shared" / "data" / name

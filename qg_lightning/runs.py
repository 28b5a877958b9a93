"""Where a run's files land."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L

__all__ = ["run_dir"]


def run_dir(trainer: L.Trainer | None) -> Path:
    """The run's folder: the logger's version folder, else ``trainer.default_root_dir`` (cwd without a trainer).

    Collective under DDP (``trainer.log_dir`` broadcasts from rank 0): call it on every rank, never from inside
    ``rank_zero_only`` code, then hand the path to the rank-zero writer.
    """
    if trainer is None:
        return Path.cwd()
    log_dir = trainer.log_dir
    if not isinstance(log_dir, (str, os.PathLike)):  # no logger, or fast_dev_run's DummyLogger
        log_dir = trainer.default_root_dir
    return Path(log_dir)

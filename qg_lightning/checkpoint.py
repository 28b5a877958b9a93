"""The one place where qg_lightning reads checkpoints: always ``torch.load(..., weights_only=True)``."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

__all__ = ["UnsafeCheckpointError", "load_checkpoint", "atomic_save"]


class UnsafeCheckpointError(RuntimeError):
    """Raised when a checkpoint can only be read by executing arbitrary pickled code."""


def load_checkpoint(
    path: str | os.PathLike, *, map_location: str | torch.device = "cpu", what: str = "checkpoint"
) -> dict:
    """Load a checkpoint dict with ``weights_only=True``; nothing in the file is executed.

    Args:
        path: file written by ``torch.save`` / Lightning.
        map_location: device for the tensors.
        what: how to name the file in errors (e.g. ``"predictor checkpoint"``).

    Raises:
        FileNotFoundError: the file does not exist.
        UnsafeCheckpointError: the pickle needs arbitrary code (refused, not run).
        ValueError: the file is not a checkpoint dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{what} not found: '{path}'. Check the path (it must point to a .ckpt/.pt file)."
        )
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f"Refused to load {what} '{path}': it contains objects that only a full (unsafe) unpickle could build, "
            f"so it may run code. Re-save it with plain tensors and primitive hyper-parameters. Details: {err}"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(
            f"Could not read {what} '{path}': {err}. Is it a complete torch checkpoint?"
        ) from None
    if not isinstance(obj, dict):
        raise ValueError(f"{what} '{path}' holds a {type(obj).__name__}, expected a checkpoint dict.")
    return obj


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``.

    A crash mid-write leaves the previous file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()

"""The one place where qg_lightning reads checkpoints: always ``torch.load(..., weights_only=True)``."""

from __future__ import annotations

import os
import pickle
import uuid
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

__all__ = ["AtomicCheckpointIO", "UnsafeCheckpointError", "atomic_save", "load_checkpoint"]


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
    """``torch.save`` to a temporary file in the same folder, flush it to disk, then rename it over ``path``.

    A crash or a kill at any moment leaves either the previous file or the new one at ``path``, never a
    truncated file (the rename is atomic within one file system; the temporary file is removed on error, or
    left as a hidden ``.NAME.tmp-PID`` after a SIGKILL).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     atomic_save({"x": torch.ones(2)}, Path(tmp) / "a.ckpt")
        ...     load_checkpoint(Path(tmp) / "a.ckpt")["x"].tolist(), sorted(os.listdir(tmp))
        ([1.0, 1.0], ['a.ckpt'])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the temporary name must not contain "last": Lightning's `--ckpt_path last` picks any "*last*" file
    tmp = path.with_name(f".partial-{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def _fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that writes local checkpoints with :func:`atomic_save`.

    Lightning's default writes through an fsspec transaction whose temporary file lives in the system temp
    folder; when that is another file system the final move is a copy, and a kill during it truncates the
    checkpoint. This plugin writes next to the target and renames, so ``last.ckpt`` is always a complete
    checkpoint. Remote paths (``s3://``...) go to Lightning's implementation. ``qg-lightning fit`` adds it
    unless the config sets another checkpoint IO plugin; with your own Trainer pass
    ``plugins=[AtomicCheckpointIO()]``.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options=storage_options)
            return
        atomic_save(checkpoint, path)

"""General-purpose callbacks (quality guidance lives in :mod:`qg_lightning.guidance`)."""

from __future__ import annotations

import datetime
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import ModelCheckpoint as _LightningModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from typing_extensions import override

from qg_lightning.methods.supervised import labeled_part
from qg_lightning.runs import run_dir, stop_other_ranks
from qg_lightning.visualize import image_grid, overlay_masks, save_png

__all__ = ["ExactResume", "ModelCheckpoint", "TestOverlayCallback", "rng_state", "set_rng_state"]

log = logging.getLogger(__name__)


def rng_state() -> dict[str, Any]:
    """This process's global random-number-generator states (torch, CUDA, NumPy, Python) as plain tensors and
    numbers, loadable with ``weights_only=True``.

    Example:
        >>> state = rng_state(); a = torch.rand(2); set_rng_state(state); bool((torch.rand(2) == a).all())
        True
    """
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [
            str(kind),
            torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            int(pos),
            int(has_gauss),
            float(gauss),
        ],
        "python": [int(version), list(internal), gauss_next],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (CUDA states only when CUDA is initialised)."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.set_rng_state_all(state["cuda"])


class ModelCheckpoint(_LightningModelCheckpoint):
    """Lightning's :class:`~qg_lightning.callbacks.ModelCheckpoint` whose ``last.ckpt`` is always the
    latest state, and which ``fit --ckpt_path last`` finds in the run's earlier logger versions.

    * Since Lightning 2.5, ``save_last=True`` rewrites ``last.ckpt`` only when a top-k checkpoint is written
      too: with ``monitor="val/dice"`` and an epoch that did not improve, ``last.ckpt`` silently stays at the
      best epoch and ``fit --ckpt_path last`` resumes from there, repeating epochs. This subclass writes
      ``last.ckpt`` at every save point (each validation, epoch end or ``every_n_train_steps``) whether or
      not the monitored value improved.
    * Without ``dirpath``, checkpoints go to the logger's version folder (``<save_dir>/<name>/version_N/
      checkpoints``), and a new ``fit`` logs to a new version, so Lightning looks for ``last`` in an empty
      folder and trains from scratch with only a warning. This subclass also looks in the other versions of
      the same ``<save_dir>/<name>`` and resumes from the newest ``last*.ckpt`` there (the resumed run still
      logs to its own new version).

    * ``copy_best_to``: after every new best checkpoint, a copy of it at this fixed path (e.g.
      ``runs/predictor/quality_predictor.ckpt``), so later commands can name the best weights without the
      version folder or the epoch in the file name. Written atomically (a temporary file, then renamed) by
      the global-zero process; the latest best wins across runs.

    Otherwise the same arguments as Lightning's; our configs use it.

    Example:
        >>> ModelCheckpoint(monitor="val/loss", copy_best_to="runs/predictor/quality_predictor.ckpt").copy_best_to
        'runs/predictor/quality_predictor.ckpt'
    """

    def __init__(
        self,
        dirpath: str | Path | None = None,
        filename: str | None = None,
        monitor: str | None = None,
        verbose: bool = False,
        save_last: bool | Literal["link"] | None = None,
        save_top_k: int = 1,
        save_on_exception: bool = False,
        save_weights_only: bool = False,
        mode: str = "min",
        auto_insert_metric_name: bool = True,
        every_n_train_steps: int | None = None,
        train_time_interval: datetime.timedelta | None = None,
        every_n_epochs: int | None = None,
        save_on_train_epoch_end: bool | None = None,
        enable_version_counter: bool = True,
        copy_best_to: str | None = None,
    ) -> None:
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            monitor=monitor,
            verbose=verbose,
            save_last=save_last,
            save_top_k=save_top_k,
            save_on_exception=save_on_exception,
            save_weights_only=save_weights_only,
            mode=mode,
            auto_insert_metric_name=auto_insert_metric_name,
            every_n_train_steps=every_n_train_steps,
            train_time_interval=train_time_interval,
            every_n_epochs=every_n_epochs,
            save_on_train_epoch_end=save_on_train_epoch_end,
            enable_version_counter=enable_version_counter,
        )
        if copy_best_to is not None and (not isinstance(copy_best_to, str) or not copy_best_to.strip()):
            raise ValueError(f"`copy_best_to` must be a file path or null, got {copy_best_to!r}.")
        if copy_best_to is not None and monitor is None:
            raise ValueError(
                f"`copy_best_to={copy_best_to!r}` needs a `monitor` (without one there is no best checkpoint). "
                "Set e.g. `monitor: val/loss` and `mode: min`."
            )
        self.copy_best_to = copy_best_to
        self._copied_from = ""

    def _update_best_and_save(
        self, current: torch.Tensor, trainer: L.Trainer, monitor_candidates: dict[str, torch.Tensor]
    ) -> None:
        super()._update_best_and_save(current, trainer, monitor_candidates)
        best = self.best_model_path
        if self.copy_best_to is None or not best or best == self._copied_from:
            return
        self._copied_from = best
        if trainer.is_global_zero:
            self._copy_best(Path(best), Path(self.copy_best_to))

    @staticmethod
    def _copy_best(source: Path, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        shutil.copyfile(source, partial)
        os.replace(partial, target)
        log.info("Best checkpoint %s copied to %s", source, target)

    def _save_topk_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, torch.Tensor]) -> None:
        super()._save_topk_checkpoint(trainer, monitor_candidates)
        if self.save_last is True:
            # Lightning saves last.ckpt right after this call only "if a checkpoint was saved at this step"
            self._last_global_step_saved = trainer.global_step

    def _find_last_checkpoints(self, trainer: L.Trainer) -> set[str]:
        found = super()._find_last_checkpoints(trainer)
        # ``dirpath`` is None until ``setup`` when it was not configured: then it is the logger's version folder
        if found or self.dirpath is not None or not trainer.loggers:
            return found
        logger = trainer.loggers[0]
        root = Path(logger.save_dir if logger.save_dir is not None else trainer.default_root_dir) / str(
            logger.name
        )
        if not root.is_dir():
            return found
        stem = self.CHECKPOINT_NAME_LAST
        return {
            str(path)
            for path in root.glob(f"*/checkpoints/{stem}*{self.FILE_EXTENSION}")
            if path.stem == stem or path.stem.removeprefix(f"{stem}-v").isdigit()
        }


class ExactResume(L.Callback):
    """Make ``fit --ckpt_path last`` continue the interrupted run exactly, and save on SIGTERM.

    * Every checkpoint carries each rank's global random-number-generator states (torch, CUDA, NumPy,
      Python); a resumed fit restores them when training starts, so random draws in ``training_step`` (and in
      user code) continue as in an uninterrupted run. This holds when the training loaders have an explicit
      ``generator`` (ours do): a loader without one draws a seed from the global RNG each time Lightning
      creates its iterator, which a resumed fit does at a different moment. Data order and augmentations are restored by the
      data module (:class:`~qg_lightning.data.ResumableDataLoader`), the optimizer, LR schedule, EMA teacher and
      guidance schedules by their own ``state_dict``.
    * On SIGTERM (a cluster's pre-emption, ``kill PID``) Lightning stops after the current batch; this
      callback then writes ``last.ckpt`` into the first :class:`~qg_lightning.callbacks.ModelCheckpoint`'s
      folder (atomically, with :class:`~qg_lightning.checkpoint.AtomicCheckpointIO`) so the run resumes from
      that batch. ``qg-lightning fit`` exits with status 143 afterwards.
    * On any other exception under DDP, the launching rank stops the worker ranks
      (:func:`~qg_lightning.runs.stop_other_ranks`) instead of leaving them blocked in a collective.

    ``qg-lightning fit`` adds this callback unless the config already has one; with your own Trainer add
    ``ExactResume()`` to ``callbacks``.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None
        self.sigterm_checkpoint: str | None = None

    def state_dict(self) -> dict[str, Any]:
        states = [rng_state()]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, states[0])
            states = gathered
        return {"rng": states}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        states = state_dict.get("rng") or []
        if not states:
            return
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        self._pending = states[rank] if rank < len(states) else states[0]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is not None:
            set_rng_state(self._pending)
            self._pending = None

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, SIGTERMException):
            stop_other_ranks(trainer, exception)
            return
        if trainer.state.fn != "fit":
            return
        callback = next((c for c in trainer.callbacks if isinstance(c, _LightningModelCheckpoint)), None)
        if callback is None or callback.dirpath is None:
            log.warning("SIGTERM received, but there is no ModelCheckpoint folder: nothing was saved.")
            return
        path = Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
        trainer.save_checkpoint(path)
        self.sigterm_checkpoint = str(path)
        if trainer.is_global_zero:
            log.warning(
                "SIGTERM received: saved '%s' at epoch %d, step %d; resume with `--ckpt_path last`.",
                path,
                trainer.current_epoch,
                trainer.global_step,
            )


class TestOverlayCallback(L.Callback):
    """Save a PNG of the first ``n_images`` test images with prediction (filled) and truth (green outline).

    The file is ``<run dir>/<filename>`` (with the module's ``test_tag`` appended when set, e.g.
    ``test_overlays_best.png``). The host's ``test_step`` must return a dict with ``"preds"`` (label maps).

    Args:
        n_images: how many test images to draw.
        filename: PNG name inside the run directory.
        ncol: tiles per row.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, n_images: int = 8, filename: str = "test_overlays.png", ncol: int = 4) -> None:
        if n_images < 1:
            raise ValueError(f"`n_images` must be >= 1, got {n_images}.")
        if not filename.endswith(".png"):
            raise ValueError(f"`filename` must end with .png, got {filename!r}.")
        self.n_images = n_images
        self.filename = filename
        self.ncol = ncol
        self._tiles: list[torch.Tensor] = []

    @override
    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._tiles = []

    @override
    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        have = sum(t.shape[0] for t in self._tiles)
        if have >= self.n_images or not isinstance(outputs, dict) or "preds" not in outputs:
            return
        labeled = labeled_part(batch)
        take = self.n_images - have
        self._tiles.append(
            overlay_masks(labeled["image"][:take], outputs["preds"][:take], labeled["mask"][:take])
        )

    @override
    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(run_dir(trainer), pl_module)  # run_dir is collective under DDP: every rank calls it

    @rank_zero_only
    def _save(self, out: Path, pl_module: L.LightningModule) -> None:
        if not self._tiles:
            return
        tag = getattr(pl_module, "test_tag", "")
        name = self.filename if not tag else self.filename.replace(".png", f"_{tag}.png")
        save_png(image_grid(torch.cat(self._tiles), ncol=self.ncol), out / name)

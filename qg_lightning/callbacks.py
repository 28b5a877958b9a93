"""General-purpose callbacks (quality guidance lives in :mod:`qg_lightning.guidance`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from typing_extensions import override

from qg_lightning.methods.supervised import labeled_part
from qg_lightning.runs import run_dir
from qg_lightning.visualize import image_grid, overlay_masks, save_png

__all__ = ["TestOverlayCallback"]


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

"""torchmetrics wrappers around :mod:`qg_lightning.metrics.functional`, for logging and test reports.

The wrappers only hold state; all the math is in the functional core. Per-image values are kept (list
states reduced with ``"cat"``), so the mean, the standard deviation and the per-image table all come from
the same numbers, across processes too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from qg_lightning.masks import check_num_classes
from qg_lightning.metrics.functional import _check_spacing, dice_score, hd95, iou_score

__all__ = ["SegmentationMetrics"]


class SegmentationMetrics(Metric):
    """Per-image Dice, IoU and (optionally) HD95 of label maps, averaged over images.

    Each image contributes one value per metric: the mean over its foreground classes of
    :func:`~qg_lightning.metrics.functional.dice_score`, :func:`~qg_lightning.metrics.functional.iou_score`
    and :func:`~qg_lightning.metrics.functional.hd95`, with their default empty-mask rules (Dice / IoU of
    two empty masks = 1.0; HD95 of two empty masks = 0.0; HD95 with exactly one empty = the image diagonal).
    ``compute`` returns the mean over all images seen (on every process).

    Args:
        num_classes: K, background included (2 = binary).
        include_hd95: also compute HD95 (costs a CPU distance transform per image and class).
        spacing: pixel size ``(row_spacing, col_spacing)`` for HD95; ``None`` = pixels.

    Attributes:
        dice, iou, hd95: list states of per-image values ``(B,)`` per update, ``dist_reduce_fx="cat"``.

    Example:
        >>> metric = SegmentationMetrics(num_classes=2, include_hd95=True)
        >>> preds = torch.zeros(2, 8, 8, dtype=torch.long)
        >>> target = torch.zeros(2, 8, 8, dtype=torch.long)
        >>> preds[:, 2:6, 2:6] = 1
        >>> target[0, 2:6, 2:6] = 1
        >>> target[1, 2:6, 3:7] = 1
        >>> metric.update(preds, target)
        >>> {k: round(v.item(), 4) for k, v in metric.compute().items()}
        {'dice': 0.875, 'iou': 0.8, 'hd95': 0.5}
        >>> metric.per_image()["dice"]
        tensor([1.0000, 0.7500])
        >>> metric.summary()["dice"]
        {'mean': 0.875, 'std': 0.1767766952966369, 'n': 2}
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    dice: list[Tensor]
    iou: list[Tensor]
    hd95: list[Tensor]

    def __init__(
        self,
        num_classes: int = 2,
        include_hd95: bool = True,
        spacing: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        if not isinstance(include_hd95, bool):
            raise TypeError(f"`include_hd95` must be a bool, got {include_hd95!r}.")
        self.include_hd95 = include_hd95
        self.spacing = None if spacing is None else _check_spacing(spacing)
        for name in self._metric_names():
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def _metric_names(self) -> tuple[str, ...]:
        return ("dice", "iou", "hd95") if self.include_hd95 else ("dice", "iou")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch of label maps.

        Args:
            preds: predicted label map, integer ``(B, H, W)`` with values ``0..K-1``.
            target: ground-truth label map, same shape.
        """
        self.dice.append(dice_score(preds, target, self.num_classes).mean(dim=1))
        self.iou.append(iou_score(preds, target, self.num_classes).mean(dim=1))
        if self.include_hd95:
            self.hd95.append(hd95(preds, target, self.num_classes, spacing=self.spacing).mean(dim=1))

    def _gather(self) -> dict[str, Tensor]:
        """Per-image values from the current (synced or local) state."""
        out = {}
        for name in self._metric_names():
            state = getattr(self, name)
            if isinstance(state, list) and len(state) == 0:
                out[name] = torch.zeros(0, device=self.device)
            else:
                out[name] = dim_zero_cat(state)
        return out

    def compute(self) -> dict[str, Tensor]:
        """Mean over all images: ``{"dice", "iou", "hd95"}`` (``"hd95"`` only with ``include_hd95``).

        NaN when no image was seen.
        """
        return {name: values.mean() for name, values in self._gather().items()}

    def per_image(self) -> dict[str, Tensor]:
        """Per-image values ``(N,)`` for every metric, gathered from all processes like ``compute``."""
        if self._is_synced:
            return {name: values.clone() for name, values in self._gather().items()}
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync, should_unsync=True):
            return {name: values.clone() for name, values in self._gather().items()}

    def summary(self) -> dict[str, dict[str, float]]:
        """JSON-ready ``{"dice": {"mean": ..., "std": ..., "n": ...}, ...}`` over all images.

        ``std`` is the sample standard deviation (divisor ``n - 1``), 0.0 when ``n == 1``; ``mean`` and
        ``std`` are NaN when ``n == 0``. ``n`` is an ``int``.
        """
        out: dict[str, dict[str, float]] = {}
        for name, values in self.per_image().items():
            values = values.double()
            n = int(values.numel())
            mean = values.mean().item() if n > 0 else math.nan
            if n > 1:
                std = values.std(correction=1).item()
            else:
                std = 0.0 if n == 1 else math.nan
            out[name] = {"mean": mean, "std": std, "n": n}
        return out

"""Per-image segmentation metrics (functional core) and torchmetrics wrappers for logging."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qg_lightning._lazy import lazy_exports

if TYPE_CHECKING:  # for type checkers and the API docs; at run time each name loads on first use
    from qg_lightning.metrics.functional import dice_score, hd95, iou_score
    from qg_lightning.metrics.wrappers import SegmentationMetrics

__all__ = ["dice_score", "iou_score", "hd95", "SegmentationMetrics"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "qg_lightning.metrics.functional": ("dice_score", "hd95", "iou_score"),
        "qg_lightning.metrics.wrappers": ("SegmentationMetrics",),
    },
)

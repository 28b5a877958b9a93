"""Per-image segmentation metrics (functional core) and torchmetrics wrappers for logging."""

from __future__ import annotations

from qg_lightning.metrics.functional import dice_score, hd95, iou_score
from qg_lightning.metrics.wrappers import SegmentationMetrics

__all__ = ["dice_score", "iou_score", "hd95", "SegmentationMetrics"]

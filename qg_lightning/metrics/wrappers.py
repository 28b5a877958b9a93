"""torchmetrics wrappers around :mod:`qg_lightning.metrics.functional`, for logging and test reports.

The wrappers only hold state; all the math is in the functional core. Per-image, per-class values are kept
(list states reduced with ``"cat"``), so the mean, the standard deviation, the per-image table and the
per-class figures all come from the same numbers, across processes too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from qg_lightning.masks import check_num_classes
from qg_lightning.metrics.functional import _check_spacing, _one_hot_foreground, dice_score, hd95, iou_score

__all__ = ["ABSENT_CLASSES", "SegmentationMetrics"]

AbsentClasses = Literal["count", "skip"]
#: How :class:`SegmentationMetrics` treats a class absent from an image's ground truth.
ABSENT_CLASSES: tuple[str, ...] = ("count", "skip")


class SegmentationMetrics(Metric):
    """Per-image Dice, IoU and (optionally) HD95 of label maps, averaged over images.

    Each image contributes one value per metric: the mean over its foreground classes of
    :func:`~qg_lightning.metrics.functional.dice_score`, :func:`~qg_lightning.metrics.functional.iou_score`
    and :func:`~qg_lightning.metrics.functional.hd95`. What a class absent from the image's ground truth
    contributes is ``absent_classes``:

    * ``"count"`` (default; what binary results have always used): every class of every image counts, with
      the functional defaults' empty-mask rules: Dice / IoU of two empty masks = 1.0, HD95 = 0.0; a class
      predicted where the truth has none: Dice / IoU 0.0, HD95 the image diagonal.
    * ``"skip"`` (for multi-class test sets, where many images lack a rare class): a class absent from an
      image's truth is left out of that image (NaN), so a trivially right "absent" never lifts the mean. A
      per-class figure is the mean over the images whose truth has the class; an image's value is the mean
      over the classes its truth has; an image whose truth has no foreground class at all is left out of
      the means (counted in :meth:`summary`). What is left out is counted, never dropped silently: a class
      predicted where the truth has none (a false positive the means no longer see) is counted as
      ``n_false_positive`` per class.

    Means are NaN-aware (NaN when no value is left); in ``"count"`` mode no value is ever NaN, so the
    results are those of a plain mean.

    Args:
        num_classes: K, background included (2 = binary).
        include_hd95: also compute HD95 (costs a CPU distance transform per image and class).
        spacing: pixel size ``(row_spacing, col_spacing)`` for HD95; ``None`` = pixels.
        absent_classes: ``"count"`` or ``"skip"`` (see above).

    Attributes:
        dice, iou, hd95: list states of per-image, per-class values ``(B, K-1)`` per update (NaN where left
            out), ``dist_reduce_fx="cat"``.
        true_present, pred_present: list states ``(B, K-1)``: 1.0 where the truth / prediction has the class.

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

        Three classes; image 1 has no class 2, and the prediction has none either:

        >>> preds, target = torch.zeros(2, 4, 4, dtype=torch.long), torch.zeros(2, 4, 4, dtype=torch.long)
        >>> target[:, :2] = 1; preds[:, :1] = 1  # class 1: Dice 2/3 on both images
        >>> target[0, 3:] = 2; preds[0, 3:] = 2  # class 2: Dice 1 on image 0, absent from image 1
        >>> for mode in ("count", "skip"):
        ...     metric = SegmentationMetrics(num_classes=3, include_hd95=False, absent_classes=mode)
        ...     metric.update(preds, target)
        ...     print(mode, [round(v, 3) for v in metric.per_image()["dice"].tolist()],
        ...           {k: round(v.item(), 3) for k, v in metric.compute_per_class().items() if "dice" in k})
        count [0.833, 0.833] {'dice_class1': 0.667, 'dice_class2': 1.0}
        skip [0.833, 0.667] {'dice_class1': 0.667, 'dice_class2': 1.0}
        >>> metric.summary()["per_class"]["class2"]["dice"]
        {'mean': 1.0, 'std': 0.0, 'n': 1, 'n_absent': 1, 'n_false_positive': 0}
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    dice: list[Tensor]
    iou: list[Tensor]
    hd95: list[Tensor]
    true_present: list[Tensor]
    pred_present: list[Tensor]

    def __init__(
        self,
        num_classes: int = 2,
        include_hd95: bool = True,
        spacing: Sequence[float] | None = None,
        absent_classes: AbsentClasses = "count",
    ) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        if not isinstance(include_hd95, bool):
            raise TypeError(f"`include_hd95` must be a bool, got {include_hd95!r}.")
        if absent_classes not in ABSENT_CLASSES:
            raise ValueError(
                f"`absent_classes` must be one of {ABSENT_CLASSES}, got {absent_classes!r}: 'count' scores a class "
                "absent from both truth and prediction as Dice 1 (binary results), 'skip' leaves a class absent "
                "from the truth out of the means (multi-class test sets)."
            )
        self.include_hd95 = include_hd95
        self.absent_classes = absent_classes
        self.spacing = None if spacing is None else _check_spacing(spacing)
        for name in (*self._metric_names(), "true_present", "pred_present"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def _metric_names(self) -> tuple[str, ...]:
        return ("dice", "iou", "hd95") if self.include_hd95 else ("dice", "iou")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch of label maps.

        Args:
            preds: predicted label map, integer ``(B, H, W)`` with values ``0..K-1``.
            target: ground-truth label map, same shape.
        """
        k = self.num_classes
        values = {"dice": dice_score(preds, target, k), "iou": iou_score(preds, target, k)}
        if self.include_hd95:
            values["hd95"] = hd95(preds, target, k, spacing=self.spacing)
        true_present = _one_hot_foreground(target, k).flatten(2).any(dim=2)
        pred_present = _one_hot_foreground(preds, k).flatten(2).any(dim=2)
        for name, value in values.items():
            if self.absent_classes == "skip":
                value = torch.where(true_present, value, torch.full_like(value, math.nan))
            getattr(self, name).append(value)
        self.true_present.append(true_present.float())
        self.pred_present.append(pred_present.float())

    def _gather(self) -> dict[str, Tensor]:
        """Per-image, per-class values ``(N, K-1)`` from the current (synced or local) state."""
        out = {}
        for name in (*self._metric_names(), "true_present", "pred_present"):
            state = getattr(self, name)
            if isinstance(state, list) and len(state) == 0:
                out[name] = torch.zeros(0, self.num_classes - 1, device=self.device)
            else:
                out[name] = dim_zero_cat(state)
        return out

    def _synced(self) -> dict[str, Tensor]:
        """:meth:`_gather` on the state of every process (restored to the local state afterwards)."""
        if self._is_synced:
            return {name: values.clone() for name, values in self._gather().items()}
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync, should_unsync=True):
            return {name: values.clone() for name, values in self._gather().items()}

    @staticmethod
    def _image_values(per_class: Tensor) -> Tensor:
        """Mean over an image's classes that were not left out (NaN when all were)."""
        return per_class.nanmean(dim=1) if per_class.numel() else per_class.new_zeros(0)

    def compute(self) -> dict[str, Tensor]:
        """Mean over all images: ``{"dice", "iou", "hd95"}`` (``"hd95"`` only with ``include_hd95``).

        NaN-aware: images left out by ``absent_classes="skip"`` do not count; NaN when no image is left.
        """
        return {name: _nanmean(self._image_values(values)) for name, values in self._gather().items()
                if name in self._metric_names()}  # fmt: skip

    def compute_per_class(self) -> dict[str, Tensor]:
        """Per-class means over images, ``{"dice_class1": ..., "iou_class1": ..., ...}`` (class k = label k).

        With ``absent_classes="skip"`` each mean is over the images whose truth has the class.
        """
        out = {}
        for name, values in self._gather().items():
            if name in self._metric_names():
                for c in range(self.num_classes - 1):
                    out[f"{name}_class{c + 1}"] = _nanmean(values[:, c])
        return out

    def per_image(self) -> dict[str, Tensor]:
        """Per-image values ``(N,)`` for every metric, gathered from all processes like ``compute`` (NaN for an
        image left out by ``absent_classes="skip"``)."""
        synced = self._synced()
        return {name: self._image_values(synced[name]) for name in self._metric_names()}

    def per_class(self) -> dict[str, Tensor]:
        """Per-image, per-class values ``(N, K-1)`` for every metric (NaN where left out), gathered from all
        processes."""
        synced = self._synced()
        return {name: synced[name] for name in self._metric_names()}

    def summary(self) -> dict[str, Any]:
        """JSON-ready ``{"dice": {"mean": ..., "std": ..., "n": ...}, ...}`` over all images.

        ``std`` is the sample standard deviation (divisor ``n - 1``), 0.0 when ``n == 1``; ``mean`` and
        ``std`` are NaN when ``n == 0``. ``n`` is an ``int``: the images that count. With
        ``absent_classes="skip"`` each entry also has ``n_absent``, the images left out (no foreground class
        in the truth). For K > 2, ``"per_class"`` holds the same figures per class,
        ``{"class1": {"dice": {...}, ...}, ...}``; with ``"skip"`` each also has ``n_absent`` (images whose
        truth lacks the class) and ``n_false_positive`` (those of them where the prediction has it).
        """
        synced = self._synced()
        skip = self.absent_classes == "skip"
        out: dict[str, Any] = {}
        no_class = int((synced["true_present"].sum(dim=1) == 0).sum())
        for name in self._metric_names():
            out[name] = _stats(self._image_values(synced[name]))
            if skip:
                out[name]["n_absent"] = no_class
        if self.num_classes > 2:
            absent = synced["true_present"] == 0
            false_positive = absent & (synced["pred_present"] > 0)
            per_class: dict[str, Any] = {}
            for c in range(self.num_classes - 1):
                figures = {}
                for name in self._metric_names():
                    figures[name] = _stats(synced[name][:, c])
                    if skip:
                        figures[name]["n_absent"] = int(absent[:, c].sum())
                        figures[name]["n_false_positive"] = int(false_positive[:, c].sum())
                per_class[f"class{c + 1}"] = figures
            out["per_class"] = per_class
        return out


def _nanmean(values: Tensor) -> Tensor:
    """Mean of the non-NaN values; NaN when there are none."""
    values = values[~values.isnan()]
    return values.mean() if values.numel() else values.new_tensor(math.nan)


def _stats(values: Tensor) -> dict[str, Any]:
    """``{"mean", "std", "n"}`` of the non-NaN values (sample std; 0.0 for one value, NaN for none)."""
    values = values.double()
    values = values[~values.isnan()]
    n = int(values.numel())
    mean = values.mean().item() if n > 0 else math.nan
    std = values.std(correction=1).item() if n > 1 else (0.0 if n == 1 else math.nan)
    return {"mean": mean, "std": std, "n": n}

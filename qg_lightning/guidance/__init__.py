"""Quality guidance (Phase 2 of METHOD.md): a frozen quality predictor steers semi-supervised training.

* :class:`QualityReweightCallback` loads and freezes the predictor, schedules the loss weights and logs.
* :class:`QualityGuidedMixin` gives a host ``LightningModule`` ``quality_weights`` (PL-QW) and
  ``quality_regularization`` (QAR), plus the current ``qw_lambda`` / ``qar_lambda``.
* The functional core (:mod:`qg_lightning.guidance.functional`) holds all the math.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qg_lightning._lazy import lazy_exports

if TYPE_CHECKING:  # for type checkers and the API docs; at run time each name loads on first use
    from qg_lightning.guidance.callback import QualityReweightCallback
    from qg_lightning.guidance.functional import (
        confidence_pixel_mask,
        confidence_weights,
        frac_above,
        qar_loss,
        quality_weights,
        quality_weights_per_class,
        weighted_mean,
    )
    from qg_lightning.guidance.mixin import GuidanceSettings, QualityGuidedMixin
    from qg_lightning.guidance.schedules import QAR_SCHEDULE, QW_SCHEDULE, RampSchedule

__all__ = [
    "QualityGuidedMixin",
    "QualityReweightCallback",
    "GuidanceSettings",
    "RampSchedule",
    "QW_SCHEDULE",
    "QAR_SCHEDULE",
    "quality_weights",
    "quality_weights_per_class",
    "qar_loss",
    "weighted_mean",
    "confidence_weights",
    "confidence_pixel_mask",
    "frac_above",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "qg_lightning.guidance.callback": ("QualityReweightCallback",),
        "qg_lightning.guidance.functional": (
            "confidence_pixel_mask",
            "confidence_weights",
            "frac_above",
            "qar_loss",
            "quality_weights",
            "quality_weights_per_class",
            "weighted_mean",
        ),
        "qg_lightning.guidance.mixin": ("GuidanceSettings", "QualityGuidedMixin"),
        "qg_lightning.guidance.schedules": ("QAR_SCHEDULE", "QW_SCHEDULE", "RampSchedule"),
    },
)

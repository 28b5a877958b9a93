"""Segmentation hosts: the supervised baseline and the reference semi-supervised methods."""

from typing import TYPE_CHECKING

from qg_lightning._lazy import lazy_exports

if TYPE_CHECKING:  # for type checkers and the API docs; at run time each name loads on first use
    from qg_lightning.methods.base import SemiSupervisedSegmenter
    from qg_lightning.methods.cps import CPSSegmenter
    from qg_lightning.methods.ema import EMATeacher, ema_decay
    from qg_lightning.methods.fixmatch import FixMatchSegmenter
    from qg_lightning.methods.mean_teacher import MeanTeacherSegmenter
    from qg_lightning.methods.networks import SegmentationNet, build_segmenter
    from qg_lightning.methods.nonfinite import NonFiniteError, check_finite
    from qg_lightning.methods.pseudo_label import PseudoLabelSegmenter, QARSegmenter
    from qg_lightning.methods.supervised import SupervisedSegmenter

__all__ = [
    "CPSSegmenter",
    "EMATeacher",
    "FixMatchSegmenter",
    "MeanTeacherSegmenter",
    "NonFiniteError",
    "PseudoLabelSegmenter",
    "QARSegmenter",
    "SegmentationNet",
    "SemiSupervisedSegmenter",
    "SupervisedSegmenter",
    "build_segmenter",
    "check_finite",
    "ema_decay",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "qg_lightning.methods.base": ("SemiSupervisedSegmenter",),
        "qg_lightning.methods.cps": ("CPSSegmenter",),
        "qg_lightning.methods.ema": ("EMATeacher", "ema_decay"),
        "qg_lightning.methods.fixmatch": ("FixMatchSegmenter",),
        "qg_lightning.methods.mean_teacher": ("MeanTeacherSegmenter",),
        "qg_lightning.methods.networks": ("SegmentationNet", "build_segmenter"),
        "qg_lightning.methods.nonfinite": ("NonFiniteError", "check_finite"),
        "qg_lightning.methods.pseudo_label": ("PseudoLabelSegmenter", "QARSegmenter"),
        "qg_lightning.methods.supervised": ("SupervisedSegmenter",),
    },
)

"""Segmentation hosts: the supervised baseline and the reference semi-supervised methods."""

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

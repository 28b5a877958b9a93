"""qg_lightning: quality-guided semi-supervised medical image segmentation for PyTorch Lightning.

A separately trained quality predictor g(image, mask) -> predicted Dice steers any semi-supervised host through
quality-weighted pseudolabels (PL-QW) and a quality-aware regulariser (QAR). See the README for the quickstart.

The names below (and the subpackages ``data``, ``guidance``, ``methods``, ``metrics``, ``quality`` and
``study``) load on first use, so ``import qg_lightning`` stays light.

Example:
    >>> from qg_lightning import QualityGuidedMixin, QualityReweightCallback, QualityPredictor, QualityDataModule
    >>> import lightning as L
    >>> issubclass(QualityReweightCallback, L.Callback), issubclass(QualityPredictor, L.LightningModule)
    (True, True)
    >>> issubclass(QualityDataModule, L.LightningDataModule)
    True
"""

import os as _os
from typing import TYPE_CHECKING

from qg_lightning._lazy import lazy_exports

# albumentations checks PyPI for updates at import; our machines (and many hospital ones) are offline.
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

if TYPE_CHECKING:  # for type checkers and the API docs; at run time each name loads on first use
    from qg_lightning.data.datamodule import SemiSupervisedDataModule
    from qg_lightning.guidance.callback import QualityReweightCallback
    from qg_lightning.guidance.mixin import QualityGuidedMixin
    from qg_lightning.methods.supervised import SupervisedSegmenter
    from qg_lightning.quality.datamodule import QualityDataModule
    from qg_lightning.quality.predictor import QualityPredictor

__version__ = "0.1.0"

__all__ = [
    "QualityDataModule",
    "QualityGuidedMixin",
    "QualityPredictor",
    "QualityReweightCallback",
    "SemiSupervisedDataModule",
    "SupervisedSegmenter",
    "__version__",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "qg_lightning.data.datamodule": ("SemiSupervisedDataModule",),
        "qg_lightning.guidance.callback": ("QualityReweightCallback",),
        "qg_lightning.guidance.mixin": ("QualityGuidedMixin",),
        "qg_lightning.methods.supervised": ("SupervisedSegmenter",),
        "qg_lightning.quality.datamodule": ("QualityDataModule",),
        "qg_lightning.quality.predictor": ("QualityPredictor",),
    },
    submodules=("data", "guidance", "methods", "metrics", "quality", "study"),
)

"""qg_lightning: quality-guided semi-supervised medical image segmentation for PyTorch Lightning.

A separately trained quality predictor g(image, mask) -> predicted Dice steers any semi-supervised host through
quality-weighted pseudolabels (PL-QW) and a quality-aware regulariser (QAR). See the README for the quickstart.

Example:
    >>> from qg_lightning import QualityGuidedMixin, QualityReweightCallback, QualityPredictor, QualityDataModule
    >>> import lightning as L
    >>> issubclass(QualityReweightCallback, L.Callback), issubclass(QualityPredictor, L.LightningModule)
    (True, True)
    >>> issubclass(QualityDataModule, L.LightningDataModule)
    True
"""

import os as _os

# albumentations checks PyPI for updates at import; our machines (and many hospital ones) are offline.
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from qg_lightning.data.datamodule import SemiSupervisedDataModule  # noqa: E402
from qg_lightning.guidance.callback import QualityReweightCallback  # noqa: E402
from qg_lightning.guidance.mixin import QualityGuidedMixin  # noqa: E402
from qg_lightning.methods.supervised import SupervisedSegmenter  # noqa: E402
from qg_lightning.quality.datamodule import QualityDataModule  # noqa: E402
from qg_lightning.quality.predictor import QualityPredictor  # noqa: E402

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

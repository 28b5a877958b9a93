"""qg_lightning: quality-guided semi-supervised medical image segmentation for PyTorch Lightning.

A separately trained quality predictor g(image, mask) -> predicted Dice steers any semi-supervised host through
quality-weighted pseudolabels (PL-QW) and a quality-aware regulariser (QAR). See the README for the quickstart.
"""

import os as _os

# albumentations checks PyPI for updates at import; our machines (and many hospital ones) are offline.
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"

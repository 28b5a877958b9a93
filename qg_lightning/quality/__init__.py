"""Training data for the quality predictor (Phase 1 of QG-SSL): mask corruptions, registries, sampler.

Example:
    >>> import torch
    >>> from qg_lightning.quality import CorruptionSampler
    >>> masks = torch.zeros(2, 1, 16, 16)
    >>> masks[:, :, 4:12, 4:12] = 1
    >>> CorruptionSampler()(masks, generator=torch.Generator().manual_seed(0)).quality.shape
    torch.Size([2, 1])
"""

from typing import TYPE_CHECKING

from qg_lightning._lazy import lazy_exports

if TYPE_CHECKING:  # for type checkers and the API docs; at run time each name loads on first use
    from qg_lightning.quality.calibration import fit_calibration
    from qg_lightning.quality.corruptions import (
        BLOB,
        CATASTROPHIC,
        HEAVY,
        MAIN,
        MULTICLASS,
        CorruptionSpec,
        get_corruption,
    )
    from qg_lightning.quality.datamodule import QUALITY_CATEGORIES, QualityDataModule
    from qg_lightning.quality.network import (
        FlipTTA,
        QualityEnsemble,
        QualityNetwork,
        load_quality_network,
        load_quality_networks,
    )
    from qg_lightning.quality.predictor import (
        QualityPredictor,
        load_quality_predictor,
        load_quality_predictors,
        predictor_from_checkpoint,
    )
    from qg_lightning.quality.recipe import PredictorData, PredictorRecipe
    from qg_lightning.quality.sampling import (
        CATEGORIES,
        CATEGORY_PROBS,
        CorruptionResult,
        CorruptionSampler,
        dice_target,
    )
    from qg_lightning.quality.snapshots import SnapshotCallback, find_snapshots, load_snapshot
    from qg_lightning.quality.training import TrainedPredictor, train_predictor

__all__ = [
    "FlipTTA",
    "PredictorData",
    "PredictorRecipe",
    "QUALITY_CATEGORIES",
    "QualityDataModule",
    "QualityEnsemble",
    "QualityNetwork",
    "QualityPredictor",
    "SnapshotCallback",
    "TrainedPredictor",
    "find_snapshots",
    "fit_calibration",
    "load_quality_network",
    "load_quality_networks",
    "load_quality_predictor",
    "load_quality_predictors",
    "load_snapshot",
    "predictor_from_checkpoint",
    "train_predictor",
    "BLOB",
    "CATASTROPHIC",
    "CATEGORIES",
    "CATEGORY_PROBS",
    "HEAVY",
    "MAIN",
    "MULTICLASS",
    "CorruptionResult",
    "CorruptionSampler",
    "CorruptionSpec",
    "dice_target",
    "get_corruption",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "qg_lightning.quality.calibration": ("fit_calibration",),
        "qg_lightning.quality.corruptions": (
            "BLOB",
            "CATASTROPHIC",
            "HEAVY",
            "MAIN",
            "MULTICLASS",
            "CorruptionSpec",
            "get_corruption",
        ),
        "qg_lightning.quality.datamodule": ("QUALITY_CATEGORIES", "QualityDataModule"),
        "qg_lightning.quality.network": (
            "FlipTTA",
            "QualityEnsemble",
            "QualityNetwork",
            "load_quality_network",
            "load_quality_networks",
        ),
        "qg_lightning.quality.predictor": (
            "QualityPredictor",
            "load_quality_predictor",
            "load_quality_predictors",
            "predictor_from_checkpoint",
        ),
        "qg_lightning.quality.recipe": ("PredictorData", "PredictorRecipe"),
        "qg_lightning.quality.sampling": (
            "CATEGORIES",
            "CATEGORY_PROBS",
            "CorruptionResult",
            "CorruptionSampler",
            "dice_target",
        ),
        "qg_lightning.quality.snapshots": ("SnapshotCallback", "find_snapshots", "load_snapshot"),
        "qg_lightning.quality.training": ("TrainedPredictor", "train_predictor"),
    },
)

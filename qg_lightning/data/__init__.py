"""Data layer: the standard folder layout, embedded synthetic data, splits, augmentation and the data module.

Example:
    >>> from qg_lightning.data import SemiSupervisedDataModule, make_split
    >>> make_split(["a", "b", "c", "d"], seed=0, val_fraction=0.25, test_fraction=0.25).train
    ['b', 'd']
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qg_lightning._lazy import lazy_exports

if TYPE_CHECKING:  # for type checkers and the API docs; at run time each name loads on first use
    from qg_lightning.data.datamodule import (
        SYNTHETIC_SEED,
        ResumableDataLoader,
        SeededSampler,
        SegmentationDataset,
        SemiSupervisedDataModule,
        derive_seed,
    )
    from qg_lightning.data.folder import (
        IMAGE_EXTENSIONS,
        DataValidationError,
        FolderIndex,
        read_image,
        read_mask,
        scan_folder,
    )
    from qg_lightning.data.splits import Split, assign_folds, load_split, make_split
    from qg_lightning.data.synthetic import (
        default_cache_dir,
        default_synthetic_root,
        generate_synthetic_dataset,
        synthetic_sample,
    )
    from qg_lightning.data.transforms import (
        AugmentName,
        build_strong_photometric,
        build_transforms,
        reseed,
        weak_strong_views,
    )

__all__ = [
    "IMAGE_EXTENSIONS",
    "SYNTHETIC_SEED",
    "AugmentName",
    "DataValidationError",
    "FolderIndex",
    "ResumableDataLoader",
    "SeededSampler",
    "SegmentationDataset",
    "SemiSupervisedDataModule",
    "Split",
    "assign_folds",
    "build_strong_photometric",
    "build_transforms",
    "default_cache_dir",
    "default_synthetic_root",
    "derive_seed",
    "generate_synthetic_dataset",
    "load_split",
    "make_split",
    "read_image",
    "read_mask",
    "reseed",
    "scan_folder",
    "synthetic_sample",
    "weak_strong_views",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "qg_lightning.data.datamodule": (
            "SYNTHETIC_SEED",
            "ResumableDataLoader",
            "SeededSampler",
            "SegmentationDataset",
            "SemiSupervisedDataModule",
            "derive_seed",
        ),
        "qg_lightning.data.folder": (
            "IMAGE_EXTENSIONS",
            "DataValidationError",
            "FolderIndex",
            "read_image",
            "read_mask",
            "scan_folder",
        ),
        "qg_lightning.data.splits": ("Split", "assign_folds", "load_split", "make_split"),
        "qg_lightning.data.synthetic": (
            "default_cache_dir",
            "default_synthetic_root",
            "generate_synthetic_dataset",
            "synthetic_sample",
        ),
        "qg_lightning.data.transforms": (
            "AugmentName",
            "build_strong_photometric",
            "build_transforms",
            "reseed",
            "weak_strong_views",
        ),
    },
)

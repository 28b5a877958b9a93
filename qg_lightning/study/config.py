"""``StudyConfig``: everything that defines one study (data, labels, seeds, preset, methods)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qg_lightning._validation import check_fraction, check_int, is_int
from qg_lightning.data.folder import check_mask_folder
from qg_lightning.study.methods import DEFAULT_METHODS
from qg_lightning.study.presets import PRESETS, StudyPreset

log = logging.getLogger(__name__)


def _resolved(path: str | None) -> str | None:
    return str(Path(path).expanduser().resolve()) if path is not None else None


@dataclass(frozen=True)
class StudyConfig:
    """Everything that defines a study.

    Attributes:
        out: results folder (created; reused to resume).
        root: dataset folder in the standard layout, or ``None`` for the embedded synthetic data.
        n_labeled: labeled training images (not with ``labeled_fraction``).
        labeled_fraction: labeled fraction of the training split; with neither set,
            ``preset.default_labeled_fraction``.
        seeds: run seeds; seed ``k`` sets model initialisation, data order and augmentation of every method.
        preset: the :class:`StudyPreset` (or its name).
        methods: method names from the registry, run in this order.
        split_seed: seed of the split, the snapshot folds and the predictor data (the same for every run).
        val_fraction, test_fraction: fractions of a generated split.
        in_channels, num_classes: image channels and classes (K, background included).
        encoder_weights: segmenter encoder weights (``None`` = random init, the default; e.g.
            ``"imagenet"`` if cached). The predictor backbone is pretrained exactly when this is set.
        predictor: an existing quality predictor checkpoint to use instead of training one (skips snapshots,
            predictor training and its evaluation).
        accelerator: Lightning accelerator (``"auto"``, ``"cpu"``, ``"gpu"``).
        num_workers: DataLoader workers of the segmentation runs.
        keep_checkpoints: keep each run's ``checkpoints/`` (best and last; large) after testing.
        unlabeled_root: a folder of extra unlabeled images without masks (another source, as in the paper's
            protocol: label every training image with ``labeled_fraction=1``, take the unlabeled images from
            here). ``ROOT/unlabeled/`` is used as well when present.
        extra_test: other labeled folders (standard layout) on which every final model is also tested, all of
            their images (e.g. another centre), reported beside the in-domain test Dice. Their masks are read
            from the same ``mask_dir`` as ``root``'s (the classes must mean the same).
        diagnostics: when every unlabeled image has a hidden mask (the unlabeled part of a labeled split), give
            the masks to the runs for analysis only: PL-oracle's weights and the pseudolabel diagnostics
            (``diag/*``); no other loss reads them.
        mask_dir: mask sub-folder of ``root`` (e.g. ``masks_3class``).
    """

    out: str
    root: str | None = None
    n_labeled: int | None = None
    labeled_fraction: float | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    preset: StudyPreset | str = "cpu"
    methods: tuple[str, ...] = DEFAULT_METHODS
    split_seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    in_channels: int = 3
    num_classes: int = 2
    encoder_weights: str | None = None
    predictor: str | None = None
    accelerator: str = "auto"
    num_workers: int = 0
    keep_checkpoints: bool = False
    unlabeled_root: str | None = None
    extra_test: tuple[str, ...] = ()
    diagnostics: bool = True
    mask_dir: str = "masks"

    def __post_init__(self) -> None:
        if isinstance(self.preset, str):
            if self.preset not in PRESETS:
                raise ValueError(
                    f"`preset` must be one of {sorted(PRESETS)} or a StudyPreset, got {self.preset!r}."
                )
            object.__setattr__(self, "preset", PRESETS[self.preset])
        elif not isinstance(self.preset, StudyPreset):
            raise TypeError(
                f"`preset` must be a preset name or a StudyPreset, got {type(self.preset).__name__}."
            )
        if self.n_labeled is not None and self.labeled_fraction is not None:
            raise ValueError(
                f"Set only one of `n_labeled` ({self.n_labeled}) and `labeled_fraction` "
                f"({self.labeled_fraction})."
            )
        check_int(self.n_labeled, "n_labeled", minimum=1, optional=True)
        check_fraction(self.labeled_fraction, "labeled_fraction", optional=True)
        seeds = tuple(self.seeds)
        if not seeds or not all(is_int(s) for s in seeds):
            raise ValueError(f"`seeds` must be a non-empty list of integers, got {self.seeds!r}.")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"`seeds` has duplicates: {list(seeds)}.")
        object.__setattr__(self, "seeds", seeds)
        methods = tuple(self.methods)
        if not methods or len(set(methods)) != len(methods):
            raise ValueError(f"`methods` must be a non-empty list without duplicates, got {list(methods)}.")
        object.__setattr__(self, "methods", methods)
        if self.root is not None and not Path(self.root).expanduser().is_dir():
            raise FileNotFoundError(
                f"Dataset folder `root`='{self.root}' does not exist. Pass a folder in the standard layout "
                "(images/, masks/) or use the embedded synthetic data (root=None / --synthetic)."
            )
        if self.unlabeled_root is not None and not Path(self.unlabeled_root).expanduser().is_dir():
            raise FileNotFoundError(
                f"Unlabeled image folder `unlabeled_root`='{self.unlabeled_root}' does not exist (--unlabeled-root)."
            )
        extra = tuple(self.extra_test)
        for folder in extra:
            if not Path(folder).expanduser().is_dir():
                raise FileNotFoundError(
                    f"Extra test folder '{folder}' (--extra-test) does not exist; pass labeled folders in the "
                    "standard layout (images/, masks/)."
                )
            try:  # every extra folder is read with the study's mask folder
                check_mask_folder(folder, self.mask_dir, option="--mask-dir", root_option="--extra-test")
            except FileNotFoundError as err:
                raise FileNotFoundError(f"Extra test folder '{folder}' (--extra-test): {err}") from None
        if len({Path(f).expanduser().resolve() for f in extra}) != len(extra):
            raise ValueError(f"`extra_test` names a folder twice: {list(extra)}.")
        object.__setattr__(self, "extra_test", extra)
        if self.predictor is not None and not Path(self.predictor).is_file():
            raise FileNotFoundError(
                f"Quality predictor checkpoint `predictor`='{self.predictor}' does not exist."
            )

    @property
    def study_preset(self) -> StudyPreset:
        """The resolved preset."""
        assert isinstance(self.preset, StudyPreset)  # resolved in __post_init__
        return self.preset

    @property
    def labeled(self) -> dict[str, Any]:
        """``{"n_labeled": ..., "labeled_fraction": ...}`` as used for the split."""
        if self.n_labeled is None and self.labeled_fraction is None:
            return {"n_labeled": None, "labeled_fraction": self.study_preset.default_labeled_fraction}
        return {"n_labeled": self.n_labeled, "labeled_fraction": self.labeled_fraction}

    def fingerprint(self) -> dict[str, Any]:
        """Settings that must not change when a study is resumed (seeds and methods may grow)."""
        return {
            "root": str(Path(self.root).expanduser().resolve()) if self.root is not None else None,
            **self.labeled,
            "split_seed": self.split_seed,
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "encoder_weights": self.encoder_weights,
            "predictor": str(Path(self.predictor).resolve()) if self.predictor is not None else None,
            "unlabeled_root": _resolved(self.unlabeled_root),
            "extra_test": [_resolved(f) for f in self.extra_test],
            "diagnostics": self.diagnostics,
            "mask_dir": self.mask_dir,
            "preset": self.study_preset.to_dict(),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (what ``OUT/study.json`` holds)."""
        return {
            "fingerprint": self.fingerprint(),
            "seeds": list(self.seeds),
            "methods": list(self.methods),
            "accelerator": self.accelerator,
            "num_workers": self.num_workers,
            "keep_checkpoints": self.keep_checkpoints,
        }

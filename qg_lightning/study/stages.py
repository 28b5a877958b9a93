"""The study's stages before the runs: the split, and the quality predictor trained with the library's recipe."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qg_lightning.data import SemiSupervisedDataModule
from qg_lightning.quality.recipe import PredictorData, PredictorRecipe
from qg_lightning.quality.training import train_predictor
from qg_lightning.study._common import _free_memory, _now, _read_json, _write_json
from qg_lightning.study.config import StudyConfig

log = logging.getLogger(__name__)


def _data_kwargs(config: StudyConfig, split_file: str | None) -> dict[str, Any]:
    preset = config.study_preset
    kwargs: dict[str, Any] = {
        "root": config.root,
        "synthetic_images": preset.synthetic_images,
        "synthetic_size": preset.synthetic_size,
        "split_file": split_file,
        "num_classes": config.num_classes,
        "in_channels": config.in_channels,
        "image_size": preset.image_size,
        "val_fraction": config.val_fraction,
        "test_fraction": config.test_fraction,
        "unlabeled_root": config.unlabeled_root,
        "mask_dir": config.mask_dir,
    }
    if split_file is None:
        kwargs.update(config.labeled)
    return kwargs


def _make_split(config: StudyConfig, path: Path) -> dict[str, Any]:
    """Build the study's split once and write it to ``path``; return the data description."""
    dm = SemiSupervisedDataModule(**_data_kwargs(config, None), use_unlabeled=True, seed=config.split_seed)
    dm.setup()
    assert dm.split is not None
    dm.split.save(path)
    return dm.describe()


def _describe_data(config: StudyConfig, split_file: Path) -> dict[str, Any]:
    dm = SemiSupervisedDataModule(
        **_data_kwargs(config, str(split_file)), use_unlabeled=True, seed=config.split_seed
    )
    dm.setup()
    return dm.describe()


def study_recipe(config: StudyConfig, n_labeled: int) -> PredictorRecipe:
    """The study's predictor recipe: the preset's (the library's best by default) scaled to the study's
    ``n_labeled`` labeled images (:meth:`~qg_lightning.quality.recipe.PredictorRecipe.scaled_to`: the training
    length it was measured with), at the study's image size and split seed, with a pretrained backbone exactly
    when the segmenters are pretrained."""
    preset = config.study_preset
    return preset.recipe.scaled_to(n_labeled).replace(
        image_size=preset.image_size,
        seed=config.split_seed,
        pretrained=config.encoder_weights is not None,
    )


def study_predictor_data(config: StudyConfig, split_file: Path) -> PredictorData:
    """The predictor's data: the study's own split and masks (``mask_dir``), so it learns from the study's labeled
    images only."""
    preset = config.study_preset
    return PredictorData(
        root=config.root,
        split_file=str(split_file),
        split_seed=config.split_seed,
        in_channels=config.in_channels,
        num_classes=config.num_classes,
        synthetic_images=preset.synthetic_images,
        synthetic_size=preset.synthetic_size,
        mask_dir=config.mask_dir,
    )


def _headline(block: Mapping[str, Any] | None) -> dict[str, Any]:
    keys = ("n", "mae", "pearson", "spearman", "constant_baseline_mae")
    return {k: (block or {}).get(k) for k in keys}


def _final_candidates_csv(paths: Mapping[str, Path], folder: Path) -> str | None:
    """The candidates CSV (predicted vs true quality) of the final predictor's main evaluation."""
    for label in ("calibrated_tta", "calibrated", "final_tta", "final", "uncalibrated"):
        report = paths.get(f"report_{label}")
        if report is None or not Path(report).is_file():
            continue
        name = _read_json(Path(report)).get("candidates_csv")
        if not name:
            continue
        for candidate in (Path(name), Path(report).parent / name, folder / name):
            if candidate.is_file():
                return str(candidate.resolve())
    return None


def train_study_predictor(config: StudyConfig, out: Path, progress: Any = None) -> dict[str, Any]:
    """Train (or reuse, when cached) the study's quality predictor with
    :func:`~qg_lightning.quality.training.train_predictor` under ``OUT/predictor``; return a summary with the
    checkpoint and the real-mask figures on the validation split."""
    folder = out / "predictor"
    start = time.perf_counter()
    split = _read_json(out / "split.json")
    n_labeled = len(split.get("labeled") or split.get("train") or [])  # no labeled list: all of train
    trained = train_predictor(
        study_recipe(config, max(1, n_labeled)),
        study_predictor_data(config, out / "split.json"),
        folder,
        accelerator=config.accelerator,
        report_subset="val",
        progress=progress,
    )
    report = trained.report
    evaluations = report.get("evaluations") or {}
    info = {
        "checkpoint": str(trained.checkpoint),
        "report": str(folder / "report.json"),
        "recipe": trained.recipe.to_dict(),
        "subset": report.get("subset"),
        "evaluations": {
            name: {source: _headline(ev.get(source) if isinstance(ev, Mapping) else None)
                   for source in ("all", "synthetic", "real")}
            for name, ev in evaluations.items()
        },
        "calibration": report.get("calibration"),
        "candidates_csv": _final_candidates_csv(trained.paths, folder),
        "wall_time_s": time.perf_counter() - start,
        "finished_at": _now(),
    }  # fmt: skip
    _write_json(folder / "study_predictor.json", info, base=out)
    _free_memory()
    return info

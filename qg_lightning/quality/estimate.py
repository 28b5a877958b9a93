"""How long a :class:`~qg_lightning.quality.recipe.PredictorRecipe` takes on this machine:
:func:`estimate_predictor_time` times a few real training steps of each model and scales them up.

The estimate is an upper bound of the usual run: it times the predictor on synthetic corruptions only (a
snapshot candidate costs less to make), and it ignores ``patience`` (early stopping). ``max_minutes`` caps
the predictor's share.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import lightning as L
from typing_extensions import override

from qg_lightning._validation import check_int
from qg_lightning.data import SemiSupervisedDataModule
from qg_lightning.quality.recipe import PredictorData, PredictorRecipe

__all__ = ["TimeEstimate", "estimate_predictor_time"]


@dataclass(frozen=True)
class TimeEstimate:
    """A measured estimate of a recipe's run time.

    Attributes:
        seconds: the whole run, in seconds.
        stages: seconds per stage (``snapshots``, ``predictor``, ``evaluation``).
        counts: what the figures scale: ``labeled`` and ``val`` images, ``snapshot_steps`` (all folds and
            models), ``predictor_steps``, ``evaluated_candidates``.
        measured: the measured times (seconds per step, data set-up).
        accelerator: the accelerator the steps ran on.
    """

    seconds: float
    stages: dict[str, float]
    counts: dict[str, int]
    measured: dict[str, float] = field(default_factory=dict)
    accelerator: str = "cpu"

    def describe(self) -> str:
        """One line, e.g. ``about 31 min (snapshots 9 min, predictor 20 min, evaluation 2 min) on cpu``.

        Example:
            >>> TimeEstimate(1860.0, {"snapshots": 540.0, "predictor": 1200.0, "evaluation": 120.0}, {}).describe()
            'about 31 min (snapshots 9 min, predictor 20 min, evaluation 2 min) on cpu'
        """
        parts = ", ".join(f"{name} {_minutes(s)}" for name, s in self.stages.items())
        return f"about {_minutes(self.seconds)} ({parts}) on {self.accelerator}"


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.0f} min"


class _StepTimer(L.Callback):
    """Wall time between consecutive training batch ends (data, augmentation, forward, backward, step) and of
    each validation batch."""

    def __init__(self) -> None:
        self.train: list[float] = []
        self.val: list[float] = []
        self._last: float | None = None
        self._val_start = 0.0

    @override
    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.train.append(now - self._last)
        self._last = now

    @override
    def on_validation_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._val_start = time.perf_counter()

    @override
    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.val.append(time.perf_counter() - self._val_start)


def _time_fit(model: L.LightningModule, dm: L.LightningDataModule, steps: int, accelerator: str,
              precision: str | None, root: str, validate: bool) -> _StepTimer:  # fmt: skip
    timer = _StepTimer()
    kwargs: dict[str, Any] = {"precision": precision} if precision is not None else {}
    trainer = L.Trainer(accelerator=accelerator, devices=1, max_epochs=-1, max_steps=steps + 1,
                        limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
                        default_root_dir=root, **kwargs)  # fmt: skip
    trainer.fit(model, datamodule=dm)
    if validate:
        trainer.limit_val_batches = 2
        trainer.validate(model, datamodule=dm, verbose=False)
    if not timer.train:
        raise RuntimeError("The timing run finished no training step; the labeled set may be too small.")
    return timer


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def estimate_predictor_time(
    recipe: PredictorRecipe,
    data: PredictorData,
    *,
    accelerator: str = "auto",
    precision: str | None = None,
    steps: int = 3,
) -> TimeEstimate:
    """Time ``steps`` training steps of each snapshot model and of the predictor on ``data`` (after one
    warm-up step) and scale them to the whole recipe.

    Args:
        recipe: the recipe to estimate.
        data: the images it will train on.
        accelerator: Lightning accelerator, as for :func:`~qg_lightning.quality.training.train_predictor`.
        precision: Lightning precision, likewise.
        steps: timed steps per model (>= 1); more steps, a steadier figure.

    Returns:
        :class:`TimeEstimate` (``describe()`` gives one line for a log).

    Raises:
        ValueError: ``steps`` is not an integer >= 1.
    """
    import tempfile

    from qg_lightning.methods import SupervisedSegmenter
    from qg_lightning.quality.datamodule import QualityDataModule
    from qg_lightning.quality.predictor import QualityPredictor

    check_int(steps, "steps", minimum=1)
    kwargs = data.datamodule_kwargs(recipe.image_size)
    measured: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="qg_estimate_") as root:
        start = time.perf_counter()
        source = SemiSupervisedDataModule(
            **kwargs, use_unlabeled=False, batch_size=recipe.snapshot_batch_size
        )
        source.setup()
        measured["data_setup_s"] = time.perf_counter() - start
        split = source.split
        if split is None:  # setup always sets it
            raise RuntimeError("SemiSupervisedDataModule.setup() set no split.")
        n_lab, n_val = len(split.labeled or []), len(split.val)
        snapshot_step = 0.0
        snapshot_steps = 0
        n_snap_lab = (
            n_lab if recipe.snapshot_label_fraction is None else n_lab * recipe.snapshot_label_fraction
        )
        per_fold = math.ceil(n_snap_lab * (recipe.snapshot_folds - 1) / recipe.snapshot_folds)
        fold_steps = max(recipe.snapshot_epochs) * max(1, per_fold // recipe.snapshot_batch_size)
        snapshots_s = 0.0
        if recipe.needs_snapshots:
            for arch, encoder in recipe.snapshot_specs:
                model = SupervisedSegmenter(arch=arch, encoder_name=encoder, encoder_weights=None,
                                            in_channels=data.in_channels, num_classes=data.num_classes)  # fmt: skip
                step = _median(_time_fit(model, source, steps, accelerator, precision, root, False).train)
                measured[f"snapshot_step_s[{arch}:{encoder}]"] = step
                snapshot_step = max(snapshot_step, step)
                snapshot_steps += recipe.snapshot_folds * fold_steps
                snapshots_s += recipe.snapshot_folds * (fold_steps * step + measured["data_setup_s"])
        start = time.perf_counter()
        qdm = QualityDataModule(**kwargs, samples_per_image=recipe.samples_per_image, batch_size=recipe.batch_size,
                                p_weak=0.0)  # fmt: skip
        qdm.setup()
        measured["predictor_data_setup_s"] = time.perf_counter() - start
        model = QualityPredictor(backbone=recipe.backbone, in_channels=data.in_channels,
                                 num_classes=data.num_classes, pretrained=False, channels_last=recipe.channels_last,
                                 error_map_weight=float(recipe.error_map_weight))  # fmt: skip
        timer = _time_fit(model, qdm, steps, accelerator, precision, root, True)
        measured["evaluation_per_candidate_s"] = _time_evaluation(model, source, recipe, data, accelerator)
    predictor_step = measured["predictor_step_s"] = _median(timer.train)
    val_batch = measured["predictor_val_batch_s"] = _median(timer.val) if timer.val else predictor_step / 3
    epoch_steps = max(1, n_lab * recipe.samples_per_image // recipe.batch_size)
    val_batches = math.ceil(n_val * qdm.hparams.eval_candidates_per_image / recipe.batch_size)
    n_snapshots = len(recipe.snapshot_models) * recipe.snapshot_folds * len(recipe.snapshot_epochs)
    n_snapshots *= int(recipe.needs_snapshots)
    # snapshot masks of every labeled image at set-up: a forward pass, about a third of a training step
    snapshot_setup = (
        n_snapshots * n_lab / recipe.snapshot_batch_size * snapshot_step / 3 if recipe.p_weak else 0
    )
    predictor_s = recipe.max_epochs * (epoch_steps * predictor_step + val_batches * val_batch)
    if recipe.max_minutes is not None:
        predictor_s = min(predictor_s, recipe.max_minutes * 60)
    predictor_s += measured["predictor_data_setup_s"] + snapshot_setup
    # evaluation: the uncalibrated and calibrated predictor and (4 flips) its TTA; plus two segmentations of the
    # validation images by every snapshot
    candidates = n_val * (recipe.eval_candidates_per_image + n_snapshots)
    evaluations = 1 + int(recipe.calibration != "none") + 4 * int(recipe.tta)
    evaluation_s = candidates * evaluations * measured["evaluation_per_candidate_s"]
    evaluation_s += 2 * (
        measured["data_setup_s"] + n_snapshots * n_val / recipe.snapshot_batch_size * snapshot_step / 3
    )
    stages = {"snapshots": snapshots_s, "predictor": predictor_s, "evaluation": evaluation_s}
    counts = {"labeled": n_lab, "val": n_val, "snapshot_steps": snapshot_steps,
              "predictor_steps": recipe.max_epochs * epoch_steps, "evaluated_candidates": candidates}  # fmt: skip
    device = "cuda" if accelerator != "cpu" and _cuda() else "cpu"
    return TimeEstimate(sum(stages.values()), stages, counts, measured, device)


def _time_evaluation(
    model: Any,
    source: SemiSupervisedDataModule,
    recipe: PredictorRecipe,
    data: PredictorData,
    accelerator: str,
) -> float:
    """Seconds per candidate of :func:`~qg_lightning.quality.evaluation.evaluate_candidate_set` (the
    predictions and the image-dependence check), on up to 16 validation images x 4 synthetic candidates."""
    from qg_lightning.quality.evaluation import (
        evaluate_candidate_set,
        load_evaluation_images,
        make_candidate_set,
    )

    split, index = source.split, source.index
    if split is None or index is None:  # set by setup
        raise RuntimeError("SemiSupervisedDataModule.setup() set no split.")
    ids = list(split.val or split.labeled or [])[:16]
    images, truths = load_evaluation_images(index, ids, image_size=recipe.image_size, in_channels=data.in_channels,
                                            num_classes=data.num_classes)  # fmt: skip
    candidates = make_candidate_set(images, truths, ids, num_classes=data.num_classes, candidates_per_image=4)
    model = model.to("cuda" if accelerator != "cpu" and _cuda() else "cpu").eval()
    start = time.perf_counter()
    evaluate_candidate_set(model, candidates)
    return (time.perf_counter() - start) / candidates.candidates.shape[0]


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()

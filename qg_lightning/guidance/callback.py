"""``QualityReweightCallback``: loads the frozen quality predictor and drives quality guidance.

The callback is the Trainer-side half of quality guidance; the host side is
:class:`~qg_lightning.guidance.QualityGuidedMixin`. The callback

* loads the Phase-1 predictor (``setup``), freezes it and attaches it to the module without registering it
  as a submodule; moves it to the module's device (and dtype for true half precision) again once the
  strategy has moved the module (``on_fit_start`` / ``on_validation_start`` / ``on_test_start``; every DDP
  rank loads its own copy);
* checks at ``on_fit_start`` that it is frozen: eval mode, ``requires_grad=False``, in no optimizer, not a
  parameter of the module;
* states at the start of training, in optimizer steps of this run's budget, when each mechanism starts and
  reaches full strength, and warns when one would never become active;
* sets the scheduled loss weights ``qw_lambda`` / ``qar_lambda`` on the module before each training batch
  (:class:`~qg_lightning.guidance.schedules.RampSchedule` over epochs or optimizer steps);
* logs, after each training batch, ``train/qw_applied`` / ``train/qar_applied``, the lambdas the host read
  (``train/lambda_qw``, ``train/lambda_qar``) and, when the host used them, ``train/q_mean``,
  ``train/w_mean``, ``train/frac_q_above_tau``, ``train/loss_qar`` (via
  :meth:`QualityGuidedMixin.log_quality_stats`, the single place these keys are logged);
* optionally logs an image grid of weighted pseudolabels to TensorBoard / W&B;
* per validation epoch, logs how well the predictor's quality matches the true Dice of the host's predictions
  (``val/quality_alignment`` = Pearson r, ``val/quality_pred_mean``, ``val/quality_true_mean``).

[0] Abhishek & Hamarneh, "Quality-Guided Semi-Supervised Learning for Medical Image Segmentation", 2026.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from typing_extensions import override

from qg_lightning._validation import check_bool, check_int, check_number, is_int
from qg_lightning.checkpoint import load_checkpoint
from qg_lightning.guidance import functional as F
from qg_lightning.guidance import guards
from qg_lightning.guidance.mixin import GuidanceSettings, QualityGuidedMixin
from qg_lightning.guidance.schedules import RampSchedule, describe_schedule
from qg_lightning.guidance.visualize import quality_grid
from qg_lightning.metrics.functional import dice_score
from qg_lightning.quality.network import load_quality_networks
from qg_lightning.runs import stop_other_ranks

__all__ = ["QualityReweightCallback"]


_MECHANISMS = ("qw", "qar")
_TRUE_PRECISION_DTYPES = {
    "16-true": torch.float16,
    "bf16-true": torch.bfloat16,
    "64-true": torch.float64,
}
_KEY = "QualityReweightCallback"


def _check_mechanisms(mechanisms: Any) -> tuple[str, ...]:
    if isinstance(mechanisms, str):
        mechanisms = [mechanisms]
    if not isinstance(mechanisms, Sequence) or len(mechanisms) == 0:
        raise ValueError(
            f"`mechanisms` must be a non-empty list drawn from {list(_MECHANISMS)}, got {mechanisms!r}. "
            "Use ['qw'] (quality-weighted pseudolabels), ['qar'] (quality-aware regularisation) or both; "
            "to train without guidance, remove the QualityReweightCallback."
        )
    unknown = [m for m in mechanisms if m not in _MECHANISMS]
    if unknown:
        raise ValueError(f"`mechanisms` may only contain {list(_MECHANISMS)}, got unknown {unknown!r}.")
    return tuple(m for m in _MECHANISMS if m in mechanisms)


class QualityReweightCallback(Callback):
    """Quality guidance with a frozen quality predictor: PL-QW weights and/or the QAR loss [0].

    Args:
        predictor: path of the Phase-1 quality predictor checkpoint (``QualityPredictor``), or a list of
            paths: their mean guides (a :class:`~qg_lightning.quality.QualityEnsemble`, one forward pass per
            member, e.g. predictors trained with different seeds).
        mechanisms: ``["qw"]`` (quality-weighted pseudolabels, default), ``["qar"]`` or both.
        tau: quality threshold in ``[0, 1]``; samples with ``q < tau`` get weight 0 (paper: 0.5).
        temperature: exponent T of ``w = q ** T`` (paper: 2).
        class_reduction: multi-class only: how per-class qualities become one sample quality before the
            threshold and power: ``"mean"`` (default), ``"min"`` or ``"product"``.
        qw_weight: final PL-QW loss weight (paper: 0.25); must be > 0 when "qw" is enabled. Hosts that keep
            their own unsupervised weight (the reference hosts, ``examples/custom_module.py``) never read it.
        qw_warmup: PL-QW weight is 0 before this time (paper: 15 epochs).
        qw_ramp: then rises linearly over this time (paper: 30 epochs); 0 = a step change to ``qw_weight``
            at ``qw_warmup``.
        qar_weight: final QAR loss weight (paper: 0.01; keep it small, f can learn to fool g); must be > 0
            when "qar" is enabled.
        qar_warmup: QAR weight is 0 before this time (paper: 30 epochs).
        qar_ramp: then rises linearly over this time (paper: 40 epochs); 0 = a step change at ``qar_warmup``.
        schedule_unit: ``"epoch"`` (``trainer.current_epoch``; constant within an epoch) or ``"step"``
            (``trainer.global_step``, optimizer steps). The paper's schedules are in epochs: in a short or
            step-budgeted run use ``"step"`` with step values. At the start of training the callback states
            when each mechanism starts and reaches full strength, in steps, and warns when one never starts.
        log_images_every_n_steps: log a grid of weighted pseudolabels every this many optimizer steps to each
            TensorBoard / W&B logger (0 = never).
        n_log_images: images in that grid.
        check_alignment: log ``val/quality_alignment`` (Pearson r of predicted vs true Dice of the host's
            validation predictions), ``val/quality_pred_mean`` and ``val/quality_true_mean``; the batches come
            from the module's :meth:`~qg_lightning.guidance.QualityGuidedMixin.quality_alignment_batch`.
        input_range: images handed to the predictor must be in ``[0, 1]``. ``"error"`` (default): clearly
            other ranges (normalised, 0..255) raise with the fix, slight excursions (noise augmentation) warn
            once; ``"warn"``: both only warn once; ``"off"``: no check. To feed normalised data, override the
            module's :meth:`~qg_lightning.guidance.QualityGuidedMixin.quality_images` instead.
        size_mismatch: when images differ from the predictor's training size (recorded in its checkpoint by
            the data module, ``datamodule_hyper_parameters.image_size``): ``"resize"`` (default) resizes
            images and masks to it before the predictor (bilinear; nearest for hard masks) and says so once,
            ``"error"`` refuses, ``"keep"`` passes them as they are. Without a recorded size nothing is resized.

    Raises:
        ValueError: an argument is out of range (the message names it).
        FileNotFoundError: ``predictor`` (or one of its paths) does not exist.

    Example:
        >>> import tempfile, pathlib
        >>> from qg_lightning.quality.predictor import QualityPredictor
        >>> g = QualityPredictor()
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "g.ckpt"
        >>> torch.save({"state_dict": g.state_dict(), "hyper_parameters": dict(g.hparams)}, path)
        >>> cb = QualityReweightCallback(str(path), mechanisms=["qw", "qar"], qw_warmup=1, qw_ramp=2)
        >>> [cb.lambdas_at(t) for t in (0, 2, 3)]
        [(0.0, 0.0), (0.125, 0.0), (0.25, 0.0)]
    """

    def __init__(
        self,
        predictor: str | list[str],
        mechanisms: Sequence[Literal["qw", "qar"]] = ("qw",),
        tau: float = 0.5,
        temperature: float = 2.0,
        class_reduction: Literal["mean", "min", "product"] = "mean",
        qw_weight: float = 0.25,
        qw_warmup: float = 15.0,
        qw_ramp: float = 30.0,
        qar_weight: float = 0.01,
        qar_warmup: float = 30.0,
        qar_ramp: float = 40.0,
        schedule_unit: Literal["epoch", "step"] = "epoch",
        log_images_every_n_steps: int = 0,
        n_log_images: int = 8,
        check_alignment: bool = True,
        input_range: Literal["error", "warn", "off"] = "error",
        size_mismatch: Literal["resize", "error", "keep"] = "resize",
    ) -> None:
        super().__init__()
        self.mechanisms = _check_mechanisms(mechanisms)
        hint = "Set it in the QualityReweightCallback init_args (see METHOD.md for the paper values)."
        try:
            self.tau = F.check_tau(tau)
            self.temperature = F.check_temperature(temperature)
            self.class_reduction = F.check_class_reduction(class_reduction)
        except ValueError as err:  # name where the value comes from (the config key)
            raise ValueError(f"{err} {hint}") from None
        self.qw_schedule = RampSchedule(
            check_number(qw_weight, "qw_weight", low=0, finite=True, hint=hint),
            check_number(qw_warmup, "qw_warmup", low=0, finite=True, hint=hint),
            check_number(qw_ramp, "qw_ramp", low=0, finite=True, hint=hint),
        )
        self.qar_schedule = RampSchedule(
            check_number(qar_weight, "qar_weight", low=0, finite=True, hint=hint),
            check_number(qar_warmup, "qar_warmup", low=0, finite=True, hint=hint),
            check_number(qar_ramp, "qar_ramp", low=0, finite=True, hint=hint),
        )
        for name, schedule in (("qw", self.qw_schedule), ("qar", self.qar_schedule)):
            if name in self.mechanisms and schedule.max_value == 0:
                raise ValueError(
                    f"`{name}_weight` is 0 while '{name}' is in `mechanisms`, so its weight would stay 0 for the "
                    f"whole run. Set {name}_weight > 0 (paper: {0.25 if name == 'qw' else 0.01}) or remove "
                    f"'{name}' from `mechanisms`. {hint}"
                )
        if schedule_unit not in ("epoch", "step"):
            raise ValueError(f"`schedule_unit` must be 'epoch' or 'step', got {schedule_unit!r}.")
        self.schedule_unit = schedule_unit
        if input_range not in guards.INPUT_RANGE_POLICIES:
            raise ValueError(
                f"`input_range` must be one of {list(guards.INPUT_RANGE_POLICIES)}, got {input_range!r}. {hint}"
            )
        if size_mismatch not in guards.SIZE_POLICIES:
            raise ValueError(
                f"`size_mismatch` must be one of {list(guards.SIZE_POLICIES)}, got {size_mismatch!r}. {hint}"
            )
        self.input_range = input_range
        self.size_mismatch = size_mismatch
        for name, value, low in (
            ("log_images_every_n_steps", log_images_every_n_steps, 0),
            ("n_log_images", n_log_images, 1),
        ):
            check_int(value, name, minimum=low)
        self.log_images_every_n_steps = log_images_every_n_steps
        self.n_log_images = n_log_images
        self.check_alignment = check_bool(check_alignment, "check_alignment")
        if isinstance(predictor, (str, Path)):
            paths = [str(predictor)]
        elif (
            isinstance(predictor, Sequence)
            and predictor
            and all(isinstance(p, (str, Path)) for p in predictor)
        ):
            paths = [str(p) for p in predictor]
        else:
            raise TypeError(
                f"`predictor` must be a path (str) or a non-empty list of paths, got {predictor!r} (config key "
                f"`{_KEY}.predictor`)."
            )
        self.predictor: str | list[str] = paths[0] if isinstance(predictor, (str, Path)) else paths
        self.predictor_paths = paths
        for path in paths:
            if not Path(path).is_file():
                raise FileNotFoundError(
                    f"Quality predictor checkpoint not found: '{path}' (config key `{_KEY}.predictor`). Train "
                    "one first (Phase 1) and point `predictor` to its .ckpt file."
                )

        self._predictor: nn.Module | None = None
        self._qw_lambda = 0.0
        self._qar_lambda = 0.0
        self._last_epoch = 0
        self._last_step = 0
        self._last_image_step = 0
        self._restored = False
        self._moments: Tensor | None = None
        self._warned_alignment = False
        self._verify_alignment = True
        self._image_size: int | None = None
        self._said_qw_unread = False

    # -----------------------------------------------------------------------------------------------
    # identity and state
    # ------------------------------------------------------------------------------------------------
    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(mechanisms=list(self.mechanisms))

    @property
    def loaded_predictor(self) -> nn.Module | None:
        """The frozen predictor once ``setup`` has run, else ``None``."""
        return self._predictor

    @property
    def settings(self) -> GuidanceSettings:
        """Settings handed to the module with the predictor."""
        return GuidanceSettings(
            tau=self.tau,
            temperature=self.temperature,
            class_reduction=self.class_reduction,
            mechanisms=frozenset(self.mechanisms),
            n_keep_images=self.n_log_images if self.log_images_every_n_steps > 0 else 0,
            input_range=self.input_range,
            size_mismatch=self.size_mismatch,
            image_size=self._image_size,
            source=repr(self.predictor),
        )

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "mechanisms": list(self.mechanisms),
            "schedule_unit": self.schedule_unit,
            "qw_schedule": asdict(self.qw_schedule),
            "qar_schedule": asdict(self.qar_schedule),
            "epoch": self._last_epoch,
            "global_step": self._last_step,
            "lambda_qw": self._qw_lambda,
            "lambda_qar": self._qar_lambda,
            "last_image_step": self._last_image_step,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = {
            "schedule_unit": state_dict.get("schedule_unit", self.schedule_unit),
            "qw_schedule": state_dict.get("qw_schedule", asdict(self.qw_schedule)),
            "qar_schedule": state_dict.get("qar_schedule", asdict(self.qar_schedule)),
        }
        current = {
            "schedule_unit": self.schedule_unit,
            "qw_schedule": asdict(self.qw_schedule),
            "qar_schedule": asdict(self.qar_schedule),
        }
        changed = sorted(k for k in current if saved[k] != current[k])
        if changed:
            rank_zero_warn(
                f"{_KEY}: the checkpoint was trained with "
                f"{ {k: saved[k] for k in changed} }, this run uses { {k: current[k] for k in changed} }; "
                "continuing with the new settings from the restored epoch/step."
            )
        self._last_epoch = int(state_dict.get("epoch", 0))
        self._last_step = int(state_dict.get("global_step", 0))
        self._qw_lambda = float(state_dict.get("lambda_qw", 0.0))
        self._qar_lambda = float(state_dict.get("lambda_qar", 0.0))
        self._last_image_step = int(state_dict.get("last_image_step", 0))
        self._restored = True

    # -----------------------------------------------------------------------------------------------
    # schedules (override lambdas_at for a custom schedule)
    # ------------------------------------------------------------------------------------------------
    def lambdas_at(self, t: float) -> tuple[float, float]:
        """``(lambda_qw, lambda_qar)`` at time ``t`` (epochs or steps); 0.0 for a disabled mechanism."""
        qw = self.qw_schedule.value(t) if "qw" in self.mechanisms else 0.0
        qar = self.qar_schedule.value(t) if "qar" in self.mechanisms else 0.0
        return qw, qar

    def _schedule_time(self, trainer: pl.Trainer) -> float:
        return float(trainer.current_epoch if self.schedule_unit == "epoch" else trainer.global_step)

    def _update_lambdas(self, trainer: pl.Trainer, pl_module: QualityGuidedMixin) -> None:
        self._last_epoch = int(trainer.current_epoch)
        self._last_step = int(trainer.global_step)
        self._qw_lambda, self._qar_lambda = self.lambdas_at(self._schedule_time(trainer))
        pl_module.set_quality_lambdas(self._qw_lambda, self._qar_lambda)

    # -----------------------------------------------------------------------------------------------
    # predictor: load, place, freeze, verify
    # ------------------------------------------------------------------------------------------------
    def _load(self, pl_module: pl.LightningModule) -> nn.Module:
        hparams = getattr(pl_module, "hparams", None) or {}
        in_channels = hparams.get("in_channels") if isinstance(hparams, Mapping) else None
        num_classes = hparams.get("num_classes") if isinstance(hparams, Mapping) else None
        try:
            predictor = load_quality_networks(
                self.predictor_paths, in_channels=in_channels, num_classes=num_classes, map_location="cpu"
            )
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{err} (config key `{_KEY}.predictor`).") from None
        except ValueError as err:
            raise ValueError(
                f"{_KEY}.predictor {self.predictor!r} cannot guide {type(pl_module).__name__} "
                f"(module hparams: in_channels={in_channels}, num_classes={num_classes}): {err}"
            ) from None
        missing = [k for k, v in (("in_channels", in_channels), ("num_classes", num_classes)) if v is None]
        if missing:
            rank_zero_info(
                f"{_KEY}: {type(pl_module).__name__}'s hyper-parameters do not name {' or '.join(missing)}, so "
                f"the predictor (in_channels={getattr(predictor, 'in_channels', '?')}, "
                f"num_classes={getattr(predictor, 'num_classes', '?')}) is checked against every batch instead "
                "(image channels, class indices of label maps). Add them to `save_hyperparameters()` to check at "
                "setup."
            )
        self._image_size = self._training_image_size()
        return predictor.eval().requires_grad_(False)

    def _training_image_size(self) -> int | None:
        """The image size the (first) predictor was trained at, as its data module recorded it, or None."""
        sizes = []
        for path in self.predictor_paths:
            hparams = load_checkpoint(path, what="quality predictor checkpoint").get(
                "datamodule_hyper_parameters"
            )
            size = hparams.get("image_size") if isinstance(hparams, Mapping) else None
            sizes.append(size if is_int(size) else None)
        if len(set(sizes)) > 1:
            rank_zero_warn(
                f"{_KEY}: the predictors were trained at different image sizes "
                f"({', '.join(f'{p}: {s}' for p, s in zip(self.predictor_paths, sizes, strict=True))}); "
                f"guidance uses the first one's ({sizes[0]})."
            )
        if sizes[0] is None and self.size_mismatch != "keep":
            rank_zero_info(
                f"{_KEY}: {self.predictor!r} does not record its training image size "
                "(`datamodule_hyper_parameters.image_size`); images reach the predictor at their own size."
            )
        return sizes[0]

    def _place(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._predictor is None:
            return
        dtype = _TRUE_PRECISION_DTYPES.get(str(trainer.precision))
        if dtype is not None:
            self._predictor.to(device=pl_module.device, dtype=dtype)
        else:
            self._predictor.to(device=pl_module.device)
        self._predictor.eval()

    def _verify_frozen(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        predictor = self._predictor
        if predictor is None:
            return
        names = {id(p): name for name, p in predictor.named_parameters()}
        for name, param in pl_module.named_parameters():
            if id(param) in names:
                raise RuntimeError(
                    f"Quality predictor parameter '{names[id(param)]}' is also parameter '{name}' of "
                    f"{type(pl_module).__name__}: the frozen predictor must not be a submodule of the host. "
                    "Do not assign it to a module attribute; use `self.quality_weights(...)` instead."
                )
        for i, optimizer in enumerate(trainer.optimizers):
            for j, group in enumerate(optimizer.param_groups):
                for param in group["params"]:
                    if id(param) in names:
                        raise RuntimeError(
                            f"Quality predictor parameter '{names[id(param)]}' is in optimizer {i} "
                            f"({type(optimizer).__name__}), param group {j}: the predictor must stay frozen. "
                            "Build the optimizer from `self.parameters()` only in configure_optimizers."
                        )
        for name, param in predictor.named_parameters():
            if param.requires_grad:
                raise RuntimeError(
                    f"Quality predictor parameter '{name}' has requires_grad=True; it must stay frozen. "
                    "Something unfroze it after setup (e.g. a fine-tuning callback)."
                )
        for name, module in predictor.named_modules():
            if module.training:
                raise RuntimeError(
                    f"Quality predictor module '{name or '<root>'}' is in training mode; it must stay in "
                    "eval mode."
                )

    # -----------------------------------------------------------------------------------------------
    # hooks
    # ------------------------------------------------------------------------------------------------
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not isinstance(pl_module, QualityGuidedMixin):
            raise TypeError(
                f"{_KEY} needs a LightningModule that subclasses QualityGuidedMixin, got "
                f"{type(pl_module).__name__}. Declare it as `class {type(pl_module).__name__}"
                "(QualityGuidedMixin, L.LightningModule)` "
                "(from qg_lightning.guidance import QualityGuidedMixin)."
            )
        if self._predictor is None:
            self._predictor = self._load(pl_module)
        self._place(trainer, pl_module)
        pl_module.attach_quality_predictor(self._predictor, self.settings)
        if self._restored:
            pl_module.set_quality_lambdas(self._qw_lambda, self._qar_lambda)

    @override
    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Under DDP, a failing launching rank stops the others (see :func:`~qg_lightning.runs.stop_other_ranks`)."""
        stop_other_ranks(trainer, exception)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._place(trainer, pl_module)
        self._verify_frozen(trainer, pl_module)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # the loops' epoch/step counters are restored by now (after on_fit_start)
        self._update_lambdas(trainer, pl_module)  # type: ignore[arg-type]
        self.describe_schedules(trainer)

    def describe_schedules(self, trainer: pl.Trainer) -> list[str]:
        """State (``rank_zero_info``) when each enabled mechanism starts and reaches full strength, in optimizer
        steps of this run's budget; warn (``rank_zero_warn``) for one that never becomes active.

        Returns:
            The lines said (the warnings included).
        """
        total = trainer.estimated_stepping_batches
        total_steps = int(total) if isinstance(total, (int, float)) and math.isfinite(total) else None
        accumulate = max(int(getattr(trainer, "accumulate_grad_batches", 1) or 1), 1)
        batches = trainer.num_training_batches
        steps_per_epoch = (
            max(int(batches) // accumulate, 1)
            if isinstance(batches, (int, float)) and math.isfinite(batches)
            else None
        )
        lines, warnings = [], []
        for name, schedule in (("qw", self.qw_schedule), ("qar", self.qar_schedule)):
            if name not in self.mechanisms:
                continue
            line, never = describe_schedule(
                schedule,
                unit=self.schedule_unit,
                total_steps=total_steps,
                steps_per_epoch=steps_per_epoch,
                name=f"{name}_lambda",
            )
            lines.append(f"  {name}: {line}")
            if never:
                warnings.append(
                    f"{_KEY}: '{name}' never becomes active in this run: {line}. Lower `{name}_warmup` (and "
                    f"`{name}_ramp`) or raise the budget; for a step-budgeted run use `schedule_unit: step` with "
                    "values in optimizer steps."
                )
        budget = f"{total_steps} optimizer steps" if total_steps is not None else "no step limit"
        per_epoch = f", {steps_per_epoch} per epoch" if steps_per_epoch is not None else ""
        header = f"{_KEY} schedules (schedule_unit={self.schedule_unit!r}; this run: {budget}{per_epoch}):"
        rank_zero_info("\n".join([header, *lines]))
        for warning in warnings:
            rank_zero_warn(warning)
        return [header, *lines, *warnings]

    @override
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._place(trainer, pl_module)

    @override
    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._place(trainer, pl_module)

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._predictor is not None:
            self._predictor.eval()
        self._update_lambdas(trainer, pl_module)  # type: ignore[arg-type]
        pl_module.reset_quality_stats()  # type: ignore[attr-defined]

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        stats = pl_module._qg_stats()  # type: ignore[attr-defined]
        if stats.n and not stats.qw_read and not self._said_qw_unread:
            self._said_qw_unread = True
            rank_zero_info(
                f"{_KEY}: {type(pl_module).__name__} applies quality weights without reading `qw_lambda` (it "
                "keeps its own unsupervised weight), so `train/lambda_qw` is not logged; `train/qw_applied` and "
                "`train/w_mean` show the guidance at work."
            )
        pl_module.log_quality_stats()  # type: ignore[attr-defined]
        samples = pl_module.pop_quality_samples()  # type: ignore[attr-defined]
        every = self.log_images_every_n_steps
        step = int(trainer.global_step)
        if every <= 0 or samples is None or step // every <= self._last_image_step // every:
            return
        self._last_image_step = step
        if trainer.is_global_zero:
            self.log_image_grid(trainer, samples, step)

    def log_image_grid(self, trainer: pl.Trainer, samples: Mapping[str, Tensor], step: int) -> None:
        """Send a grid of weighted pseudolabels to every TensorBoard / W&B logger (nothing for others).

        Args:
            trainer: the trainer (its ``loggers`` are used).
            samples: ``{"images", "masks", "weights", "quality"}`` as kept by ``quality_weights``.
            step: global step for the logger.
        """
        grid = quality_grid(samples["images"], samples["masks"], samples["weights"], samples["quality"])
        tag = "train/quality_pseudolabels"
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(tag, grid, global_step=step)
            elif isinstance(logger, WandbLogger):
                array = (grid.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
                logger.log_image(key=tag, images=[array], step=step)

    # -----------------------------------------------------------------------------------------------
    # validation: predicted vs true quality of the host's predictions
    # ------------------------------------------------------------------------------------------------
    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._moments = None
        self._verify_alignment = True  # the guards check the first alignment batch of every epoch

    @override
    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self.check_alignment or trainer.sanity_checking or self._predictor is None:
            return
        parts = pl_module.quality_alignment_batch(batch, outputs)  # type: ignore[attr-defined]
        if parts is None:
            if not self._warned_alignment:
                rank_zero_warn(
                    f"{_KEY}(check_alignment=True): {type(pl_module).__name__}.quality_alignment_batch() returned "
                    "None for a validation batch; the default reads dict batches with 'image' (B, C, H, W) and "
                    "'mask' (B, H, W) label maps. Override `quality_alignment_batch(self, batch, outputs)` to "
                    "return (images, true label maps, predicted label maps) from your batch format, or set "
                    "check_alignment=False to skip the check."
                )
                self._warned_alignment = True
            return
        images, target, preds = parts
        num_classes = self._predictor.num_foreground + 1  # type: ignore[operator]
        quality = pl_module.quality_of_predictions(  # type: ignore[attr-defined]
            images, preds.long(), verify=self._verify_alignment
        )
        self._verify_alignment = False
        predicted = quality.mean(dim=1)
        preds = preds.long().to(target.device)
        true = dice_score(preds, target.long(), num_classes).mean(dim=1).to(predicted.device)
        moments = F.alignment_moments(predicted, true)
        self._moments = moments if self._moments is None else self._moments + moments

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.check_alignment or trainer.sanity_checking or self._predictor is None:
            return
        moments = self._moments
        if moments is None:
            moments = torch.zeros(6, dtype=torch.float64)
        moments = moments.to(pl_module.device)
        # every rank calls reduce (also with zero local samples) so DDP collectives stay matched
        moments = trainer.strategy.reduce(moments, reduce_op="sum")
        self._moments = None
        if float(moments[0]) == 0:
            return
        values = {
            "val/quality_alignment": F.pearson_from_moments(moments),
            "val/quality_pred_mean": moments[1] / moments[0],
            "val/quality_true_mean": moments[2] / moments[0],
        }
        for key, value in values.items():
            pl_module.log(key, value.float(), on_step=False, on_epoch=True, sync_dist=True)

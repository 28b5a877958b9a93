"""NaN/Inf in an image, a loss term or a predicted quality: named error ("raise") or a skipped step ("skip")."""

from __future__ import annotations

import inspect
import pickle
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from qg_lightning.guidance import QualityGuidedMixin
from qg_lightning.guidance.mixin import GuidanceSettings
from qg_lightning.methods import (
    CPSSegmenter,
    EMATeacher,
    FixMatchSegmenter,
    MeanTeacherSegmenter,
    NonFiniteError,
    PseudoLabelSegmenter,
    QARSegmenter,
    SemiSupervisedSegmenter,
    SupervisedSegmenter,
)

# Constant lr (min_lr = lr): every non-skipped step visibly moves the parameters.
SMALL = dict(arch="Unet", encoder_name="resnet18", encoder_weights=None, lr=1e-3, min_lr=1e-3)
NOW = dict(unsup_warmup=0.0, unsup_ramp=0.0)  # unsupervised term active from step 0
BAD_BATCH = 1  # the batch that gets the non-finite value; batches 0 and 2 are clean


# ------------------------------------------------------------------------------------------------ helpers
class _Batches(Dataset):
    """Deterministic 32 px samples, 2 per batch; ``bad`` poisons sample 1 of batch BAD_BATCH (one NaN, one Inf).

    ``bad``: ``"labeled"``, ``"unlabeled"`` (weak view) or ``"unlabeled_strong"``.
    """

    def __init__(self, *, ssl: bool, bad: str | None = None, n_batches: int = 3) -> None:
        g = torch.Generator().manual_seed(0)
        n = 2 * n_batches
        self.ssl = ssl
        self.images = torch.rand(n, 3, 32, 32, generator=g)
        self.masks = (torch.rand(n, 32, 32, generator=g) > 0.5).long()
        self.weak = torch.rand(n, 3, 32, 32, generator=g)
        self.strong = (self.weak * 0.8).clone()
        target = {
            "labeled": self.images,
            "unlabeled": self.weak,
            "unlabeled_strong": self.strong,
            None: None,
        }[bad]
        if target is not None:
            target[2 * BAD_BATCH + 1, 0, 0, 0] = float("nan")
            target[2 * BAD_BATCH + 1, 2, 5, 7] = float("inf")

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> dict[str, Any]:
        labeled = {"image": self.images[i], "mask": self.masks[i], "id": f"lab_{i}"}
        if not self.ssl:
            return labeled
        return {"labeled": labeled, "unlabeled": {"image": self.weak[i], "image_strong": self.strong[i],
                                                  "id": f"unl_{i}"}}  # fmt: skip


def _flat(tensors: list[Tensor]) -> Tensor:
    return torch.cat([t.detach().flatten().float() for t in tensors]) if tensors else torch.zeros(0)


def _snapshot(module: SupervisedSegmenter) -> dict[str, Tensor]:
    nets = module.student_networks()
    teacher = getattr(module, "teacher", None)
    return {
        "params": _flat([p for net in nets for p in net.parameters()]),
        "buffers": _flat([b for net in nets for b in net.buffers() if b.is_floating_point()]),
        "teacher": _flat(list(teacher.parameters())) if teacher is not None else torch.zeros(0),
    }


class _Tracker(L.Callback):
    """Snapshots at every batch start and at the end, so ``moved(key)[i]`` says whether batch i changed it.

    The end of batch i (the module's own ``on_train_batch_end``, i.e. the EMA update, included) lies between
    snapshot i and i+1.
    """

    def __init__(self) -> None:
        self.snaps: list[dict[str, Tensor]] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.snaps.append(_snapshot(pl_module))

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        self.snaps.append(_snapshot(pl_module))

    def moved(self, key: str) -> list[bool]:
        return [not torch.equal(a[key], b[key]) for a, b in zip(self.snaps, self.snaps[1:], strict=False)]


def _fit(model: L.LightningModule, data: _Batches, tmp_path, steps: int = 3) -> tuple[L.Trainer, _Tracker]:
    tracker = _Tracker()
    trainer = L.Trainer(
        accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=tmp_path,
        callbacks=[tracker],
    )  # fmt: skip
    trainer.fit(model, train_dataloaders=DataLoader(data, batch_size=2, shuffle=False))
    return trainer, tracker


class _StubPredictor(nn.Module):
    """Quality = foreground fraction of the mask; NaN on the calls listed in ``nan_calls`` (0-based)."""

    num_foreground = 1

    def __init__(self, nan_calls: set[int]) -> None:
        super().__init__()
        self.nan_calls = nan_calls
        self.calls = 0

    def forward(self, images: Tensor, masks: Tensor) -> Tensor:
        quality = masks.mean(dim=(2, 3))
        if self.calls in self.nan_calls:
            quality = quality * float("nan")
        self.calls += 1
        return quality


def _nan_from_call(fn, nan_call: int, *, index: int | None = None):
    """Wrap ``fn`` so that its ``nan_call``-th result (or that result's ``[index]``) is multiplied by NaN."""
    calls = []

    def wrapped(*args: Any, **kwargs: Any):
        out = fn(*args, **kwargs)
        calls.append(1)
        if len(calls) - 1 != nan_call:
            return out
        if index is None:
            return out * float("nan")
        out = dict(out) if isinstance(out, dict) else list(out)
        out[index] = out[index] * float("nan")
        return out if isinstance(out, dict) else tuple(out)

    return wrapped


# ------------------------------------------------------------------------------------------ construction
ALL_HOSTS = [SupervisedSegmenter, SemiSupervisedSegmenter, PseudoLabelSegmenter, QARSegmenter,
             MeanTeacherSegmenter, FixMatchSegmenter, CPSSegmenter]  # fmt: skip


@pytest.mark.parametrize("cls", ALL_HOSTS, ids=lambda c: c.__name__)
def test_every_host_accepts_validates_and_forwards_the_policy(cls: type) -> None:
    # Explicit in every constructor signature: LightningCLI exposes it as model.init_args.nonfinite.
    param = inspect.signature(cls.__init__).parameters["nonfinite"]
    assert param.default == "raise"
    with pytest.raises(ValueError, match="`nonfinite` must be one of \\['raise', 'skip'\\], got 'ignore'"):
        cls(**SMALL, nonfinite="ignore")
    assert cls(**SMALL, nonfinite="skip").hparams.nonfinite == "skip"


def test_skip_policy_is_refused_under_ddp() -> None:
    model = SupervisedSegmenter(**SMALL, nonfinite="skip")
    model._trainer = SimpleNamespace(world_size=2)
    with pytest.raises(ValueError, match="single process.*2"):
        model.on_fit_start()
    model = SupervisedSegmenter(**SMALL)  # "raise" is fine under DDP
    model._trainer = SimpleNamespace(world_size=2)
    model.on_fit_start()


def test_error_pickles_with_its_fields() -> None:
    err = NonFiniteError("loss 'unsup'", num_nan=1, hint="lower lr.")
    err.add_context(batch_idx=4, global_step=9, host="X", policy="raise")
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == str(err) and back.batch_idx == 4 and back.what == "loss 'unsup'"


# ----------------------------------------------------------------------------------------------- images
def test_nan_image_raise_names_batch_step_tensor_counts_and_ids(tmp_path) -> None:
    torch.manual_seed(0)
    model = SupervisedSegmenter(**SMALL)
    with pytest.raises(NonFiniteError) as info:
        _fit(model, _Batches(ssl=False, bad="labeled"), tmp_path)
    msg = str(info.value)
    assert isinstance(info.value, FloatingPointError)
    assert "training batch 1 (global step 1) of SupervisedSegmenter" in msg
    assert "labeled image has 2 non-finite of 6144 values (1 NaN, 1 Inf) in batch sample(s) 1" in msg
    assert "'lab_3'" in msg and "augmentation pipeline" in msg
    assert "nonfinite='skip'" in msg and "model.init_args.nonfinite: skip" in msg


def test_nan_image_skip_leaves_params_and_batchnorm_untouched_then_trains_on(tmp_path) -> None:
    torch.manual_seed(0)
    model = SupervisedSegmenter(**SMALL, nonfinite="skip")
    with pytest.warns(RuntimeWarning, match="Skipped this training step.*1 step\\(s\\) skipped"):
        trainer, tracker = _fit(model, _Batches(ssl=False, bad="labeled"), tmp_path)
    assert tracker.moved("params") == [True, False, True]
    assert tracker.moved("buffers") == [True, False, True]  # checked before the forward pass
    assert model.nonfinite_skipped == 1 and trainer.global_step == 3
    assert trainer.callback_metrics["train/nonfinite_skipped"].item() == 1.0
    assert torch.isfinite(_snapshot(model)["params"]).all()


def test_direct_call_without_trainer_names_the_batch() -> None:
    model = SupervisedSegmenter(**SMALL)
    batch = DataLoader(_Batches(ssl=False, bad="labeled"), batch_size=2).__iter__()
    next(batch)
    with pytest.raises(NonFiniteError, match="training batch 5 of SupervisedSegmenter: labeled image"):
        model.training_step(next(batch), 5)


def test_unlabeled_views_are_checked_and_named(tmp_path) -> None:
    torch.manual_seed(0)
    with pytest.raises(NonFiniteError, match="global step 1\\).*unlabeled image has 2 non-finite.*'unl_3'"):
        _fit(PseudoLabelSegmenter(**SMALL, **NOW), _Batches(ssl=True, bad="unlabeled"), tmp_path)
    with pytest.raises(NonFiniteError, match="unlabeled strong-view image has 2 non-finite"):
        _fit(MeanTeacherSegmenter(**SMALL, **NOW), _Batches(ssl=True, bad="unlabeled_strong"), tmp_path)


SSL_HOSTS = [
    (PseudoLabelSegmenter, {}),
    (MeanTeacherSegmenter, {}),
    (FixMatchSegmenter, dict(conf_threshold=0.0)),
    (CPSSegmenter, {}),
]


@pytest.mark.parametrize("cls,kwargs", SSL_HOSTS, ids=lambda x: getattr(x, "__name__", ""))
def test_ssl_skip_on_nan_unlabeled_image_moves_neither_student_nor_teacher(cls, kwargs, tmp_path) -> None:
    torch.manual_seed(0)
    model = cls(**SMALL, **NOW, **kwargs, nonfinite="skip")
    with pytest.warns(RuntimeWarning, match="unlabeled image"):
        trainer, tracker = _fit(model, _Batches(ssl=True, bad="unlabeled"), tmp_path)
    assert tracker.moved("params") == [True, False, True]
    assert tracker.moved("buffers") == [True, False, True]
    if hasattr(model, "teacher"):
        assert tracker.moved("teacher") == [True, False, True]
        assert int(model.teacher.num_updates) == 2
    assert model.nonfinite_skipped == 1
    assert trainer.callback_metrics["train/nonfinite_skipped"].item() == 1.0


# ------------------------------------------------------------------------------------------------ losses
def test_nan_supervised_loss_raise_and_skip(tmp_path, monkeypatch) -> None:
    torch.manual_seed(0)
    model = SupervisedSegmenter(**SMALL)
    monkeypatch.setattr(model, "supervised_loss", _nan_from_call(model.supervised_loss, BAD_BATCH, index=0))
    with pytest.raises(
        NonFiniteError, match="batch 1 .*loss 'sup' is NaN\\. The input images were finite.*lr"
    ):
        _fit(model, _Batches(ssl=False), tmp_path)

    model = SupervisedSegmenter(**SMALL, nonfinite="skip")
    monkeypatch.setattr(model, "supervised_loss", _nan_from_call(model.supervised_loss, BAD_BATCH, index=0))
    with pytest.warns(RuntimeWarning, match="loss 'sup' is NaN"):
        _, tracker = _fit(model, _Batches(ssl=False), tmp_path)
    assert tracker.moved("params") == [True, False, True]
    assert model.nonfinite_skipped == 1


def test_nan_unsupervised_loss_names_the_term_and_never_reaches_the_teacher(tmp_path, monkeypatch) -> None:
    torch.manual_seed(0)
    cls = MeanTeacherSegmenter
    model = cls(**SMALL, **NOW)
    monkeypatch.setattr(
        model, "unsupervised_terms", _nan_from_call(model.unsupervised_terms, BAD_BATCH, index="losses")
    )
    with pytest.raises(
        NonFiniteError, match=f"batch 1 \\(global step 1\\) of {cls.__name__}: loss 'unsup' is"
    ):
        _fit(model, _Batches(ssl=True), tmp_path)
    assert int(model.teacher.num_updates) == 1  # batch 0 only

    model = cls(**SMALL, **NOW, nonfinite="skip")
    monkeypatch.setattr(
        model, "unsupervised_terms", _nan_from_call(model.unsupervised_terms, BAD_BATCH, index="losses")
    )
    with pytest.warns(RuntimeWarning, match="loss 'unsup'"):
        _, tracker = _fit(model, _Batches(ssl=True), tmp_path)
    assert tracker.moved("params") == [True, False, True]
    assert tracker.moved("teacher") == [True, False, True]
    assert int(model.teacher.num_updates) == 2


def test_skip_refused_once_batchnorm_statistics_are_poisoned(tmp_path, monkeypatch) -> None:
    torch.manual_seed(0)
    model = SupervisedSegmenter(**SMALL, nonfinite="skip")
    bn = next(m for m in model.model.modules() if isinstance(m, nn.BatchNorm2d))
    original = model.supervised_loss

    def poisoned(labeled, logits=None):
        loss, logits = original(labeled, logits)
        bn.running_mean.fill_(float("nan"))  # what an overflowing forward pass does
        return loss * float("nan"), logits

    monkeypatch.setattr(model, "supervised_loss", poisoned)
    with pytest.raises(
        NonFiniteError, match="student buffer '.*running_mean'.*cannot be skipped.*loss 'sup'"
    ):
        _fit(model, _Batches(ssl=False), tmp_path, steps=1)


# ------------------------------------------------------------------------------------- predicted quality
def _guided_pl(nan_calls: set[int], policy: str) -> PseudoLabelSegmenter:
    model = PseudoLabelSegmenter(**SMALL, **NOW, nonfinite=policy)
    model.attach_quality_predictor(
        _StubPredictor(nan_calls).eval(), GuidanceSettings(mechanisms=frozenset({"qw"}))
    )
    return model


def test_nan_predicted_quality_raise(tmp_path) -> None:
    torch.manual_seed(0)
    # Without the check a NaN quality silently becomes weight 0 (torch.where(q >= tau, ...)).
    with pytest.raises(NonFiniteError) as info:
        _fit(_guided_pl({BAD_BATCH}, "raise"), _Batches(ssl=True), tmp_path)
    msg = str(info.value)
    assert "training batch 1 (global step 1) of PseudoLabelSegmenter" in msg
    assert "predicted quality (quality_weights()) has 2 non-finite of 2 values (2 NaN, 0 Inf)" in msg
    assert "returned NaN/Inf for finite inputs" in msg and "nonfinite='skip'" in msg


def test_nan_predicted_quality_skip_keeps_student_and_teacher(tmp_path) -> None:
    torch.manual_seed(0)
    model = _guided_pl({BAD_BATCH}, "skip")
    with pytest.warns(RuntimeWarning, match="predicted quality"):
        _, tracker = _fit(model, _Batches(ssl=True), tmp_path)
    assert tracker.moved("params") == [True, False, True]
    assert tracker.moved("teacher") == [True, False, True]
    assert model.nonfinite_skipped == 1


def test_nan_predicted_quality_in_qar_raises(tmp_path) -> None:
    torch.manual_seed(0)
    model = QARSegmenter(**SMALL, **NOW)
    model.attach_quality_predictor(
        _StubPredictor({0}).eval(), GuidanceSettings(mechanisms=frozenset({"qar"}))
    )
    model.set_quality_lambdas(0.0, 1.0)  # what QualityReweightCallback does before each batch
    with pytest.raises(NonFiniteError, match="batch 0 .*predicted quality \\(quality_regularization\\(\\)"):
        _fit(model, _Batches(ssl=True), tmp_path, steps=1)


class _MixinHost(QualityGuidedMixin, L.LightningModule):
    pass


def test_mixin_raises_on_its_own_and_says_which_input_was_bad() -> None:
    host = _MixinHost()
    host.attach_quality_predictor(_StubPredictor({0, 1}).eval())
    labels = torch.ones(2, 8, 8, dtype=torch.long)
    with pytest.raises(NonFiniteError, match="predicted quality.*finite inputs.*precision"):
        host.quality_weights(torch.rand(2, 3, 8, 8), labels)
    images = torch.rand(2, 3, 8, 8)
    images[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="input \\(images\\) is itself non-finite"):
        host.quality_weights(images, labels)
    assert host._qg_stats().n == 0  # nothing recorded from the bad calls


# ---------------------------------------------------------------------------------------------- teacher
def test_ema_teacher_refuses_a_student_with_nonfinite_batchnorm_statistics() -> None:
    student = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    teacher = EMATeacher(student, decay=0.9, initial_decay=0.9, warmup_steps=0)
    student[1].running_var[0] = float("inf")
    with pytest.raises(FloatingPointError, match="student buffer '1.running_var'"):
        teacher.update(student)
    assert torch.isfinite(teacher.module[1].running_var).all() and int(teacher.num_updates) == 0

"""Guidance on a module that looks nothing like ours: it must fail loudly or work, never do nothing silently.

``ForeignFixMatch`` is written the way many Lightning users write theirs: its ``Dataset`` normalises images with
ImageNet statistics, batches are tuples, the network has one sigmoid output channel, and its hyper-parameters
name neither ``in_channels`` nor ``num_classes``. Each test below fails without the guard it names (issue 25).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from qg_lightning.guidance import QualityGuidedMixin, QualityReweightCallback
from qg_lightning.guidance.mixin import GuidanceSettings
from qg_lightning.quality.predictor import QualityPredictor

SIZE = 32
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


# --------------------------------------------------------------------------------------------------
# the foreign module and its data
# ----------------------------------------------------------------------------------------------------
class NormalisedPairs(Dataset):
    """``(normalised image, mask (1, H, W) float)`` tuples; images normalised here, as many pipelines do."""

    def __init__(self, n: int = 8, seed: int = 0, size: int = SIZE, normalise: bool = True) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, 3, size, size, generator=g)
        self.masks = (torch.rand(n, 1, size, size, generator=g) > 0.5).float()
        self.normalise = normalise

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        image = (self.images[i] - MEAN) / STD if self.normalise else self.images[i]
        return image, self.masks[i]


class FixMatchBatches(NormalisedPairs):
    """``(labeled image, mask, unlabeled image)`` tuples."""

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        image, mask = super().__getitem__(i)
        other, _ = super().__getitem__((i + 1) % len(self))
        return image, mask, other


class ForeignFixMatch(QualityGuidedMixin, L.LightningModule):
    """One sigmoid channel, tuple batches, no in_channels / num_classes hyper-parameters."""

    def __init__(self, lr: float = 0.05, soft_pseudolabels: bool = False, use_qar: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Conv2d(3, 1, 3, padding=1)
        self.qar_lambdas: list[float] = []

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        x_l, y_l, x_u = batch
        loss = nn.functional.binary_cross_entropy_with_logits(self(x_l), y_l)
        logits_u = self(x_u)
        probs_u = torch.sigmoid(logits_u)
        pseudo = probs_u.detach() if self.hparams.soft_pseudolabels else (probs_u.detach() > 0.5).float()
        weights, _ = self.quality_weights(x_u, pseudo)  # its own unsupervised weight: qw_lambda is never read
        per_image = nn.functional.binary_cross_entropy_with_logits(
            logits_u, (probs_u.detach() > 0.5).float(), reduction="none"
        ).mean(dim=(1, 2, 3))
        loss = loss + (weights * per_image).sum() / (weights.sum() + 1e-8)
        if self.hparams.use_qar:
            self.qar_lambdas.append(self.qar_lambda)
            if self.qar_lambda > 0:
                loss = loss + self.qar_lambda * self.quality_regularization(x_u, probs_u)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        images, masks = batch
        logits = self(images)
        self.log("val/loss", nn.functional.binary_cross_entropy_with_logits(logits, masks))
        return {"logits": logits}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class UnNormalising(ForeignFixMatch):
    """The fix the errors name: hand the predictor images in [0, 1]."""

    def quality_images(self, images: Tensor) -> Tensor:
        return images * STD.to(images) + MEAN.to(images)


class WithAlignment(UnNormalising):
    """Feeds the alignment check from tuple batches and one sigmoid channel."""

    def quality_alignment_batch(self, batch: Any, outputs: Any) -> tuple[Tensor, Tensor, Tensor]:
        images, masks = batch
        return images, masks[:, 0].long(), (outputs["logits"][:, 0] > 0).long()


# --------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------
def _save_predictor(path: Path, *, in_channels: int = 3, image_size: int | None = None) -> str:
    torch.manual_seed(0)
    model = QualityPredictor(backbone="resnet18", in_channels=in_channels, num_classes=2)
    ckpt: dict[str, Any] = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    if image_size is not None:
        ckpt["datamodule_hyper_parameters"] = {"image_size": image_size}
    torch.save(ckpt, path)
    return str(path)


@pytest.fixture(scope="module")
def predictor_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _save_predictor(tmp_path_factory.mktemp("foreign") / "g.ckpt")


def _callback(path: str, **kwargs: Any) -> QualityReweightCallback:
    args: dict[str, Any] = {"schedule_unit": "step", "qw_warmup": 0, "qw_ramp": 0, "check_alignment": False}
    args.update(kwargs)
    return QualityReweightCallback(path, **args)


def _fit(
    module: L.LightningModule,
    callback: QualityReweightCallback,
    tmp_path: Path,
    *,
    val: bool = False,
    **kw: Any,
) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=kw.pop("max_steps", 2),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=2 if val else 0,
        val_check_interval=kw.pop("val_check_interval", None),
        log_every_n_steps=1,
        default_root_dir=tmp_path,
        callbacks=[callback],
        **kw,
    )
    train = DataLoader(FixMatchBatches(), batch_size=4)
    trainer.fit(module, train, DataLoader(NormalisedPairs(seed=1), batch_size=4) if val else None)
    return trainer


# --------------------------------------------------------------------------------------------------
# 1. input range
# ----------------------------------------------------------------------------------------------------
def test_normalised_images_raise_with_the_fix(predictor_path: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"values from -2\.\d+ to 2\.\d+") as info:
        _fit(ForeignFixMatch(), _callback(predictor_path), tmp_path)
    message = str(info.value)
    assert "[0, 1]" in message and "look normalised" in message
    assert "quality_images" in message and "ForeignFixMatch" in message and "input_range='warn'" in message


def test_quality_images_hook_un_normalises(predictor_path: str, tmp_path: Path) -> None:
    module = UnNormalising()
    trainer = _fit(module, _callback(predictor_path), tmp_path)
    assert trainer.global_step == 2
    # the predictor saw the [0, 1] images: its quality equals a direct call on the un-normalised batch
    x = FixMatchBatches()[1][0].unsqueeze(0)
    pseudo = (torch.sigmoid(module(x)) > 0.5).float()
    _, quality = module.quality_weights(x, pseudo)
    predictor = module.quality_predictor
    assert predictor is not None
    expected = predictor(module.quality_images(x), pseudo)
    torch.testing.assert_close(quality, expected)


def test_range_switch_warns_once_instead(predictor_path: str, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="values from -2") as record:
        trainer = _fit(
            ForeignFixMatch(), _callback(predictor_path, input_range="warn"), tmp_path, max_steps=3
        )
    assert trainer.global_step == 3
    assert sum("values from" in str(w.message) for w in record) == 1
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*values from")  # "off": not a word
        _fit(ForeignFixMatch(), _callback(predictor_path, input_range="off"), tmp_path)


def test_slightly_outside_warns_once_and_0_255_raises(predictor_path: str) -> None:
    host = ForeignFixMatch()
    predictor = QualityPredictor(in_channels=3, num_classes=2).eval().requires_grad_(False)
    host.attach_quality_predictor(predictor, GuidanceSettings())
    masks = torch.ones(2, 1, SIZE, SIZE)
    noisy = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 1.1 - 0.05
    with pytest.warns(UserWarning, match="slightly outside"):
        host.quality_weights(noisy, masks)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*slightly outside")
        host.quality_weights(noisy, masks)  # said once
    with pytest.raises(ValueError, match="0..255 pixel values: divide by 255"):
        host.quality_weights(noisy.clamp(0, 1) * 255, masks)


def test_qar_probabilities_must_be_probabilities(predictor_path: str) -> None:
    host = UnNormalising()
    predictor = QualityPredictor(in_channels=3, num_classes=2).eval().requires_grad_(False)
    host.attach_quality_predictor(predictor, GuidanceSettings(mechanisms=frozenset({"qar"})))
    images = (torch.rand(2, 3, SIZE, SIZE) - MEAN) / STD
    with pytest.raises(ValueError, match="not logits"):
        host.quality_regularization(images, host(images))  # logits instead of sigmoid(logits)
    assert host.quality_regularization(images, torch.sigmoid(host(images))).ndim == 0


# --------------------------------------------------------------------------------------------------
# 2. hard masks, classes and channels without hyper-parameters
# ----------------------------------------------------------------------------------------------------
def test_soft_pseudolabels_raise(predictor_path: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs hard pseudolabels") as info:
        _fit(UnNormalising(soft_pseudolabels=True), _callback(predictor_path), tmp_path)
    assert "labels_from_logits" in str(info.value) and "quality_regularization" in str(info.value)


def test_unknown_class_index_raises_without_hparams(
    predictor_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    said: list[str] = []
    monkeypatch.setattr("qg_lightning.guidance.callback.rank_zero_info", said.append)

    class ThreeClassLabels(UnNormalising):
        def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
            x_u = batch[2]
            labels = torch.randint(
                0, 3, (x_u.shape[0], SIZE, SIZE), generator=torch.Generator().manual_seed(0)
            )
            weights, _ = self.quality_weights(x_u, labels)  # a 3-class label map, binary predictor
            return self(x_u).mean() * weights.mean()

    with pytest.raises(ValueError, match="class index 2.*num_classes=2"):
        _fit(ThreeClassLabels(), _callback(predictor_path), tmp_path)
    assert any("do not name in_channels or num_classes" in line for line in said), said


def test_wrong_channel_count_names_the_module(tmp_path: Path) -> None:
    gray = _save_predictor(tmp_path / "gray.ckpt", in_channels=1)
    with pytest.raises(ValueError, match="UnNormalising passed images with 3 channel.*reads 1-channel"):
        _fit(UnNormalising(), _callback(gray), tmp_path)


# --------------------------------------------------------------------------------------------------
# 3. size policy
# ----------------------------------------------------------------------------------------------------
def test_size_mismatch_resizes_to_the_training_size_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _save_predictor(tmp_path / "g16.ckpt", image_size=16)
    said: list[str] = []
    monkeypatch.setattr("qg_lightning.guidance.mixin.rank_zero_info", said.append)
    seen: list[tuple[int, ...]] = []
    module = UnNormalising()
    callback = _callback(path)
    callback.setup(L.Trainer(accelerator="cpu", logger=False), module, "fit")
    predictor = callback.loaded_predictor
    assert predictor is not None
    predictor.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape)))
    module.set_quality_lambdas(1.0, 0.0)
    x = (torch.rand(2, 3, SIZE, SIZE) - MEAN) / STD
    pseudo = (torch.rand(2, 1, SIZE, SIZE) > 0.5).float()
    module.quality_weights(x, pseudo)
    module.quality_weights(x, pseudo)
    assert seen == [(2, 3, 16, 16), (2, 3, 16, 16)]
    assert len([line for line in said if "trained on 16x16" in line and "resizes" in line]) == 1

    refusing = _callback(path, size_mismatch="error")
    refusing.setup(L.Trainer(accelerator="cpu", logger=False), module, "fit")
    with pytest.raises(ValueError, match="trained on 16x16 px images, but guidance gets 32x32"):
        module.quality_weights(x, pseudo)

    keeping = _callback(path, size_mismatch="keep")
    keeping.setup(L.Trainer(accelerator="cpu", logger=False), module, "fit")
    kept = keeping.loaded_predictor
    assert kept is not None
    kept.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape)))
    module.quality_weights(x, pseudo)
    assert seen[-1] == (2, 3, SIZE, SIZE)


# --------------------------------------------------------------------------------------------------
# 4. schedules and logged lambdas
# ----------------------------------------------------------------------------------------------------
def test_epoch_schedule_that_never_starts_is_named(
    predictor_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    said: list[str] = []
    monkeypatch.setattr("qg_lightning.guidance.callback.rank_zero_info", said.append)
    callback = QualityReweightCallback(predictor_path, mechanisms=["qw", "qar"], check_alignment=False)
    with pytest.warns(UserWarning, match="'qar' never becomes active in this run") as record:
        _fit(UnNormalising(use_qar=True), callback, tmp_path, max_steps=4)
    text = "\n".join(str(w.message) for w in record)
    assert "qar_lambda is 0 until epoch 31 (step 62)" in text and "this run ends at step 4" in text
    assert "qar_warmup" in text and "schedule_unit: step" in text
    statement = next(line for line in said if "schedules" in line)
    assert "this run: 4 optimizer steps, 2 per epoch" in statement and "qw:" in statement


def test_step_change_schedule_works_and_zero_weight_is_refused(predictor_path: str, tmp_path: Path) -> None:
    module = UnNormalising(use_qar=True)
    callback = _callback(predictor_path, mechanisms=["qw", "qar"], qar_warmup=2, qar_ramp=0, qar_weight=0.01)
    _fit(module, callback, tmp_path, max_steps=4)
    assert module.qar_lambdas == [0.0, 0.0, 0.01, 0.01]  # ramp 0: a step change at qar_warmup
    with pytest.raises(ValueError, match="`qar_weight` is 0 while 'qar' is in `mechanisms`"):
        _callback(predictor_path, mechanisms=["qw", "qar"], qar_weight=0.0)


def test_logged_lambda_is_not_a_misleading_zero(
    predictor_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    said: list[str] = []
    monkeypatch.setattr("qg_lightning.guidance.callback.rank_zero_info", said.append)
    # the schedule would say lambda_qw = 0 for the whole run, while the module applies the weights
    callback = _callback(predictor_path, qw_warmup=100, qw_ramp=10)
    with pytest.warns(UserWarning, match="'qw' never becomes active"):
        trainer = _fit(UnNormalising(), callback, tmp_path)
    logged = trainer.logged_metrics
    assert "train/lambda_qw" not in logged, sorted(logged)
    assert float(logged["train/qw_applied"]) == 1.0 and "train/w_mean" in logged
    assert any("without reading `qw_lambda`" in line for line in said)


# --------------------------------------------------------------------------------------------------
# 5. the alignment check from any batch format
# ----------------------------------------------------------------------------------------------------
def test_alignment_check_through_the_hook(predictor_path: str, tmp_path: Path) -> None:
    callback = _callback(predictor_path, check_alignment=True)
    trainer = _fit(WithAlignment(), callback, tmp_path, val=True, max_steps=2, val_check_interval=2)
    metrics = trainer.callback_metrics
    for key in ("val/quality_alignment", "val/quality_pred_mean", "val/quality_true_mean"):
        assert key in metrics, sorted(metrics)
    assert 0.0 <= float(metrics["val/quality_true_mean"]) <= 1.0


def test_alignment_check_guards_the_range_and_says_how_to_hook_in(
    predictor_path: str, tmp_path: Path
) -> None:
    class NormalisedAlignment(WithAlignment):
        def quality_images(self, images: Tensor) -> Tensor:
            return images  # forgot to un-normalise the validation images

        def training_step(self, batch: Any, batch_idx: int) -> Tensor:
            return self(batch[0]).mean()

    with pytest.raises(ValueError, match="the alignment check handed the quality predictor images"):
        _fit(NormalisedAlignment(), _callback(predictor_path, check_alignment=True), tmp_path, val=True)
    with pytest.warns(UserWarning, match=r"Override `quality_alignment_batch\(self, batch, outputs\)`"):
        trainer = _fit(UnNormalising(), _callback(predictor_path, check_alignment=True), tmp_path, val=True)
    assert "val/quality_alignment" not in trainer.callback_metrics

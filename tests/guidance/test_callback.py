from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, Dataset

from qg_lightning.guidance import QualityGuidedMixin, QualityReweightCallback, weighted_mean
from qg_lightning.losses import segmentation_loss_per_image
from qg_lightning.masks import labels_from_logits, logit_channels, probs_from_logits
from qg_lightning.quality.predictor import QualityPredictor

SIZE = 32


# --------------------------------------------------------------------------------------------------
# fixtures: a predictor checkpoint, random data, a minimal guided host
# ----------------------------------------------------------------------------------------------------
def _save_predictor(path: Path, num_classes: int = 2, in_channels: int = 3) -> Path:
    torch.manual_seed(0)
    model = QualityPredictor(backbone="resnet18", in_channels=in_channels, num_classes=num_classes)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return path


@pytest.fixture(scope="module")
def predictor_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(_save_predictor(tmp_path_factory.mktemp("predictor") / "g.ckpt"))


class RandomSemiSupervised(Dataset):
    def __init__(self, n: int = 4, num_classes: int = 2, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, 3, SIZE, SIZE, generator=g)
        self.masks = torch.randint(0, num_classes, (n, SIZE, SIZE), generator=g)
        self.unlabeled = torch.rand(n, 3, SIZE, SIZE, generator=g)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            "labeled": {"image": self.images[i], "mask": self.masks[i]},
            "unlabeled": {"image": self.unlabeled[i]},
        }


class RandomLabeled(RandomSemiSupervised):
    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.images[i], "mask": self.masks[i]}


class TinyHost(QualityGuidedMixin, L.LightningModule):
    """PL-QW + QAR host built from the plug-in's parts; the student is its own teacher to stay tiny."""

    def __init__(self, num_classes: int = 2, in_channels: int = 3, return_preds: bool = True) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Conv2d(in_channels, logit_channels(num_classes), 3, padding=1)
        self.recorded: list[tuple[int, int, float, float]] = []
        self.qar_grad_norms: list[float] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        k = self.hparams.num_classes
        lab, images = batch["labeled"], batch["unlabeled"]["image"]
        loss = segmentation_loss_per_image(self(lab["image"]), lab["mask"], k).mean()
        self.recorded.append((self.current_epoch, self.global_step, self.qw_lambda, self.qar_lambda))
        if self.qw_lambda > 0:
            with torch.no_grad():
                pseudo = labels_from_logits(self(images), k)
            weights, _ = self.quality_weights(images, pseudo)
            per_image = segmentation_loss_per_image(self(images), pseudo, k)
            loss = loss + self.qw_lambda * weighted_mean(per_image, weights)
        if self.qar_lambda > 0:
            qar = self.quality_regularization(images, probs_from_logits(self(images), k))
            (grad,) = torch.autograd.grad(qar, self.net.weight, retain_graph=True)
            self.qar_grad_norms.append(float(grad.float().norm()))
            loss = loss + self.qar_lambda * qar
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor] | None:
        preds = labels_from_logits(self(batch["image"]), self.hparams.num_classes)
        return {"preds": preds} if self.hparams.return_preds else None

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(tmp_path: Path, callbacks: list, **kwargs: Any) -> L.Trainer:
    defaults: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "max_steps": 3,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "limit_val_batches": 0,
        "default_root_dir": tmp_path,
    }
    defaults.update(kwargs)
    return L.Trainer(callbacks=callbacks, **defaults)


def _loader(n: int = 4, batch_size: int = 2, labeled_only: bool = False) -> DataLoader:
    dataset = RandomLabeled(n) if labeled_only else RandomSemiSupervised(n)
    return DataLoader(dataset, batch_size=batch_size)


def _both(predictor_path: str, **kwargs: Any) -> QualityReweightCallback:
    args: dict[str, Any] = {
        "mechanisms": ["qw", "qar"],
        "tau": 0.0,
        "schedule_unit": "step",
        "qw_warmup": 0.0,
        "qw_ramp": 2.0,
        "qar_warmup": 0.0,
        "qar_ramp": 2.0,
        "check_alignment": False,
    }
    args.update(kwargs)
    return QualityReweightCallback(predictor_path, **args)


# --------------------------------------------------------------------------------------------------
# construction
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"tau": 1.5}, ValueError, "`tau`"),
        ({"tau": -0.5}, ValueError, "`tau`"),
        ({"temperature": 0.0}, ValueError, "`temperature`"),
        ({"temperature": -2.0}, ValueError, "`temperature`"),
        ({"class_reduction": "max"}, ValueError, "`class_reduction`"),
        ({"qw_weight": -0.1}, ValueError, "`qw_weight`"),
        ({"qar_weight": -0.1}, ValueError, "`qar_weight`"),
        ({"qw_warmup": -1.0}, ValueError, "`qw_warmup`"),
        ({"qar_warmup": -1.0}, ValueError, "`qar_warmup`"),
        ({"qw_ramp": -1.0}, ValueError, "`qw_ramp`"),
        ({"qar_ramp": float("nan")}, ValueError, "`qar_ramp`"),
        ({"mechanisms": []}, ValueError, "non-empty"),
        ({"mechanisms": ["qw", "pl"]}, ValueError, "unknown \\['pl'\\]"),
        ({"schedule_unit": "batch"}, ValueError, "`schedule_unit`"),
        ({"log_images_every_n_steps": -1}, ValueError, "`log_images_every_n_steps`"),
        ({"n_log_images": 0}, ValueError, "`n_log_images`"),
        ({"check_alignment": "yes"}, ValueError, "`check_alignment`"),
    ],
)
def test_constructor_validation(predictor_path: str, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        QualityReweightCallback(predictor_path, **kwargs)


def test_missing_predictor_file_names_path_and_key(tmp_path: Path) -> None:
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(FileNotFoundError, match="QualityReweightCallback.predictor") as info:
        QualityReweightCallback(str(missing))
    assert str(missing) in str(info.value)


def test_defaults_and_state_key(predictor_path: str) -> None:
    cb = QualityReweightCallback(predictor_path)
    assert cb.mechanisms == ("qw",) and cb.tau == 0.5 and cb.temperature == 2.0
    assert (cb.qw_schedule.max_value, cb.qw_schedule.warmup, cb.qw_schedule.ramp) == (0.25, 15.0, 30.0)
    assert (cb.qar_schedule.max_value, cb.qar_schedule.warmup, cb.qar_schedule.ramp) == (0.01, 30.0, 40.0)
    assert cb.lambdas_at(30) == (0.125, 0.0)
    assert cb.state_key != QualityReweightCallback(predictor_path, mechanisms=["qar"]).state_key


# --------------------------------------------------------------------------------------------------
# guided fit
# ----------------------------------------------------------------------------------------------------
def test_guided_fit_both_mechanisms(predictor_path: str, tmp_path: Path) -> None:
    reference = torch.load(predictor_path, weights_only=True)["state_dict"]
    cb = _both(predictor_path)
    host = TinyHost()
    trainer = _trainer(tmp_path, [cb], max_steps=3)
    trainer.fit(host, _loader(n=6))

    # schedule over steps 0, 1, 2 with ramp 2: 0, half, full
    assert [r[2] for r in host.recorded] == [0.0, 0.125, 0.25]
    assert [r[3] for r in host.recorded] == [0.0, 0.005, 0.01]
    # QAR gradient reached the segmenter on both guided steps
    assert len(host.qar_grad_norms) == 2 and all(g > 0 for g in host.qar_grad_norms)
    # frozen: bit-identical weights and buffers, no grads, eval, in no optimizer, not a host parameter
    predictor = cb.loaded_predictor
    assert predictor is not None and not predictor.training
    for key, value in predictor.state_dict().items():
        assert torch.equal(value, reference[key]), key
    assert all(p.grad is None and not p.requires_grad for p in predictor.parameters())
    ids = {id(p) for p in predictor.parameters()}
    assert not ids & {id(p) for opt in trainer.optimizers for g in opt.param_groups for p in g["params"]}
    assert not ids & {id(p) for p in host.parameters()}
    assert not any(k.startswith("backbone.") for k in host.state_dict())
    # logged
    metrics = trainer.logged_metrics
    for key in (
        "train/lambda_qw",
        "train/lambda_qar",
        "train/q_mean",
        "train/w_mean",
        "train/frac_q_above_tau",
    ):
        assert key in metrics, sorted(metrics)
    assert "train/loss_qar" in metrics
    assert metrics["train/lambda_qw"].item() == pytest.approx(0.25)
    assert metrics["train/frac_q_above_tau"].item() == 1.0  # tau = 0


def test_guided_fit_with_an_ensemble_of_predictors(predictor_path: str, tmp_path: Path) -> None:
    from qg_lightning.quality.predictor import QualityEnsemble

    torch.manual_seed(5)
    other = QualityPredictor(backbone="resnet18")
    second = tmp_path / "g2.ckpt"
    torch.save({"state_dict": other.state_dict(), "hyper_parameters": dict(other.hparams)}, second)
    cb = _both([predictor_path, str(second)])
    assert cb.predictor == [predictor_path, str(second)] and cb.predictor_paths == cb.predictor
    host = TinyHost()
    trainer = _trainer(tmp_path, [cb], max_steps=3)
    trainer.fit(host, _loader(n=6))
    ensemble = cb.loaded_predictor
    assert isinstance(ensemble, QualityEnsemble) and len(ensemble) == 2 and not ensemble.training
    assert all(p.grad is None and not p.requires_grad for p in ensemble.parameters())
    assert len(host.qar_grad_norms) == 2 and all(g > 0 for g in host.qar_grad_norms)
    ids = {id(p) for p in ensemble.parameters()}
    assert not ids & {id(p) for opt in trainer.optimizers for g in opt.param_groups for p in g["params"]}
    with pytest.raises(FileNotFoundError, match=r"nope.ckpt.*QualityReweightCallback.predictor"):
        QualityReweightCallback([predictor_path, str(tmp_path / "nope.ckpt")])
    with pytest.raises(TypeError, match="non-empty list of paths"):
        QualityReweightCallback([])
    gray = _save_predictor(tmp_path / "gray.ckpt", in_channels=1)
    with pytest.raises(ValueError, match="gray.ckpt.*in_channels=1.*QualityReweightCallback.predictor|"
                       "QualityReweightCallback.predictor.*gray.ckpt.*in_channels=1"):  # fmt: skip
        _trainer(tmp_path, [QualityReweightCallback([predictor_path, str(gray)])]).fit(TinyHost(), _loader())


def test_missing_callback_raises_helpful_error(tmp_path: Path) -> None:
    class AlwaysGuided(TinyHost):
        def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
            images = batch["unlabeled"]["image"]
            self.quality_weights(images, labels_from_logits(self(images), 2))
            return self(images).mean()

    with pytest.raises(RuntimeError, match="QualityReweightCallback"):
        _trainer(tmp_path, [], max_steps=1).fit(AlwaysGuided(), _loader())


def test_setup_requires_mixin(predictor_path: str, tmp_path: Path) -> None:
    class Plain(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Conv2d(3, 1, 1)

        def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
            return self.net(batch["labeled"]["image"]).mean()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    with pytest.raises(TypeError, match="QualityGuidedMixin"):
        _trainer(tmp_path, [QualityReweightCallback(predictor_path)]).fit(Plain(), _loader())


def test_wrong_class_count_fails_at_setup(predictor_path: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_classes=3") as info:
        _trainer(tmp_path, [QualityReweightCallback(predictor_path)]).fit(TinyHost(num_classes=3), _loader())
    assert "num_classes=2" in str(info.value) and "QualityReweightCallback.predictor" in str(info.value)


def test_predictor_in_optimizer_is_refused(predictor_path: str, tmp_path: Path) -> None:
    class Leaky(TinyHost):
        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(
                list(self.parameters()) + list(self.quality_predictor.parameters()), lr=0.1
            )

    with pytest.raises(RuntimeError, match="is in optimizer 0"):
        _trainer(tmp_path, [QualityReweightCallback(predictor_path)]).fit(Leaky(), _loader())


def test_bf16_mixed_on_cpu(predictor_path: str, tmp_path: Path) -> None:
    host = TinyHost()
    trainer = _trainer(
        tmp_path, [_both(predictor_path, qw_ramp=0.0, qar_ramp=0.0)], max_steps=2, precision="bf16-mixed"
    )
    trainer.fit(host, _loader())
    assert [r[2] for r in host.recorded] == [0.25, 0.25]
    assert all(g > 0 for g in host.qar_grad_norms)
    assert torch.isfinite(trainer.logged_metrics["train/q_mean"])


def test_bf16_true_moves_predictor_to_module_dtype(predictor_path: str, tmp_path: Path) -> None:
    cb = _both(predictor_path, qw_ramp=0.0, qar_ramp=0.0)
    host = TinyHost()
    _trainer(tmp_path, [cb], max_steps=1, precision="bf16-true").fit(host, _loader())
    assert cb.loaded_predictor is not None
    assert next(cb.loaded_predictor.parameters()).dtype == torch.bfloat16 == host.net.weight.dtype
    assert host.qar_grad_norms and host.qar_grad_norms[0] > 0


# --------------------------------------------------------------------------------------------------
# resume mid-ramp
# ----------------------------------------------------------------------------------------------------
def _epoch_callback(predictor_path: str) -> QualityReweightCallback:
    return QualityReweightCallback(
        predictor_path,
        mechanisms=["qw", "qar"],
        qw_warmup=1.0,
        qw_ramp=3.0,
        qar_warmup=0.0,
        qar_ramp=4.0,
        check_alignment=False,
    )


def test_resume_mid_ramp_matches_uninterrupted_run(predictor_path: str, tmp_path: Path) -> None:
    kwargs = {"max_steps": -1, "limit_train_batches": 2}
    torch.manual_seed(0)
    full = TinyHost()
    _trainer(tmp_path / "full", [_epoch_callback(predictor_path)], max_epochs=4, **kwargs).fit(
        full, _loader()
    )

    torch.manual_seed(0)
    first = TinyHost()
    trainer = _trainer(tmp_path / "a", [_epoch_callback(predictor_path)], max_epochs=2, **kwargs)
    trainer.fit(first, _loader())
    ckpt = tmp_path / "mid.ckpt"
    trainer.save_checkpoint(ckpt)
    saved = torch.load(ckpt, weights_only=True)["callbacks"]
    (state,) = [v for k, v in saved.items() if k.startswith("QualityReweightCallback")]
    assert state["epoch"] == 1 and state["lambda_qar"] == pytest.approx(0.0025)
    assert state["qw_schedule"] == {"max_value": 0.25, "warmup": 1.0, "ramp": 3.0}

    resumed = TinyHost()
    _trainer(tmp_path / "b", [_epoch_callback(predictor_path)], max_epochs=4, **kwargs).fit(
        resumed, _loader(), ckpt_path=ckpt
    )
    assert first.recorded + resumed.recorded == full.recorded
    assert [r[2] for r in full.recorded[::2]] == pytest.approx([0.0, 0.0, 0.25 / 3, 0.5 / 3])
    assert torch.equal(resumed.net.weight, full.net.weight)


def test_state_dict_round_trip_warns_on_changed_schedule(predictor_path: str) -> None:
    cb = _both(predictor_path)
    cb._qw_lambda, cb._last_step = 0.125, 7
    other = _both(predictor_path, qw_weight=0.5)
    with pytest.warns(UserWarning, match="qw_schedule"):
        other.load_state_dict(cb.state_dict())
    assert other.state_dict()["lambda_qw"] == 0.125 and other.state_dict()["global_step"] == 7
    QualityReweightCallback(predictor_path).load_state_dict({})  # old/empty state: defaults


# --------------------------------------------------------------------------------------------------
# image grid and validation alignment
# ----------------------------------------------------------------------------------------------------
def test_image_grid_goes_to_tensorboard_not_csv(predictor_path: str, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = TensorBoardLogger(tmp_path, name="tb")
    csv = CSVLogger(tmp_path, name="csv")
    cb = _both(predictor_path, mechanisms=["qw"], qw_ramp=0.0, log_images_every_n_steps=1, n_log_images=2)
    _trainer(tmp_path, [cb], max_steps=2, logger=[tb, csv], log_every_n_steps=1).fit(TinyHost(), _loader())
    tb.experiment.flush()
    events = EventAccumulator(tb.log_dir)
    events.Reload()
    assert "train/quality_pseudolabels" in events.Tags()["images"]
    assert len(events.Images("train/quality_pseudolabels")) == 2
    csv_files = {p.suffix for p in Path(csv.log_dir).rglob("*") if p.is_file()}
    assert csv_files <= {".csv", ".yaml"}


@pytest.mark.parametrize("return_preds", [True, False])
def test_validation_alignment_logged(predictor_path: str, tmp_path: Path, return_preds: bool) -> None:
    cb = QualityReweightCallback(predictor_path, mechanisms=["qw"])
    val_loader = _loader(n=6, batch_size=3, labeled_only=True)
    trainer = _trainer(tmp_path, [cb], max_steps=-1, max_epochs=1, limit_train_batches=1, limit_val_batches=2)
    if return_preds:  # during fit, predictions from validation_step's {"preds": ...}
        trainer.fit(TinyHost(return_preds=True), _loader(), val_loader)
    else:  # standalone validate, predictions from the callback's own forward pass
        trainer.validate(TinyHost(return_preds=False), val_loader, verbose=False)
    metrics = trainer.callback_metrics
    for key in ("val/quality_alignment", "val/quality_pred_mean", "val/quality_true_mean"):
        assert key in metrics, sorted(metrics)
    assert 0.0 <= metrics["val/quality_true_mean"].item() <= 1.0
    assert 0.0 <= metrics["val/quality_pred_mean"].item() <= 1.0
    r = metrics["val/quality_alignment"].item()
    assert r != r or -1.0 <= r <= 1.0  # NaN allowed if the tiny model predicts constant quality

"""Tests for qg_lightning.quality.predictor and qg_lightning.quality.backbones."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import lightning as L
import pytest
import timm
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch.utils.data import DataLoader, Dataset

from qg_lightning.checkpoint import UnsafeCheckpointError, load_checkpoint
from qg_lightning.quality.backbones import BACKBONES, build_backbone, resolve_backbone_name
from qg_lightning.quality.predictor import (
    QualityPredictor,
    _correlation_values,
    load_quality_predictor,
    predictor_from_checkpoint,
)

SIZE = 32


def _inputs(batch: int, in_channels: int, num_fg: int, seed: int = 0, size: int = SIZE):
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, in_channels, size, size, generator=gen)
    masks = (torch.rand(batch, num_fg, size, size, generator=gen) > 0.5).float()
    return images, masks


class _RandomQualityDataset(Dataset):
    """Tiny dataset of dict batches (image, candidate, quality)."""

    def __init__(
        self, n: int, in_channels: int = 3, num_fg: int = 1, seed: int = 0, constant: float | None = None
    ):
        gen = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, in_channels, SIZE, SIZE, generator=gen)
        self.masks = (torch.rand(n, num_fg, SIZE, SIZE, generator=gen) > 0.5).float()
        self.quality = (
            torch.rand(n, num_fg, generator=gen) if constant is None else torch.full((n, num_fg), constant)
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i], "candidate": self.masks[i], "quality": self.quality[i]}


def _trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    defaults = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    defaults.update(kwargs)
    return L.Trainer(**defaults)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> tuple[QualityPredictor, Path, Path]:
    """A predictor fitted for 2 steps with the paper's Trainer setup (clipping, early stop, best checkpoint).

    Returns the model, the file from ``trainer.save_checkpoint`` and the best file of ``ModelCheckpoint``.
    """
    tmp = tmp_path_factory.mktemp("fit")
    torch.manual_seed(0)
    model = QualityPredictor(backbone="resnet18", in_channels=3, num_classes=2)
    loader = DataLoader(_RandomQualityDataset(8), batch_size=4)
    best = ModelCheckpoint(
        dirpath=tmp / "ckpts", monitor="val/loss", mode="min", save_top_k=1, save_last=True
    )
    callbacks = [best, EarlyStopping(monitor="val/loss", mode="min", patience=25)]
    trainer = _trainer(
        tmp,
        max_steps=2,
        limit_val_batches=1,
        gradient_clip_val=1.0,
        enable_checkpointing=True,
        callbacks=callbacks,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few-workers / small-dataset notices
        trainer.fit(model, loader, loader)
    path = tmp / "g.ckpt"
    trainer.save_checkpoint(path)
    return model, path, Path(best.best_model_path)


# ---------------------------------------------------------------- shapes, range, initialisation
@pytest.mark.parametrize(("in_channels", "num_classes"), [(3, 2), (3, 4), (1, 2), (1, 3)])
def test_output_shape_and_range(in_channels: int, num_classes: int) -> None:
    model = QualityPredictor(in_channels=in_channels, num_classes=num_classes).eval()
    images, masks = _inputs(3, in_channels, num_classes - 1)
    q = model(images, masks)
    assert q.shape == (3, num_classes - 1)
    assert ((q > 0) & (q < 1)).all()
    assert model.num_foreground == num_classes - 1 and model.in_channels == in_channels


def test_untrained_outputs_not_saturated_and_trainable() -> None:
    torch.manual_seed(0)
    model = QualityPredictor(num_classes=3).eval()
    images, masks = _inputs(8, 3, 2, seed=1)
    q = model(images, masks)
    # The small last layer puts every output near 0.5, far from the saturated 0 / 1 ...
    assert ((q > 0.4) & (q < 0.6)).all(), q
    # ... yet the outputs depend on the input (not one constant), ...
    assert q.std() > 1e-6
    # ... and the sigmoid passes gradient to the last layer and to the hidden layer.
    target = torch.rand(8, 2, generator=torch.Generator().manual_seed(2))
    torch.nn.functional.smooth_l1_loss(q, target).backward()
    assert model.head[-1].weight.grad.abs().sum() > 0
    assert model.head[1].weight.grad.abs().sum() > 0


def test_head_runs_in_float32_under_mixed_precision() -> None:
    """Under bf16 autocast the backbone runs in bfloat16 but the quality keeps float32 resolution (bfloat16
    spaces values in [0.5, 1) by 1/256), with gradient; without autocast nothing changes."""
    torch.manual_seed(0)
    model = QualityPredictor(num_classes=3).eval()
    images, masks = _inputs(4, 3, 2, seed=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = model.backbone(model._input(images, masks))
        q = model(images, masks)
    assert features.dtype == torch.bfloat16 and q.dtype == torch.float32
    assert torch.equal(q, torch.sigmoid(model.head(features.float())))
    assert not torch.equal(q, q.to(torch.bfloat16).float())  # finer than the bfloat16 grid
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(images.requires_grad_(), masks).sum().backward()
    assert images.grad is not None and model.head[-1].weight.grad is not None
    plain = model(images.detach(), masks)
    assert plain.dtype == torch.float32 and torch.equal(plain, model(images.detach(), masks))
    half = QualityPredictor(num_classes=3).to(torch.bfloat16).eval()  # true bf16: the head stays bf16
    assert half(images.detach().bfloat16(), masks.bfloat16()).dtype == torch.bfloat16


def test_loading_inside_a_cli_built_module_keeps_the_predictor_hyperparameters(tmp_path: Path) -> None:
    """A module that LightningCLI instantiates may load a predictor in its ``__init__``: the predictor keeps its
    own hyper-parameters (here its calibration), not the CLI's configuration of the enclosing module."""
    from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters_context

    torch.manual_seed(0)
    model = QualityPredictor(calibration=[0.5, -1.0]).eval()
    path = tmp_path / "calibrated.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    images, masks = _inputs(2, 3, 1, seed=4)
    config = {"encoder": "unet", "_class_path": "my_package.MyModule"}
    with _given_hyperparameters_context(config, "lightning.pytorch.cli.instantiate_module"):
        loaded = load_quality_predictor(str(path))
    assert loaded.hparams["calibration"] == [0.5, -1.0] and "_class_path" not in loaded.hparams
    assert torch.allclose(loaded(images, masks), model(images, masks))


def test_few_optimizer_steps_reduce_loss() -> None:
    torch.manual_seed(0)
    model = QualityPredictor(dropout=0.0)
    images, masks = _inputs(4, 3, 1, seed=3)
    target = torch.linspace(0.05, 0.95, 4).unsqueeze(1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(images, masks), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_gradients_flow_to_soft_masks() -> None:
    model = QualityPredictor(num_classes=3).eval()
    for p in model.parameters():  # frozen, as inside QAR
        p.requires_grad_(False)
    images, _ = _inputs(2, 3, 2)
    probs = torch.rand(2, 2, SIZE, SIZE, generator=torch.Generator().manual_seed(4)).requires_grad_(True)
    q = model(images, probs)
    assert q.requires_grad
    (1 - q.mean()).backward()
    assert probs.grad is not None and probs.grad.abs().sum() > 0
    assert probs.grad[:, 0].abs().sum() > 0 and probs.grad[:, 1].abs().sum() > 0


def test_predict_quality_no_grad_and_restores_mode() -> None:
    model = QualityPredictor().train()
    images, masks = _inputs(2, 3, 1)
    masks.requires_grad_(True)
    q = model.predict_quality(images, masks)
    assert not q.requires_grad and model.training
    torch.testing.assert_close(q, model.eval()(images, masks).detach())


def test_predict_step_dict_and_tuple() -> None:
    model = QualityPredictor().eval()
    images, masks = _inputs(2, 3, 1)
    a = model.predict_step({"image": images, "candidate": masks}, 0)
    b = model.predict_step((images, masks), 0)
    torch.testing.assert_close(a, b)
    assert a.shape == (2, 1)


# ---------------------------------------------------------------- backbones
def _first_conv(net: torch.nn.Module) -> torch.nn.Conv2d:
    return net.get_submodule(net.pretrained_cfg["first_conv"])


@pytest.mark.parametrize(
    ("name", "in_channels"),
    [
        ("resnet18", 3),
        ("resnet18", 1),
        ("mobilenetv3_large_100", 3),
        ("mobilenetv3_large_100", 1),
        ("convnext_tiny", 3),
    ],
)
def test_widened_first_conv_init(name: str, in_channels: int) -> None:
    torch.manual_seed(0)
    ref = _first_conv(timm.create_model(name, pretrained=False, num_classes=0, in_chans=3)).weight.detach()
    torch.manual_seed(0)
    net, _ = build_backbone(name, in_channels=in_channels, mask_channels=2)
    w = _first_conv(net).weight.detach()
    assert w.shape == (ref.shape[0], in_channels + 2, *ref.shape[2:])
    expected_image = ref if in_channels == 3 else ref.sum(dim=1, keepdim=True)
    torch.testing.assert_close(w[:, :in_channels], expected_image)
    for c in range(in_channels, in_channels + 2):
        torch.testing.assert_close(w[:, c], ref.mean(dim=1))


def test_widened_conv_in_predictor() -> None:
    model = QualityPredictor(backbone="efficientnet_b0", num_classes=2)
    w = model.backbone.conv_stem.weight.detach()
    assert w.shape[1] == 4
    torch.testing.assert_close(w[:, 3], w[:, :3].mean(dim=1))


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_builds_and_runs(name: str) -> None:
    net, features = build_backbone(name, in_channels=3, mask_channels=1)
    with torch.no_grad():
        out = net.eval()(torch.rand(1, 4, 64, 64))
    assert out.shape == (1, features)
    model = QualityPredictor(backbone=name, in_channels=1, num_classes=2).eval()
    q = model(*_inputs(1, 1, 1, size=64))
    assert q.shape == (1, 1) and ((q > 0) & (q < 1)).all()


def test_plain_backbone_without_masks() -> None:
    net, features = build_backbone("resnet18", in_channels=3)
    assert _first_conv(net).in_channels == 3
    assert net(torch.rand(2, 3, SIZE, SIZE)).shape == (2, features)


def test_aliases_resolve() -> None:
    assert resolve_backbone_name("MobileNetV3") == "mobilenetv3_large_100"
    assert resolve_backbone_name(" convnext ") == "convnext_tiny"
    assert QualityPredictor(backbone="mobilenetv3").num_foreground == 1


def test_unknown_backbone_lists_supported_names() -> None:
    with pytest.raises(KeyError) as err:
        build_backbone("vgg16", in_channels=3)
    for name in BACKBONES:
        assert name in str(err.value)
    with pytest.raises(ValueError, match="`backbone`.*resnet18.*'vgg16'"):
        QualityPredictor(backbone="vgg16")


def test_backbone_argument_errors() -> None:
    with pytest.raises(ValueError, match="in_channels"):
        build_backbone("resnet18", in_channels=2)
    with pytest.raises(ValueError, match="mask_channels"):
        build_backbone("resnet18", in_channels=3, mask_channels=-1)


# ---------------------------------------------------------------- argument and input validation
@pytest.mark.parametrize(
    ("kwargs", "arg"),
    [
        ({"in_channels": 2}, "in_channels"),
        ({"num_classes": 1}, "num_classes"),
        ({"dropout": 1.0}, "dropout"),
        ({"hidden": 0}, "hidden"),
        ({"lr": 0.0}, "lr"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"t0": 0}, "t0"),
        ({"t_mult": 0}, "t_mult"),
        ({"eta_min": -1e-6}, "eta_min"),
        ({"smooth_l1_beta": -1.0}, "smooth_l1_beta"),
        ({"image_mean": [0.5, 0.5]}, "image_mean"),
        ({"image_std": [0.2, 0.0, 0.2]}, "image_std"),
        ({"pretrained": 1}, "pretrained"),
        ({"channels_last": "yes"}, "channels_last"),
        ({"error_map_weight": -0.1}, "error_map_weight"),
    ],
)
def test_constructor_validation(kwargs: dict, arg: str) -> None:
    with pytest.raises(ValueError, match=f"`{arg}`"):
        QualityPredictor(**kwargs)


def test_image_stats_resolved_and_used() -> None:
    gray = QualityPredictor(in_channels=1)
    assert gray.hparams.image_mean == [0.449] and gray.hparams.image_std == [0.226]
    custom = QualityPredictor(in_channels=1, image_mean=[0.3], image_std=[0.1])
    assert custom.image_mean.flatten().tolist() == pytest.approx([0.3])
    rgb = QualityPredictor()
    assert rgb.hparams.image_mean == pytest.approx([0.485, 0.456, 0.406])


def test_forward_rejects_wrong_channels() -> None:
    model = QualityPredictor(num_classes=3).eval()
    images, masks = _inputs(2, 3, 2)
    with pytest.raises(ValueError, match=r"`images`.*\(B, 3, H, W\).*\(2, 1, 32, 32\)"):
        model(images[:, :1], masks)
    with pytest.raises(ValueError, match=r"`masks`.*\(B, 2, H, W\).*num_classes=3"):
        model(images, masks[:, :1])
    with pytest.raises(ValueError, match="spatial size"):
        model(images, masks[..., :16])


def test_training_batch_errors() -> None:
    model = QualityPredictor()
    images, masks = _inputs(2, 3, 1)
    with pytest.raises(ValueError, match="keys"):
        model.training_step({"image": images, "candidate": masks}, 0)
    with pytest.raises(ValueError, match="`quality`"):
        model.training_step({"image": images, "candidate": masks, "quality": torch.rand(2)}, 0)


def test_configure_optimizers() -> None:
    model = QualityPredictor(lr=1e-3, weight_decay=1e-2, t0=5, t_mult=3, eta_min=1e-5)
    conf = model.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["lr"] == 1e-3 and opt.defaults["weight_decay"] == 1e-2
    assert isinstance(sched, torch.optim.lr_scheduler.CosineAnnealingWarmRestarts)
    assert (sched.T_0, sched.T_mult, sched.eta_min) == (5, 3, 1e-5)
    assert conf["lr_scheduler"]["interval"] == "epoch"


# ---------------------------------------------------------------- Trainer integration
def test_trainer_fit_logs_metrics(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = QualityPredictor(num_classes=3)
    loader = DataLoader(_RandomQualityDataset(6, num_fg=2), batch_size=2)
    trainer = _trainer(tmp_path, max_steps=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, loader, loader)
        metrics = dict(trainer.callback_metrics)
        test_metrics = trainer.test(model, loader, verbose=False)[0]
    for key in ("train/loss", "val/loss", "val/mae", "val/pearson", "val/spearman"):
        assert key in metrics and torch.isfinite(metrics[key]), key
    assert -1.0 <= metrics["val/pearson"] <= 1.0
    for key in ("test/loss", "test/mae", "test/pearson", "test/spearman"):
        assert key in test_metrics, key


def test_constant_targets_log_zero_correlation(tmp_path: Path) -> None:
    model = QualityPredictor()
    loader = DataLoader(_RandomQualityDataset(4, constant=1.0), batch_size=2)
    with pytest.warns(UserWarning, match="val/pearson is undefined"):
        metrics = _trainer(tmp_path).validate(model, loader, verbose=False)[0]
    assert metrics["val/pearson"] == 0.0
    assert metrics["val/mae"] > 0


def test_multiclass_correlations_leave_out_both_empty_pairs() -> None:
    """K-1 > 1: a class in neither candidate nor truth (target 1, candidate empty) is not a correlation value;
    an empty candidate whose truth has the class (target 0) and every painted class are; binary keeps all."""
    preds = torch.tensor([[0.9, 0.2], [0.4, 0.7], [0.6, 0.5]])
    target = torch.tensor([[1.0, 1.0], [0.3, 0.0], [0.5, 1.0]])
    cand = torch.zeros(3, 2, 4, 4)
    cand[0, 0, 1, 1] = 1.0  # sample 0 paints class 1 (target 1 kept); class 2 empty with target 1: both empty
    cand[1, 0, 2, 2] = 1.0  # sample 1 class 2 empty with target 0: the truth has it, kept
    cand[2, 0, 0, 0] = cand[2, 1, 3, 3] = 1.0  # sample 2 paints both
    p, t = _correlation_values(preds, target, cand)
    assert p.tolist() == pytest.approx([0.9, 0.4, 0.7, 0.6, 0.5])
    assert t.tolist() == pytest.approx([1.0, 0.3, 0.0, 0.5, 1.0])
    p1, t1 = _correlation_values(preds[:, :1], target[:, :1], torch.zeros(3, 1, 4, 4))
    assert p1.numel() == t1.numel() == 3


# ---------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip(fitted: tuple[QualityPredictor, Path, Path]) -> None:
    model, path, best_path = fitted
    for file in (path, best_path):
        ckpt = load_checkpoint(file)  # the whole Lightning checkpoint is weights_only-loadable
        assert {"callbacks", "optimizer_states", "lr_schedulers"} <= set(ckpt)
        assert ckpt["hyper_parameters"]["backbone"] == "resnet18"
        assert isinstance(ckpt["hyper_parameters"]["image_mean"], list)
    loaded = load_quality_predictor(str(path), in_channels=3, num_classes=2)
    assert isinstance(loaded, QualityPredictor) and not loaded.training
    images, masks = _inputs(3, 3, 1, seed=5)
    torch.testing.assert_close(loaded(images, masks), model.eval()(images, masks), rtol=0, atol=0)
    # The best checkpoint was written after the last (only) validation, so it holds the same weights.
    best = load_quality_predictor(str(best_path))
    torch.testing.assert_close(best(images, masks), model(images, masks), rtol=0, atol=0)


def test_trainer_checkpoint_loads_as_the_plain_network(fitted: tuple[QualityPredictor, Path, Path]) -> None:
    """What guidance loads from a Trainer-written checkpoint: a QualityNetwork with the predictor's outputs."""
    from qg_lightning.quality.network import QualityNetwork, load_quality_network

    model, path, best_path = fitted
    images, masks = _inputs(3, 3, 1, seed=5)
    for file in (path, best_path):
        net = load_quality_network(str(file), in_channels=3, num_classes=2)
        assert type(net) is QualityNetwork and not net.training
        torch.testing.assert_close(net(images, masks), model.eval()(images, masks), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"in_channels": 1}, r"expects in_channels=3 \(asked for in_channels=1\)"),
        ({"num_classes": 4}, r"expects num_classes=2.*\(asked for num_classes=4\)"),
    ],
)
def test_refuses_mismatched_task(
    fitted: tuple[QualityPredictor, Path, Path], kwargs: dict, pattern: str
) -> None:
    _, path, _ = fitted
    with pytest.raises(ValueError, match=pattern):
        load_quality_predictor(str(path), **kwargs)


def test_refuses_missing_weights(fitted: tuple[QualityPredictor, Path, Path], tmp_path: Path) -> None:
    _, path, _ = fitted
    ckpt = load_checkpoint(path)
    ckpt["state_dict"].pop("head.4.weight")
    ckpt["state_dict"]["head.9.weight"] = torch.zeros(1)
    broken = tmp_path / "broken.ckpt"
    torch.save(ckpt, broken)
    with pytest.raises(
        ValueError, match=r"missing keys \['head.4.weight'\].*unexpected keys \['head.9.weight'\]"
    ):
        load_quality_predictor(str(broken))


class _Payload:
    """Unpickling this object opens (creates) ``target``: code execution a safe loader must not run."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_refuses_unsafe_pickle(tmp_path: Path) -> None:
    target = tmp_path / "pwned.txt"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"backbone": _Payload(str(target))}}, path)
    # The payload is live: a plain unpickle of the same object would create the file.
    probe = tmp_path / "probe.txt"
    pickle.loads(pickle.dumps(_Payload(str(probe)))).close()
    assert probe.exists()
    with pytest.raises(UnsafeCheckpointError):
        load_quality_predictor(str(path))
    assert not target.exists()


def test_refuses_segmentation_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "unet.ckpt"
    state = {
        "model.encoder.conv1.weight": torch.zeros(64, 3, 7, 7),
        "model.decoder.blocks.0.conv1.0.weight": torch.zeros(16, 16, 3, 3),
        "model.segmentation_head.0.weight": torch.zeros(1, 16, 3, 3),
    }
    torch.save({"state_dict": state, "hyper_parameters": {"arch": "Unet", "encoder_name": "resnet34"}}, path)
    with pytest.raises(
        ValueError, match=r"looks like a segmentation model \(Unet\) checkpoint.*QualityPredictor"
    ):
        load_quality_predictor(str(path))


def test_refuses_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="quality predictor checkpoint"):
        load_quality_predictor(str(tmp_path / "nope.ckpt"))


def test_loader_ignores_cli_bookkeeping_keys(
    fitted: tuple[QualityPredictor, Path, Path], tmp_path: Path
) -> None:
    _, path, _ = fitted
    ckpt = load_checkpoint(path)
    ckpt["hyper_parameters"]["_instantiator"] = (
        "lightning.pytorch.cli.instantiate_module"  # LightningCLI adds it
    )
    cli_path = tmp_path / "cli.ckpt"
    torch.save(ckpt, cli_path)
    assert load_quality_predictor(str(cli_path)).num_foreground == 1


def test_lightning_cli_builds_predictor(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.pytorch.cli import LightningCLI

    monkeypatch.setattr("sys.argv", ["fit"])  # args come from `args`, not from pytest's command line

    args = ["--model.backbone=mobilenetv3", "--model.in_channels=1", "--model.image_mean=[0.5]"]
    args += ["--model.num_classes=3", "--trainer.accelerator=cpu", "--trainer.logger=false"]
    cli = LightningCLI(QualityPredictor, run=False, args=args, seed_everything_default=False)
    assert isinstance(cli.model, QualityPredictor)
    assert (cli.model.in_channels, cli.model.num_foreground) == (1, 2)
    assert cli.model.hparams.image_mean == [0.5] and cli.model.hparams.image_std == [0.226]


def test_channels_last_gives_the_same_predictions_and_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    plain = QualityPredictor(in_channels=3).eval()
    fast = QualityPredictor(in_channels=3, channels_last=True).eval()
    fast.load_state_dict(plain.state_dict())
    conv = next(m for m in fast.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    masks = (torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    assert torch.allclose(plain(images, masks), fast(images, masks), atol=1e-5)
    path = tmp_path / "g.ckpt"
    torch.save({"hyper_parameters": dict(fast.hparams), "state_dict": fast.state_dict()}, path)
    loaded = load_quality_predictor(str(path))
    assert loaded.hparams.channels_last is True
    assert torch.allclose(loaded(images, masks), fast(images, masks), atol=1e-6)


def test_error_map_targets_order_and_grid() -> None:
    from qg_lightning.quality.predictor import error_map_targets

    cand = torch.zeros(1, 2, 4, 4)
    truth = torch.zeros(1, 2, 4, 4)
    cand[0, 0, :2, :2] = 1  # class 0: false positives in the top-left cell
    truth[0, 1, 2:, 2:] = 1  # class 1: false negatives in the bottom-right cell
    maps = error_map_targets(cand, truth, (2, 2))
    assert maps.shape == (1, 4, 2, 2)
    assert maps[0, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]]  # FP of class 0
    assert maps[0, 3].tolist() == [[0.0, 0.0], [0.0, 1.0]]  # FN of class 1
    assert maps[0, 1].sum() == 0 and maps[0, 2].sum() == 0


def test_error_map_loss_trains_and_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    g = QualityPredictor(num_classes=3, error_map_weight=0.5)
    gen = torch.Generator().manual_seed(1)
    batch = {
        "image": torch.rand(4, 3, 64, 64, generator=gen),
        "candidate": (torch.rand(4, 2, 64, 64, generator=gen) > 0.5).float(),
        "truth": (torch.rand(4, 2, 64, 64, generator=gen) > 0.5).float(),
        "quality": torch.rand(4, 2, generator=gen),
    }
    plain = QualityPredictor(num_classes=3)
    plain.load_state_dict({k: v for k, v in g.state_dict().items() if not k.startswith("error_head")})
    # the auxiliary term adds to the quality loss; quality predictions are the plain network's
    assert g.training_step(batch, 0) > plain.training_step(batch, 0)
    g.eval()
    plain.eval()
    assert torch.allclose(g(batch["image"], batch["candidate"]), plain(batch["image"], batch["candidate"]))
    g.train()
    opt = torch.optim.AdamW(g.parameters(), lr=1e-3)
    loss = g.training_step(batch, 0)
    loss.backward()
    assert g.error_head.weight.grad is not None and g.error_head.weight.grad.abs().sum() > 0
    opt.step()
    with pytest.raises(ValueError, match="error_map_weight.*truth"):
        g.training_step({k: v for k, v in batch.items() if k != "truth"}, 0)
    path = tmp_path / "g.ckpt"
    torch.save({"hyper_parameters": dict(g.hparams), "state_dict": g.state_dict()}, path)
    loaded = load_quality_predictor(str(path))
    assert loaded.error_head is not None
    assert torch.allclose(
        loaded(batch["image"], batch["candidate"]), g.eval()(batch["image"], batch["candidate"])
    )
    with pytest.raises(ValueError, match="error-map head"):
        plain.forward_with_error_maps(batch["image"], batch["candidate"])


def test_load_quality_predictors_one_or_several(tmp_path: Path) -> None:
    from qg_lightning.quality.predictor import FlipTTA, QualityEnsemble, load_quality_predictors

    paths = []
    for name, kwargs in (("a", {}), ("b", {}), ("gray", {"in_channels": 1})):
        g = QualityPredictor(**kwargs)
        paths.append(tmp_path / f"{name}.ckpt")
        torch.save({"state_dict": g.state_dict(), "hyper_parameters": dict(g.hparams)}, paths[-1])
    assert type(load_quality_predictors(str(paths[0]))) is QualityPredictor
    assert type(load_quality_predictors([paths[0]], tta=True)) is FlipTTA
    ens = load_quality_predictors(paths[:2], tta=True)
    assert isinstance(ens, QualityEnsemble) and not ens.training
    assert all(isinstance(m, FlipTTA) for m in ens.members)
    with pytest.raises(ValueError, match="at least one"):
        load_quality_predictors([])
    with pytest.raises(ValueError, match="'.*a.ckpt' is given twice"):
        load_quality_predictors([paths[0], paths[1], tmp_path / "." / "a.ckpt"])
    with pytest.raises(ValueError, match="'.*a.ckpt' .*in_channels=3.* and '.*gray.ckpt' .*in_channels=1"):
        load_quality_predictors([paths[0], paths[2]])
    with pytest.raises(ValueError, match="gray.ckpt' is incompatible"):
        load_quality_predictors(paths[:3], in_channels=3)
    with pytest.raises(FileNotFoundError):
        load_quality_predictors([paths[0], tmp_path / "missing.ckpt"])


# -------------------------------------------------------------------------------------- fine-tuning start
def _saved(model: QualityPredictor, path: Path) -> Path:
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return path


def test_predictor_from_checkpoint_starts_from_its_weights_and_statistics(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = QualityPredictor(in_channels=1, image_mean=[0.3], image_std=[0.2], calibration=[2.0, 0.5])
    path = _saved(source, tmp_path / "g.ckpt")
    model = predictor_from_checkpoint(path, in_channels=1, error_map_weight=0.5, lr=1e-4)
    assert model.training and model.hparams.lr == 1e-4 and model.error_head is not None
    assert model.image_stats == ([0.3], [0.2]) and model.calibration is None  # a new calibration is fitted
    theirs = source.state_dict()
    for name, value in model.state_dict().items():
        if not name.startswith("error_head."):
            assert torch.equal(value, theirs[name]), name
    # an error-map head the checkpoint has but the new predictor does not ask for is left out
    with_head = _saved(QualityPredictor(in_channels=1, error_map_weight=0.5), tmp_path / "h.ckpt")
    assert predictor_from_checkpoint(with_head, in_channels=1).error_head is None


@pytest.mark.parametrize(
    ("hparams", "pattern"),
    [
        ({"backbone": "resnet34"}, r"is a resnet18 predictor.*set `backbone` to 'resnet18'"),
        ({"num_classes": 3}, r"expects num_classes=2.*\(asked for num_classes=3\)"),
        ({"hidden": 64}, r"do not fit the new predictor"),
    ],
)
def test_predictor_from_checkpoint_refuses_what_does_not_fit(
    tmp_path: Path, hparams: dict, pattern: str
) -> None:
    path = _saved(QualityPredictor(), tmp_path / "g.ckpt")
    with pytest.raises(ValueError, match=pattern):
        predictor_from_checkpoint(path, **hparams)

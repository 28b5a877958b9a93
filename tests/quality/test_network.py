"""Tests for qg_lightning.quality.network: the plain quality network, FlipTTA, QualityEnsemble, loading."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import lightning as L
import pytest
import torch

from qg_lightning.quality import network
from qg_lightning.quality.network import (
    FlipTTA,
    QualityEnsemble,
    QualityNetwork,
    load_quality_network,
    load_quality_networks,
)
from qg_lightning.quality.predictor import QualityPredictor, load_quality_predictor


def _inputs(in_channels: int, num_fg: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(2, in_channels, 32, 32, generator=gen)
    return images, (torch.rand(2, num_fg, 32, 32, generator=gen) > 0.5).float()


def _save(model: QualityPredictor, path: Path) -> Path:
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return path


def test_network_is_a_plain_module_that_the_predictor_extends() -> None:
    torch.manual_seed(0)
    net = QualityNetwork(num_classes=3)
    torch.manual_seed(0)
    predictor = QualityPredictor(num_classes=3)
    assert not isinstance(net, L.LightningModule) and isinstance(predictor, QualityNetwork)
    assert list(net.state_dict()) == list(predictor.state_dict())
    for key, value in net.state_dict().items():
        assert torch.equal(value, predictor.state_dict()[key]), key
    images, masks = _inputs(3, 2)
    assert torch.equal(net.eval()(images, masks), predictor.eval()(images, masks))


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"in_channels": 1, "num_classes": 3, "image_mean": [0.3], "image_std": [0.2]},
     {"error_map_weight": 0.5, "channels_last": True, "calibration": [0.5, -1.0], "lr": 1e-3}],
)  # fmt: skip
def test_predictor_checkpoint_loads_as_the_plain_network(kwargs: dict, tmp_path: Path) -> None:
    """A QualityPredictor checkpoint loads as a QualityNetwork: the same weights, the same outputs."""
    torch.manual_seed(0)
    predictor = QualityPredictor(**kwargs).eval()
    path = _save(predictor, tmp_path / "g.ckpt")
    net = load_quality_network(str(path))
    assert type(net) is QualityNetwork and not net.training
    assert set(net.state_dict()) == set(predictor.state_dict())
    assert net.calibration == predictor.hparams.calibration
    assert net.image_stats == (predictor.hparams.image_mean, predictor.hparams.image_std)
    assert (net.error_head is None) == (predictor.error_head is None)
    images, masks = _inputs(predictor.in_channels, predictor.num_foreground, seed=3)
    with torch.no_grad():
        assert torch.equal(net(images, masks), predictor(images, masks))
        assert torch.equal(net(images, masks), load_quality_predictor(str(path))(images, masks))


def test_load_quality_network_refuses_what_does_not_fit(tmp_path: Path) -> None:
    path = _save(QualityPredictor(), tmp_path / "g.ckpt")
    with pytest.raises(ValueError, match=r"expects in_channels=3 \(asked for in_channels=1\)"):
        load_quality_network(path, in_channels=1)
    ckpt = torch.load(path, weights_only=True)
    ckpt["state_dict"]["head.9.weight"] = torch.zeros(1)
    torch.save(ckpt, tmp_path / "broken.ckpt")
    with pytest.raises(ValueError, match=r"QualityNetwork\(.*unexpected keys \['head.9.weight'\]"):
        load_quality_network(tmp_path / "broken.ckpt")
    with pytest.raises(FileNotFoundError, match="quality predictor checkpoint"):
        load_quality_network(tmp_path / "nope.ckpt")


def test_load_quality_networks_one_or_several(tmp_path: Path) -> None:
    paths = [_save(QualityPredictor(**kw), tmp_path / f"{n}.ckpt") for n, kw in (("a", {}), ("b", {}))]
    assert type(load_quality_networks(str(paths[0]))) is QualityNetwork
    assert type(load_quality_networks([paths[0]], tta=True)) is FlipTTA
    ens = load_quality_networks(paths, tta=True)
    assert isinstance(ens, QualityEnsemble) and not ens.training
    assert all(isinstance(m, FlipTTA) and type(m.predictor) is QualityNetwork for m in ens.members)
    with pytest.raises(ValueError, match="'.*a.ckpt' is given twice"):
        load_quality_networks([paths[0], paths[1], tmp_path / "." / "a.ckpt"])


def test_predictor_module_re_exports_the_network_objects() -> None:
    from qg_lightning.quality import predictor

    for name in ("FlipTTA", "QualityEnsemble", "IMAGENET_MEAN", "IMAGENET_STD"):
        assert getattr(predictor, name) is getattr(network, name), name


def test_network_module_imports_no_training_code() -> None:
    """network.py stays the plain network: no Lightning module, data, methods or other quality modules."""
    tree = ast.parse(inspect.getsource(network))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    ours = {name for name in imported if name.split(".")[0] == "qg_lightning"}
    allowed = {
        "qg_lightning._validation",
        "qg_lightning.checkpoint",
        "qg_lightning.masks",
        "qg_lightning.quality.backbones",
    }
    assert ours <= allowed, ours
    lightning = {name for name in imported if name.split(".")[0] == "lightning"}
    assert lightning <= {"lightning.pytorch.utilities"}, lightning


def test_flip_tta_averages_the_four_flips_and_keeps_the_mode() -> None:
    torch.manual_seed(0)
    g = QualityNetwork(num_classes=3)
    tta = FlipTTA(g)
    assert (tta.in_channels, tta.num_classes, tta.num_foreground) == (3, 3, 2)
    g.eval()
    gen = torch.Generator().manual_seed(4)
    images, masks = (
        torch.rand(2, 3, 32, 32, generator=gen),
        (torch.rand(2, 2, 32, 32, generator=gen) > 0.5).float(),
    )
    flips = [g(images, masks), g(images.flip(-1), masks.flip(-1)), g(images.flip(-2), masks.flip(-2)),
             g(images.flip(-2, -1), masks.flip(-2, -1))]  # fmt: skip
    assert torch.allclose(tta(images, masks), torch.stack(flips).mean(0), atol=1e-6)
    # flipping the input only permutes the four terms
    assert torch.allclose(tta(images.flip(-1), masks.flip(-1)), tta(images, masks), atol=1e-5)
    assert not g.training


def test_quality_ensemble_mean_spread_and_gradients() -> None:
    torch.manual_seed(0)
    a, b = QualityNetwork(num_classes=3).eval(), QualityNetwork(num_classes=3).eval()
    ens = QualityEnsemble([a, FlipTTA(b)])
    assert (len(ens), ens.in_channels, ens.num_classes, ens.num_foreground) == (2, 3, 3, 2)
    gen = torch.Generator().manual_seed(2)
    images = torch.rand(2, 3, 32, 32, generator=gen)
    masks = (torch.rand(2, 2, 32, 32, generator=gen) > 0.5).float()
    with torch.no_grad():
        qa, qb = a(images, masks), FlipTTA(b)(images, masks)
        mean, spread = ens.forward_with_spread(images, masks)
    assert torch.allclose(ens(images, masks), (qa + qb) / 2, atol=1e-6)
    assert torch.allclose(mean, (qa + qb) / 2, atol=1e-6)
    assert torch.allclose(spread, (qa - qb).abs() / 2, atol=1e-6)
    assert torch.equal(QualityEnsemble([a]).forward_with_spread(images, masks)[1], torch.zeros(2, 2))
    # QAR back-propagates through every member of a frozen ensemble into the masks
    ens.requires_grad_(False)
    soft = masks.clone().requires_grad_(True)
    ens(images, soft).sum().backward()
    assert soft.grad is not None and soft.grad.abs().sum() > 0
    assert all(p.grad is None for p in ens.parameters())


def test_quality_ensemble_refuses_members_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match="at least one"):
        QualityEnsemble([])
    with pytest.raises(TypeError, match=r"predictors\[1\]"):
        QualityEnsemble([QualityNetwork(), "g.ckpt"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"\[1\] in_channels=1, num_classes=2.*same task"):
        QualityEnsemble([QualityNetwork(), QualityNetwork(in_channels=1)])

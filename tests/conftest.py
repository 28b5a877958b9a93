"""Fixtures shared across test modules."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from qg_lightning.quality.predictor import QualityPredictor


@pytest.fixture(scope="session")
def predictor_ckpt(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An untrained (seeded) quality predictor checkpoint for RGB binary masks: what guided configs load."""
    torch.manual_seed(0)
    model = QualityPredictor(backbone="resnet18", in_channels=3, num_classes=2)
    path = tmp_path_factory.mktemp("predictor") / "quality_predictor.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return str(path)


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in tmp_path (relative run dirs land there) with the synthetic-data cache in tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QG_LIGHTNING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("sys.argv", ["qg-lightning"])  # the CLI gets its arguments from `args` only
    return tmp_path

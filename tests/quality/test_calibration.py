from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from qg_lightning.cli import main
from qg_lightning.data import generate_synthetic_dataset
from qg_lightning.quality.calibration import (
    apply_calibration,
    compose_calibration,
    fit_calibration,
    read_candidates,
)
from qg_lightning.quality.predictor import QualityPredictor, load_quality_predictor


def test_fit_recovers_a_logit_linear_distortion() -> None:
    true = torch.rand(500, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.05
    distorted = torch.sigmoid(0.5 * torch.logit(true) + 1.0)  # squeezed and over-rated
    scale, shift = fit_calibration(distorted, true)
    assert scale == pytest.approx(2.0, rel=1e-3) and shift == pytest.approx(-2.0, abs=1e-3)
    assert torch.allclose(apply_calibration(distorted, [scale, shift]), true, atol=1e-4)


def test_fit_lowers_the_error_and_keeps_the_ranking() -> None:
    gen = torch.Generator().manual_seed(1)
    true = torch.rand(300, generator=gen)
    pred = (0.6 + 0.3 * true + 0.1 * torch.rand(300, generator=gen)).clamp(0, 1)  # over-rates, noisy
    fitted = fit_calibration(pred, true)
    after = apply_calibration(pred, fitted)
    assert fitted[0] > 0
    assert (after - true).abs().mean() < (pred - true).abs().mean()
    assert torch.equal(after.argsort(), pred.argsort())  # monotone: same order


def test_scale_stays_positive_for_anti_correlated_predictions() -> None:
    true = torch.linspace(0.1, 0.9, 20)
    scale, _ = fit_calibration(1 - true, true)
    assert scale > 0


@pytest.mark.parametrize(
    ("pred", "true", "match"),
    [
        (torch.rand(3), torch.rand(4), "same shape"),
        (torch.rand(1), torch.rand(1), "at least 2"),
        (torch.tensor([0.5, 1.5]), torch.rand(2), "`pred`"),
        (torch.rand(2), torch.tensor([0.5, float("nan")]), "`true`"),
    ],
)
def test_fit_rejects_bad_input(pred: torch.Tensor, true: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit_calibration(pred, true)


def test_compose_equals_applying_in_turn() -> None:
    q = torch.tensor([0.1, 0.4, 0.8], dtype=torch.float64)
    first, then = [1.5, -0.3], [0.7, 0.2]
    twice = apply_calibration(apply_calibration(q, first), then)
    assert torch.allclose(apply_calibration(q, compose_calibration(first, then)), twice)


def test_predictor_applies_its_calibration() -> None:
    torch.manual_seed(0)
    plain = QualityPredictor().eval()
    calibrated = QualityPredictor(calibration=[2.0, -0.5]).eval()
    calibrated.load_state_dict(plain.state_dict())
    images, masks = torch.rand(3, 3, 32, 32), (torch.rand(3, 1, 32, 32) > 0.5).float()
    expected = apply_calibration(plain(images, masks), [2.0, -0.5])
    assert torch.allclose(calibrated(images, masks), expected, atol=1e-5)
    for bad in ([0.0, 1.0], [1.0], [1.0, float("inf")], "1,0"):
        with pytest.raises(ValueError, match="`calibration`"):
            QualityPredictor(calibration=bad)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, predictor_ckpt: str) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("calib")
    root = generate_synthetic_dataset(tmp / "data", n_images=20, image_size=32, seed=2)
    out = tmp / "val.json"
    args = ["evaluate-predictor", "--predictor", predictor_ckpt, "--data.root", str(root), "--data.image_size",
            "32", "--subset", "val", "--candidates-per-image", "3", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    return out, tmp


def test_evaluate_on_the_validation_split(report: tuple[Path, Path]) -> None:
    data = json.loads(report[0].read_text())
    assert data["data"]["subset"].startswith("val split of")
    assert data["n"] == 3 * data["data"]["n_images"]


def test_calibrate_command_writes_a_calibrated_copy(
    report: tuple[Path, Path], predictor_ckpt: str, capsys: pytest.CaptureFixture
) -> None:
    path, tmp = report
    csv_path = path.with_name("val_candidates.csv")
    out = tmp / "calibrated.ckpt"
    args = ["calibrate-predictor", "--predictor", predictor_ckpt, "--candidates", str(csv_path), "--source",
            "all", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    assert "Calibration [scale, shift]" in capsys.readouterr().out
    summary = json.loads(out.with_suffix(".calibration.json").read_text())
    assert summary["after"]["mae"] <= summary["before"]["mae"] + 1e-9
    g0 = load_quality_predictor(predictor_ckpt)
    g1 = load_quality_predictor(str(out))
    assert g1.hparams.calibration == summary["calibration"]
    images, masks = torch.rand(2, 3, 32, 32), torch.ones(2, 1, 32, 32)
    assert torch.allclose(
        g1(images, masks), apply_calibration(g0(images, masks), summary["calibration"]), atol=1e-5
    )
    # calibrating again composes with the stored calibration
    pred, true = read_candidates(csv_path, "all")
    assert pred.numel() == summary["n"]


def test_calibrate_command_errors(report: tuple[Path, Path], predictor_ckpt: str) -> None:
    path, tmp = report
    csv_path = str(path.with_name("val_candidates.csv"))
    with pytest.raises(ValueError, match="input checkpoint"):
        main(["calibrate-predictor", "--predictor", predictor_ckpt, "--candidates", csv_path, "--source", "all",
              "--out", predictor_ckpt])  # fmt: skip
    with pytest.raises(ValueError, match="real candidate"):  # synthetic-only report
        main(["calibrate-predictor", "--predictor", predictor_ckpt, "--candidates", csv_path, "--out",
              str(tmp / "x.ckpt")])  # fmt: skip
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        main(["calibrate-predictor", "--predictor", predictor_ckpt, "--candidates", str(tmp / "nope.csv"),
              "--out", str(tmp / "x.ckpt")])  # fmt: skip
    with pytest.raises(ValueError, match="not a candidates CSV"):
        main(["calibrate-predictor", "--predictor", predictor_ckpt, "--candidates", str(path), "--out",
              str(tmp / "x.ckpt")])  # fmt: skip

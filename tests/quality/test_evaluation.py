"""Tests for qg_lightning.quality.evaluation (image dependence, report), candidates and ``evaluate-predictor``.

The pure metrics are tested in test_eval_metrics.py.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from qg_lightning.cli import main
from qg_lightning.data import generate_synthetic_dataset, make_split, scan_folder
from qg_lightning.methods import SupervisedSegmenter
from qg_lightning.quality.evaluation import (
    evaluate_predictor,
    image_dependence,
    load_segmenter,
    predict_quality,
)
from qg_lightning.quality.predictor import QualityPredictor

SIZE = 32


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny synthetic folder, an untrained predictor checkpoint and an untrained segmenter checkpoint."""
    tmp = tmp_path_factory.mktemp("eval")
    root = generate_synthetic_dataset(tmp / "data", n_images=10, image_size=SIZE)
    g = QualityPredictor(backbone="resnet18")
    predictor = tmp / "g.ckpt"
    torch.save({"state_dict": g.state_dict(), "hyper_parameters": dict(g.hparams)}, predictor)
    seg = SupervisedSegmenter()
    segmenter = tmp / "seg.ckpt"
    torch.save({"state_dict": seg.state_dict(), "hyper_parameters": dict(seg.hparams)}, segmenter)
    return {"root": root, "predictor": predictor, "segmenter": segmenter, "tmp": tmp}


class MaskOnly(nn.Module):
    """Stub predictor that ignores the image: quality = foreground fraction of the mask."""

    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return masks.float().mean(dim=(2, 3))


class ImageOnly(nn.Module):
    """Stub predictor that looks at the image only."""

    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(1, 2, 3)).unsqueeze(1).expand(-1, masks.shape[1])


# -------------------------------------------------------------------------------------- image dependence
def test_image_dependence_flags_a_predictor_that_ignores_the_image(caplog: pytest.LogCaptureFixture) -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(12, 3, 16, 16, generator=gen)
    masks = (torch.rand(12, 1, 16, 16, generator=gen) < torch.rand(12, 1, 1, 1, generator=gen)).float()
    with caplog.at_level(logging.WARNING, logger="qg_lightning.quality.evaluation"):
        dep = image_dependence(MaskOnly(), images, masks, generator=gen)
    assert dep["ignores_image"] is True
    assert dep["pearson_blackout"] == pytest.approx(1.0)
    assert dep["pearson_shuffled"] == pytest.approx(1.0)
    assert "barely depends on the image" in caplog.text

    dep = image_dependence(ImageOnly(), images, masks, generator=gen)
    assert dep["ignores_image"] is False
    assert math.isnan(dep["pearson_blackout"])  # constant blacked-out predictions: undefined, not flagged
    assert dep["pearson_shuffled"] < 0.7


def test_predict_quality_with_image_index_matches_aligned() -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 16, 16, generator=gen)
    masks = (torch.rand(3, 1, 16, 16, generator=gen) > 0.5).float()
    a = predict_quality(ImageOnly(), images, masks, image_index=[1, 0, 1])
    b = predict_quality(ImageOnly(), images[[1, 0, 1]], masks)
    np.testing.assert_allclose(a, b)
    with pytest.raises(ValueError, match="image_index"):
        predict_quality(ImageOnly(), images, masks)


# -------------------------------------------------------------------------------------- report
REPORT_KEYS = {
    "n", "mae", "pearson", "spearman", "constant_baseline_mae", "mean_pred", "mean_true", "by_source",
    "by_segmenter", "by_category", "image_dependence", "failure_detection", "calibration_png", "worst_png",
}  # fmt: skip


def test_evaluate_predictor_report(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    truths = torch.zeros(3, 1, 16, 16)
    truths[:, :, 4:12, 4:12] = 1
    images = torch.rand(3, 3, 16, 16, generator=gen)
    cands = truths[[0, 1, 2, 0, 1, 2]].clone()
    cands[1, :, 4:8] = 0
    cands[3:, :, :, :8] = 0  # "real" candidates: half the lesion
    sources = ["synthetic"] * 3 + ["unet"] * 3
    cats = ["identity", "single", "heavy", None, None, None]
    scores = {"max_probability": [np.nan] * 3 + [0.9, 0.8, 0.7], "entropy": [np.nan] * 3 + [0.1, 0.2, 0.3]}
    report = evaluate_predictor(
        MaskOnly(), images, truths, cands, sources, cats, segmenter_scores=scores,
        image_index=[0, 1, 2, 0, 1, 2], ids=["a", "b", "c"] * 2,
        corruptions=["identity", "erosion_5", "shift_40", None, None, None],
        out_prefix=tmp_path / "r", n_worst=4,
    )  # fmt: skip
    assert REPORT_KEYS <= set(report)
    json.dumps(report, allow_nan=False)  # NaN became null
    assert report["by_source"]["synthetic"]["n"] == 3 and report["by_source"]["real"]["n"] == 3
    assert report["by_source"]["real"]["mean_true"] == pytest.approx(2 / 3)
    assert set(report["by_category"]) == {"identity", "single", "heavy"}
    assert set(report["by_corruption"]) == {"identity", "erosion_5", "shift_40"}
    assert set(report["by_segmenter"]) == {"unet"}
    assert set(report["failure_detection"]["baselines"]) == {"n", "predictor", "max_probability", "entropy"}
    assert report["image_dependence"]["ignores_image"] is True
    for key in ("calibration_png", "worst_png", "candidates_csv"):
        assert Path(report[key]).is_file() and Path(report[key]).stat().st_size > 0
    # true Dice of the candidates, independent of the predictor
    assert report["mean_true"] == pytest.approx((1 + (2 * 32 / (32 + 64)) + 1 + 3 * (2 / 3)) / 6)


def test_evaluate_predictor_multiclass_counts() -> None:
    gen = torch.Generator().manual_seed(0)
    truths = torch.zeros(2, 2, 16, 16)
    truths[:, 0, :8] = 1
    truths[:, 1, 8:] = 1
    cands = truths.clone()
    cands[1, 1, 8:12] = 0
    report = evaluate_predictor(
        MaskOnly(),
        torch.rand(2, 3, 16, 16, generator=gen),
        truths,
        cands,
        ["synthetic", "net"],
        ["identity", None],
    )
    assert report["n"] == 2 and report["n_values"] == 4 and report["num_foreground"] == 2
    per_class = report["by_source"]["real"]["per_class"]
    assert per_class["class1"]["mean_true"] == 1.0 and per_class["class2"]["mean_true"] == pytest.approx(
        2 / 3
    )


class AbsentIsOne(nn.Module):
    """Stub predictor with no skill: 1.0 for a class the candidate lacks (right whenever the truth lacks it
    too), 0.5 for any class the candidate has."""

    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        has = masks.flatten(2).amax(dim=2) > 0.5
        return torch.where(has, torch.full(has.shape, 0.5), torch.ones(has.shape))


def test_per_class_figures_leave_out_both_empty_pairs_and_count_them() -> None:
    """Rule (b): per-class Pearson / Spearman / MAE are computed over the pairs where the class is in the
    truth or in the candidate; trivially right absent classes would flatter a predictor with no skill."""
    n = 12
    truths = torch.zeros(n, 2, 16, 16)
    truths[:, 0, :8] = 1
    truths[:4, 1, 8:] = 1  # class 2 only in the truth of images 0-3
    cands = truths.clone()
    for i in range(4):
        cands[i, 1, 8 : 9 + i] = 0  # class 2 cut by various amounts
    cands[4, 1, 14:] = 1  # class 2 painted on image 4, whose truth has none: true Dice 0
    images = torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    report = evaluate_predictor(AbsentIsOne(), images, truths, cands, ["net"] * n, [None] * n)
    class2 = report["per_class"]["class2"]
    # class 2 is in the truth of images 0-3 and in the candidate of image 4; images 5-11 are both empty
    assert (class2["n"], class2["n_both_empty"], class2["mean_pred_both_empty"]) == (5, 7, 1.0)
    true = torch.tensor(_dice_per_candidate(truths[:, 1], cands[:, 1]))
    assert class2["mae"] == pytest.approx((0.5 - true[:5]).abs().mean().item())
    assert class2["mean_true"] == pytest.approx(true[:5].mean().item())
    assert class2["pearson"] is None  # undefined (JSON null): a constant guess ranks nothing
    # counting the both-empty pairs would make the same predictor look good
    pred = AbsentIsOne()(images, cands)[:, 1]
    assert np.corrcoef(pred.numpy(), true.numpy())[0, 1] > 0.6
    assert (pred - true).abs().mean().item() < class2["mae"] / 2
    assert report["by_source"]["real"]["per_class"]["class2"]["n"] == 5
    assert report["n_both_empty"] == report["by_source"]["real"]["n_both_empty"] == 7
    assert report["per_class"]["class1"]["n_both_empty"] == 0


def _dice_per_candidate(truth: torch.Tensor, cand: torch.Tensor) -> list[float]:
    """Dice per candidate (both empty -> 1), computed independently of the library."""
    out = []
    for t, c in zip(truth, cand, strict=True):
        denom = float(t.sum() + c.sum())
        out.append(1.0 if denom == 0 else float(2 * (t * c).sum()) / denom)
    return out


def test_evaluate_predictor_validates_lengths() -> None:
    truths = torch.ones(2, 1, 8, 8)
    with pytest.raises(ValueError, match="`sources` must have one entry per candidate"):
        evaluate_predictor(
            MaskOnly(), torch.rand(2, 3, 8, 8), truths, truths, ["synthetic"], ["identity"] * 2
        )


# -------------------------------------------------------------------------------------- segmenters
def test_load_segmenter_and_mismatch(files: dict[str, Path]) -> None:
    net = load_segmenter(files["segmenter"], in_channels=3, num_classes=2)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    with pytest.raises(ValueError, match="in_channels=3 but the data/predictor use in_channels=1"):
        load_segmenter(files["segmenter"], in_channels=1)
    with pytest.raises(ValueError, match="not a segmentation checkpoint.*quality predictor"):
        load_segmenter(files["predictor"])


# -------------------------------------------------------------------------------------- command
def _run(files: dict[str, Path], out: Path, *extra: str) -> dict:
    args = ["evaluate-predictor", "--predictor", str(files["predictor"]), "--data.root", str(files["root"]),
            "--data.image_size", str(SIZE), "--candidates-per-image", "2", "--out", str(out),
            *extra]  # fmt: skip
    assert main(args) == 0
    return json.loads(out.read_text())


def test_cli_synthetic_and_real_figures(files: dict[str, Path], tmp_path: Path, capsys) -> None:
    report = _run(files, tmp_path / "report.json", "--segmenter", str(files["segmenter"]), "--worst", "4")
    printed = capsys.readouterr().out
    assert REPORT_KEYS <= set(report)
    assert report["data"]["subset"] == "all images (the folder has no split file)"
    assert report["data"]["n_images"] == 10
    assert report["by_source"]["synthetic"]["n"] == 20 and report["by_source"]["real"]["n"] == 10
    assert set(report["by_segmenter"]) == {"seg"}
    baselines = report["failure_detection"]["baselines"]
    assert {"predictor", "max_probability", "entropy"} <= set(baselines)
    for key in ("calibration_png", "worst_png", "candidates_csv"):
        assert Path(report[key]).is_file()
        assert report[key] in printed
    assert str(tmp_path / "report.json") in printed


def test_cli_uses_the_split_file_test_split(files: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    for sub in ("images", "masks"):
        (root / sub).symlink_to(files["root"] / sub)
    split = make_split(scan_folder(root, check=False).ids, seed=3, val_fraction=0.2, test_fraction=0.3)
    split.save(root / "split.json")
    report = _run({**files, "root": root}, tmp_path / "r.json")
    assert report["data"]["n_images"] == len(split.test)
    assert report["data"]["subset"].startswith("test split of")
    assert report["by_source"]["real"]["n"] == 0


def test_cli_uses_the_split_recorded_in_the_checkpoint(files: dict[str, Path], tmp_path: Path) -> None:
    ckpt = torch.load(files["predictor"], weights_only=True)
    ids = scan_folder(files["root"], check=False).ids
    split = make_split(ids, seed=0, val_fraction=0.2, test_fraction=0.2)
    ckpt["QualityDataModule"] = {"split": split.to_dict()}
    ckpt["datamodule_hyper_parameters"] = {"root": str(files["root"]), "image_size": SIZE}
    path = tmp_path / "lightning.ckpt"
    torch.save(ckpt, path)
    out = tmp_path / "r.json"
    assert (
        main(
            ["evaluate-predictor", "--predictor", str(path), "--candidates-per-image", "1", "--out", str(out)]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert report["data"]["subset"] == "test split recorded in the predictor checkpoint"
    assert report["data"]["n_images"] == len(split.test) and report["data"]["image_size"] == SIZE


def test_cli_names_missing_files_and_mismatches(files: dict[str, Path], tmp_path: Path) -> None:
    missing_seg = tmp_path / "nope_seg.ckpt"
    with pytest.raises(
        FileNotFoundError, match="--predictor '.*missing.ckpt'.*--segmenter '.*nope_seg.ckpt'"
    ):
        main(["evaluate-predictor", "--predictor", str(tmp_path / "missing.ckpt"),
              "--data.root", str(files["root"]), "--segmenter", str(missing_seg),
              "--out", str(tmp_path / "r.json")])  # fmt: skip
    with pytest.raises(ValueError, match="in_channels=3 .*asked for in_channels=1"):
        _run(files, tmp_path / "r.json", "--data.in_channels", "1")
    seg1 = SupervisedSegmenter(in_channels=1)
    path = tmp_path / "seg1.ckpt"
    torch.save({"state_dict": seg1.state_dict(), "hyper_parameters": dict(seg1.hparams)}, path)
    with pytest.raises(ValueError, match="seg1.ckpt' does not fit: in_channels=1"):
        _run(files, tmp_path / "r.json", "--segmenter", str(path))


def test_cli_tta_is_recorded_and_changes_predictions(files: dict[str, Path], tmp_path: Path) -> None:
    plain = _run(files, tmp_path / "plain.json")
    tta = _run(files, tmp_path / "tta.json", "--tta")
    assert tta["tta"] is True and plain["tta"] is False
    assert tta["n"] == plain["n"] and tta["mean_true"] == plain["mean_true"]


def test_cli_ensemble_is_the_mean_of_its_members(files: dict[str, Path], tmp_path: Path, capsys) -> None:
    torch.manual_seed(3)
    g = QualityPredictor(backbone="resnet18")
    second = tmp_path / "g2.ckpt"
    torch.save({"state_dict": g.state_dict(), "hyper_parameters": dict(g.hparams)}, second)
    reports = [
        _run(files, tmp_path / "one.json"),
        _run({**files, "predictor": second}, tmp_path / "two.json"),
    ]
    both = _run(files, tmp_path / "both.json", "--predictor", str(files["predictor"]), str(second))
    printed = capsys.readouterr().out
    assert "with the mean of 2 predictors" in printed
    assert both["predictors"] == [str(files["predictor"]), str(second)]
    assert both["predictor"] == str(files["predictor"])
    assert reports[0]["predictors"] == [str(files["predictor"])]
    assert both["n"] == reports[0]["n"] and both["mean_true"] == reports[0]["mean_true"]
    assert "member 2 alone (all)" in printed and "members" not in reports[0]
    # each member's own figures, side by side with the mean's
    for member, alone in zip(both["members"], reports, strict=True):
        assert member["predictor"] == alone["predictors"][0]
        for key in ("mae", "pearson", "mean_pred"):
            assert member["all"][key] == pytest.approx(alone[key], abs=1e-6)
        assert member["synthetic"]["n"] == alone["by_source"]["synthetic"]["n"] and member["real"]["n"] == 0
    assert both["mean_pred"] == pytest.approx(
        (reports[0]["mean_pred"] + reports[1]["mean_pred"]) / 2, abs=1e-6
    )

"""Tests for qg_lightning.quality.scoring (pairing, scoring, CSV order, the ``score`` command)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from qg_lightning.cli import main
from qg_lightning.data import DataValidationError, generate_synthetic_dataset
from qg_lightning.quality.predictor import QualityPredictor
from qg_lightning.quality.scoring import pair_files, score_masks, write_scores

SIZE = 32


class Coverage(nn.Module):
    """Stub predictor: quality = foreground fraction of each class channel."""

    in_channels = 3

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return masks.float().mean(dim=(2, 3))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """images/ with 6 images, masks/ with 5 of their masks plus one mask without image and a stray file."""
    tmp = tmp_path_factory.mktemp("score")
    root = generate_synthetic_dataset(tmp / "data", n_images=6, image_size=SIZE)
    masks = tmp / "preds"
    masks.mkdir()
    for i in range(5):
        shutil.copy(root / "masks" / f"syn_{i:05d}.png", masks / f"syn_{i:05d}.png")
    Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(masks / "orphan.png")
    (masks / "notes.txt").write_text("not a mask")
    g = QualityPredictor(backbone="resnet18")
    predictor = tmp / "g.ckpt"
    torch.save({"state_dict": g.state_dict(), "hyper_parameters": dict(g.hparams)}, predictor)
    return {"images": root / "images", "masks": masks, "predictor": predictor}


def test_pair_files_reports_everything_unpaired(folder: dict[str, Path]) -> None:
    pairs = pair_files(folder["images"], folder["masks"])
    assert pairs.ids == [f"syn_{i:05d}" for i in range(5)]
    assert [p.name for p in pairs.unpaired_images] == ["syn_00005.png"]
    assert [p.name for p in pairs.unpaired_masks] == ["orphan.png"]
    assert [Path(p).name for p in pairs.ignored] == ["notes.txt"]
    assert pairs.n_problems == 3
    with pytest.raises(FileNotFoundError, match="--masks folder"):
        pair_files(folder["images"], folder["masks"] / "missing")


def test_score_masks_values_and_worst_first(tmp_path: Path) -> None:
    images = tmp_path / "i"
    masks = tmp_path / "m"
    images.mkdir()
    masks.mkdir()
    areas = {"a": 10, "b": 2, "c": 30}
    for name, side in areas.items():
        Image.new("RGB", (SIZE, SIZE), (90, 60, 50)).save(images / f"{name}.png")
        m = np.zeros((SIZE, SIZE), np.uint8)
        m[:side, :side] = 255
        Image.fromarray(m).save(masks / f"{name}.png")
    pairs = pair_files(images, masks)
    records = score_masks(Coverage(), pairs.image_paths, pairs.mask_paths, ids=pairs.ids, image_size=SIZE)
    assert [r["id"] for r in records] == ["a", "b", "c"]  # input order
    for rec in records:
        assert rec["quality"] == pytest.approx(areas[rec["id"]] ** 2 / SIZE**2)
        assert rec["mask_fraction"] == pytest.approx(areas[rec["id"]] ** 2 / SIZE**2)
    out = write_scores(records, tmp_path / "s.csv")
    rows = list(csv.DictReader(out.open()))
    assert [r["id"] for r in rows] == ["b", "a", "c"]  # worst first


def test_score_masks_multiclass_columns(tmp_path: Path) -> None:
    Image.new("RGB", (SIZE, SIZE)).save(tmp_path / "x.png")
    labels = np.zeros((SIZE, SIZE), np.uint8)
    labels[:16] = 1
    labels[16:, :8] = 2
    Image.fromarray(labels).save(tmp_path / "x_mask.png")
    (rec,) = score_masks(Coverage(3), [tmp_path / "x.png"], [tmp_path / "x_mask.png"], image_size=SIZE)
    assert rec["quality_class1"] == pytest.approx(0.5) and rec["quality_class2"] == pytest.approx(0.125)
    assert rec["quality"] == pytest.approx(0.3125)
    header = (write_scores([rec], tmp_path / "s.csv")).read_text().splitlines()[0]
    assert header == "id,quality,quality_class1,quality_class2,mask_fraction,image,mask,error"
    assert rec["mask_fraction"] == pytest.approx(0.625)  # both classes count as foreground


def test_score_masks_bad_file(tmp_path: Path) -> None:
    Image.new("RGB", (SIZE, SIZE)).save(tmp_path / "a.png")
    Image.new("L", (SIZE, SIZE), 255).save(tmp_path / "a_m.png")
    Image.fromarray(np.full((SIZE, SIZE), 7, np.uint8)).save(tmp_path / "b_m.png")  # 7 is not binary
    paths = ([tmp_path / "a.png", tmp_path / "a.png"], [tmp_path / "a_m.png", tmp_path / "b_m.png"])
    with pytest.raises(DataValidationError, match="b_m.png.*--skip-bad"):
        score_masks(Coverage(), *paths, ids=["a", "b"], image_size=SIZE)
    records = score_masks(Coverage(), *paths, ids=["a", "b"], image_size=SIZE, skip_bad=True)
    assert records[1]["error"] and np.isnan(records[1]["quality"])
    rows = list(csv.DictReader(write_scores(records, tmp_path / "s.csv").open()))
    assert [r["id"] for r in rows] == ["a", "b"] and rows[1]["quality"] == ""  # unreadable last, no quality
    with pytest.raises(ValueError, match="pair up one to one"):
        score_masks(Coverage(), [tmp_path / "a.png"], [], image_size=SIZE)


def test_score_cli_end_to_end(folder: dict[str, Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "qc" / "scores.csv"
    args = ["score", "--predictor", str(folder["predictor"]), "--images", str(folder["images"]),
            "--masks", str(folder["masks"]), "--out", str(out), "--image-size", str(SIZE), "--worst", "3",
            "--no-progress"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    rows = list(csv.DictReader(out.open()))
    assert sorted(r["id"] for r in rows) == [f"syn_{i:05d}" for i in range(5)]
    qualities = [float(r["quality"]) for r in rows]
    assert qualities == sorted(qualities)  # worst first
    unpaired = (out.parent / "unpaired.txt").read_text()
    for name in ("syn_00005.png", "orphan.png", "notes.txt"):
        assert name in unpaired and name in printed
    assert (out.parent / "scores_worst.png").stat().st_size > 0
    meta = json.loads((out.parent / "scores_meta.json").read_text())
    assert meta["image_size"] == SIZE and meta["n_scored"] == 5 and meta["n_unpaired"] == 3


def test_score_cli_flags_empty_masks(folder: dict[str, Path], tmp_path: Path, capsys) -> None:
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for name in ("full", "hollow"):
        Image.new("RGB", (SIZE, SIZE), (120, 70, 60)).save(images / f"{name}.png")
    m = np.zeros((SIZE, SIZE), np.uint8)
    Image.fromarray(m).save(masks / "hollow.png")
    m[8:24, 8:24] = 255
    Image.fromarray(m).save(masks / "full.png")
    out = tmp_path / "scores.csv"
    assert main(["score", "--predictor", str(folder["predictor"]), "--images", str(images), "--masks", str(masks),
                 "--out", str(out), "--image-size", str(SIZE), "--worst", "0", "--no-progress"]) == 0  # fmt: skip
    assert "1 empty mask(s) (mask_fraction 0), e.g. hollow" in capsys.readouterr().out
    fractions = {r["id"]: float(r["mask_fraction"]) for r in csv.DictReader(out.open())}
    assert fractions == {"full": pytest.approx(0.25), "hollow": 0.0}
    assert json.loads((tmp_path / "scores_meta.json").read_text())["n_empty_masks"] == 1


def test_score_cli_missing_paths(folder: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="--predictor '.*nope.ckpt'.*--masks '.*absent'"):
        main(["score", "--predictor", str(tmp_path / "nope.ckpt"), "--images", str(folder["images"]),
              "--masks", str(tmp_path / "absent"), "--out", str(tmp_path / "s.csv")])  # fmt: skip
    with pytest.raises(ValueError, match="--out` must be a .csv"):
        main(["score", "--predictor", str(folder["predictor"]), "--images", str(folder["images"]),
              "--masks", str(folder["masks"]), "--out", str(tmp_path / "s.txt")])  # fmt: skip


def test_score_cli_tta(folder: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "tta.csv"
    args = ["score", "--predictor", str(folder["predictor"]), "--images", str(folder["images"]),
            "--masks", str(folder["masks"]), "--out", str(out), "--image-size", str(SIZE), "--worst", "0",
            "--no-progress", "--tta"]  # fmt: skip
    assert main(args) == 0
    assert json.loads((tmp_path / "tta_meta.json").read_text())["tta"] is True
    assert len(list(csv.DictReader(out.open()))) == 5


def test_score_masks_ensemble_records_the_spread(tmp_path: Path) -> None:
    from qg_lightning.quality.predictor import QualityEnsemble

    class Scaled(Coverage):
        def __init__(self, factor: float) -> None:
            super().__init__()
            self.factor = factor

        def forward(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
            return super().forward(images, masks) * self.factor

    Image.new("RGB", (SIZE, SIZE), (120, 70, 60)).save(tmp_path / "a.png")
    m = np.zeros((SIZE, SIZE), np.uint8)
    m[:, : SIZE // 2] = 255
    Image.fromarray(m).save(tmp_path / "a_mask.png")
    rows = score_masks(QualityEnsemble([Scaled(1.0), Scaled(0.5)]), [tmp_path / "a.png"], [tmp_path / "a_mask.png"],
                       image_size=SIZE)  # fmt: skip
    assert rows[0]["quality"] == pytest.approx(0.375) and rows[0]["quality_spread"] == pytest.approx(0.125)
    header = (write_scores(rows, tmp_path / "s.csv")).read_text().splitlines()[0]
    assert header == "id,quality,quality_spread,mask_fraction,image,mask,error"
    single = score_masks(Coverage(), [tmp_path / "a.png"], [tmp_path / "a_mask.png"], image_size=SIZE)
    assert "quality_spread" not in single[0]


def test_score_cli_ensemble_of_two_predictors(folder: dict[str, Path], tmp_path: Path, capsys) -> None:
    second = tmp_path / "g2.ckpt"
    torch.manual_seed(1)
    g = QualityPredictor(backbone="resnet18")
    torch.save({"state_dict": g.state_dict(), "hyper_parameters": dict(g.hparams)}, second)
    out = tmp_path / "ens.csv"
    rest = ["--images", str(folder["images"]), "--masks", str(folder["masks"]), "--image-size", str(SIZE),
            "--worst", "0", "--no-progress"]  # fmt: skip
    args = ["score", "--predictor", str(folder["predictor"]), str(second), "--out", str(out), *rest]
    assert main(args) == 0
    assert "with the mean of 2 predictors" in capsys.readouterr().out
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 5 and all(float(r["quality_spread"]) >= 0 for r in rows)
    singles = []
    for path in (folder["predictor"], second):
        one = tmp_path / f"{path.stem}.csv"
        assert main(["score", "--predictor", str(path), "--out", str(one), *rest]) == 0
        singles.append({r["id"]: float(r["quality"]) for r in csv.DictReader(one.open())})
    for r in rows:  # the mean of the two predictors, scored one at a time
        assert float(r["quality"]) == pytest.approx((singles[0][r["id"]] + singles[1][r["id"]]) / 2, abs=2e-6)
    meta = json.loads((tmp_path / "ens_meta.json").read_text())
    assert meta["predictors"] == [str(folder["predictor"]), str(second)]
    with pytest.raises(ValueError, match="given twice"):
        main(
            [
                "score",
                "--predictor",
                str(folder["predictor"]),
                str(folder["predictor"]),
                "--out",
                str(out),
                *rest,
            ]
        )

"""The supervised baseline: training on real data, test reports, overlays, optimiser schedule."""

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from qg_lightning.callbacks import TestOverlayCallback
from qg_lightning.data import SemiSupervisedDataModule, generate_synthetic_dataset
from qg_lightning.methods import SupervisedSegmenter

KVASIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "kvasir_seg"


def _trainer(tmp_path, **kw):
    args = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=str(tmp_path))  # fmt: skip
    args.update(kw)
    return L.Trainer(**args)


@pytest.mark.skipif(not (KVASIR / "images").is_dir(), reason="../shared/data/kvasir_seg is not available")
def test_trains_a_few_steps_on_kvasir(tmp_path):
    dm = SemiSupervisedDataModule(root=str(KVASIR), image_size=64, labeled_fraction=0.1, use_unlabeled=False,
                                  batch_size=4, seed=0)  # fmt: skip
    model = SupervisedSegmenter(encoder_name="resnet18", lr=1e-3)
    before = [p.clone() for p in model.parameters()]
    trainer = _trainer(tmp_path, max_epochs=1, limit_train_batches=3, limit_val_batches=2)
    trainer.fit(model, datamodule=dm)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert 0.0 <= float(trainer.callback_metrics["val/dice"]) <= 1.0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert (tmp_path / "split.json").is_file()
    assert len(dm.split.labeled) == round(0.1 * len(dm.split.train))


def test_test_report_and_overlays(tmp_path):
    root = generate_synthetic_dataset(tmp_path / "syn", n_images=20, image_size=32, seed=1)
    dm = SemiSupervisedDataModule(root=str(root), image_size=32, use_unlabeled=False, batch_size=4)
    model = SupervisedSegmenter(encoder_name="resnet18", num_classes=2)
    trainer = _trainer(
        tmp_path / "run", max_steps=1, limit_val_batches=1, callbacks=[TestOverlayCallback(n_images=3)]
    )
    trainer.fit(model, datamodule=dm)
    model.test_tag = "best"
    trainer.test(model, datamodule=dm, verbose=False)
    run = tmp_path / "run"
    report = json.loads((run / "test_metrics_best.json").read_text())
    assert set(report["metrics"]) == {"dice", "iou", "hd95"}
    assert report["metrics"]["dice"]["n"] == len(dm.split.test)
    assert {"mean", "std", "n"} <= set(report["metrics"]["hd95"])
    rows = (run / "test_per_image_best.csv").read_text().splitlines()
    assert rows[0] == "id,dice,iou,hd95" and len(rows) == len(dm.split.test) + 1
    assert sorted(r.split(",")[0] for r in rows[1:]) == sorted(dm.split.test)
    assert (run / "test_overlays_best.png").is_file()


def test_multi_class_report_averages_each_class_over_the_images_that_have_it(three_class_root, tmp_path):
    """Rule (c): for K > 2 the test report leaves a class out of the images whose truth lacks it, per class,
    and says so; what it leaves out is counted."""
    dm = SemiSupervisedDataModule(root=str(three_class_root), mask_dir="masks_3class", num_classes=3, image_size=32,
                                  use_unlabeled=False, batch_size=4, val_fraction=0.3, test_fraction=0.3)  # fmt: skip
    model = SupervisedSegmenter(encoder_name="resnet18", num_classes=3)
    assert model.test_metrics.absent_classes == "skip" == model.val_metrics.absent_classes
    assert SupervisedSegmenter(encoder_name="resnet18").test_metrics.absent_classes == "count"  # binary
    trainer = _trainer(tmp_path / "run")
    assert "val/dice_class2" in trainer.validate(model, datamodule=dm, verbose=False)[0]
    model.test_tag = "best"
    logged = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert {"test/dice", "test/dice_class1", "test/dice_class2", "test/hd95_class2"} <= set(logged)
    report = json.loads((tmp_path / "run" / "test_metrics_best.json").read_text())
    assert report["absent_classes"] == "skip" and "left out" in report["absent_classes_rule"]
    truth = torch.cat([b["mask"] for b in dm.test_dataloader()])
    has_class2 = int((truth == 2).flatten(1).any(1).sum())
    class2 = report["metrics"]["per_class"]["class2"]["dice"]
    assert class2["n"] == has_class2 and class2["n"] + class2["n_absent"] == len(dm.split.test)
    assert 0 < has_class2 < len(dm.split.test)  # the fixture leaves class 2 out of every third image
    header = (tmp_path / "run" / "test_per_image_best.csv").read_text().splitlines()[0]
    assert header == "id,dice,iou,hd95,dice_class1,dice_class2,iou_class1,iou_class2,hd95_class1,hd95_class2"


def test_cosine_schedule_reaches_min_lr(tmp_path):
    root = generate_synthetic_dataset(tmp_path / "syn", n_images=12, image_size=32, seed=2)
    dm = SemiSupervisedDataModule(root=str(root), image_size=32, use_unlabeled=False, batch_size=2)
    model = SupervisedSegmenter(encoder_name="resnet18", lr=1e-2, min_lr=1e-4, warmup_steps=2)
    trainer = _trainer(tmp_path, max_steps=6, limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    sched = trainer.lr_scheduler_configs[0].scheduler
    factors = [sched.lr_lambdas[0](s) for s in range(7)]
    assert factors[0] < factors[1] < factors[2]  # warm-up
    assert factors[2] == pytest.approx(1.0)
    assert factors[6] == pytest.approx(1e-2)  # min_lr / lr at the end
    assert all(a >= b for a, b in zip(factors[2:], factors[3:], strict=False))


def test_predict_step_returns_label_maps():
    model = SupervisedSegmenter(encoder_name="resnet18", num_classes=3)
    out = model.predict_step({"image": torch.rand(2, 3, 32, 32), "id": ["a", "b"]}, 0)
    assert out["preds"].shape == (2, 32, 32) and out["preds"].dtype == torch.long and out["id"] == ["a", "b"]
    assert int(out["preds"].max()) <= 2

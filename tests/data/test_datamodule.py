"""Tests for qg_lightning.data.datamodule: batches, CombinedLoader cycling, seeding, split.json, real data."""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import CombinedLoader
from PIL import Image

from qg_lightning.data.datamodule import (
    SeededSampler,
    SegmentationDataset,
    SemiSupervisedDataModule,
    derive_seed,
)
from qg_lightning.data.folder import DataValidationError
from qg_lightning.data.splits import Split
from qg_lightning.data.synthetic import generate_synthetic_dataset

KVASIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "kvasir_seg"


@pytest.fixture(scope="module")
def syn_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 labeled pairs (40 px) plus 5 extra unlabeled images."""
    return generate_synthetic_dataset(
        tmp_path_factory.mktemp("syn") / "d", n_images=24, image_size=40, n_unlabeled=5
    )


def _dm(root: Path, **kwargs) -> SemiSupervisedDataModule:
    args = {"root": str(root), "image_size": 32, "batch_size": 2, "n_labeled": 4, **kwargs}
    dm = SemiSupervisedDataModule(**args)
    dm.setup("fit")
    return dm


def _first(loader: CombinedLoader) -> dict:
    batch, _, _ = next(iter(loader))
    return batch


# ----------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_classes": 1}, "num_classes"),
        ({"in_channels": 2}, "in_channels"),
        ({"image_size": 4}, "image_size"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"test_fraction": -0.1}, "test_fraction"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "val_fraction"),
        ({"n_labeled": 0}, "n_labeled"),
        ({"labeled_fraction": 0.0}, "labeled_fraction"),
        ({"n_labeled": 3, "labeled_fraction": 0.5}, "labeled_fraction"),
        ({"batch_size": 0}, "batch_size"),
        ({"unlabeled_batch_size": 0}, "unlabeled_batch_size"),
        ({"num_workers": -1}, "num_workers"),
        ({"labeled_augment": "heavy"}, "labeled_augment"),
        ({"unlabeled_views": "strong"}, "unlabeled_views"),
        ({"synthetic_images": 2}, "synthetic_images"),
        ({"synthetic_size": 8}, "synthetic_size"),
        ({"seed": 1.5}, "seed"),
        ({"root": 3}, "root"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        SemiSupervisedDataModule(**kwargs)


def test_hyperparameters_saved() -> None:
    dm = SemiSupervisedDataModule(root="somewhere", n_labeled=5, in_channels=1)
    assert dm.hparams.n_labeled == 5 and dm.hparams.in_channels == 1 and dm.hparams.root == "somewhere"
    assert dm.unlabeled_batch_size == 16
    with pytest.raises(RuntimeError, match="setup"):
        dm.train_dataloader()


# ----------------------------------------------------------------------------- batches


@pytest.mark.parametrize("in_channels", [1, 3])
def test_batch_shapes_dtypes_ranges(syn_root: Path, in_channels: int) -> None:
    dm = _dm(syn_root, in_channels=in_channels, unlabeled_views="weak_strong")
    loader = dm.train_dataloader()
    assert isinstance(loader, CombinedLoader)
    batch = _first(loader)
    labeled, unlabeled = batch["labeled"], batch["unlabeled"]
    assert labeled["image"].shape == (2, in_channels, 32, 32) and labeled["image"].dtype == torch.float32
    assert 0.0 <= labeled["image"].min() and labeled["image"].max() <= 1.0
    assert labeled["mask"].shape == (2, 32, 32) and labeled["mask"].dtype == torch.long
    assert set(labeled["mask"].unique().tolist()) <= {0, 1}
    assert isinstance(labeled["id"], list) and all(i in dm.split.labeled for i in labeled["id"])
    assert set(unlabeled) == {"image", "image_strong", "id"}  # never a mask
    assert unlabeled["image"].shape == unlabeled["image_strong"].shape == (4, in_channels, 32, 32)
    assert unlabeled["image_strong"].dtype == torch.float32 and unlabeled["image_strong"].max() <= 1.0
    for name in ("val", "test"):
        eval_batch = next(iter(getattr(dm, f"{name}_dataloader")()))
        assert (
            eval_batch["image"].shape[1:] == (in_channels, 32, 32) and eval_batch["mask"].dtype == torch.long
        )
    predict = next(iter(dm.predict_dataloader()))
    assert {"image", "mask", "id"} <= set(predict) and all(i in dm.split.test for i in predict["id"])


def test_unlabeled_set_and_describe(syn_root: Path) -> None:
    dm = _dm(syn_root, n_labeled=5)
    split = dm.split
    assert (len(split.train), len(split.val), len(split.test), len(split.labeled)) == (16, 4, 4, 5)
    unlabeled = dm.datasets["unlabeled"]
    assert unlabeled.mask_paths is None
    assert unlabeled.ids == split.unlabeled + [f"unl_{j:05d}" for j in range(5)]
    info = dm.describe()
    assert info["n_labeled"] == 5 and info["n_unlabeled_train"] == 11 and info["n_unlabeled_extra"] == 5
    assert info["n_unlabeled_used"] == 16 and info["n_pairs"] == 24 and info["n_skipped"] == 0
    assert dm.label_ratio == pytest.approx(5 / 16) and info["label_ratio"] == pytest.approx(5 / 16, abs=1e-4)
    assert "make_split" in info["split_source"]


def test_max_size_cycle_epoch(syn_root: Path) -> None:
    """Labeled: 4 ids / batch 2 = 2 batches; unlabeled: 17 / batch 3 = 5 (drop_last); 5 steps per epoch."""
    dm = _dm(syn_root, n_labeled=4, unlabeled_batch_size=3)
    loader = dm.train_dataloader()
    assert dm.describe()["n_unlabeled_used"] == 17
    assert len(loader.iterables["labeled"]) == 2 and len(loader.iterables["unlabeled"]) == 5
    steps = list(loader)
    assert len(steps) == len(loader) == 5
    labeled_ids = [i for batch, _, _ in steps for i in batch["labeled"]["id"]]
    unlabeled_ids = [i for batch, _, _ in steps for i in batch["unlabeled"]["id"]]
    assert len(labeled_ids) == 10 and set(labeled_ids) == set(dm.split.labeled)  # cycled 2.5 times
    assert len(unlabeled_ids) == 15 == len(set(unlabeled_ids))  # one pass, last partial batch dropped
    assert all(len(batch["unlabeled"]["id"]) == 3 for batch, _, _ in steps)


def test_small_set_keeps_partial_batch(syn_root: Path) -> None:
    dm = _dm(syn_root, n_labeled=3, batch_size=4)
    batches = list(dm.train_dataloader().iterables["labeled"])
    assert [len(b["id"]) for b in batches] == [3]


def test_supervised_only(syn_root: Path) -> None:
    dm = _dm(syn_root, use_unlabeled=False)
    batch = _first(dm.train_dataloader())
    assert set(batch) == {"labeled"} and dm.describe()["n_unlabeled_used"] == 0
    full = _dm(syn_root, n_labeled=None)  # all of train labeled but ROOT/unlabeled still gives unlabeled data
    assert len(full.split.labeled) == 16 and len(full.datasets["unlabeled"]) == 5


def test_no_unlabeled_data_gives_labeled_only(tmp_path: Path) -> None:
    root = generate_synthetic_dataset(tmp_path / "d", n_images=10, image_size=32)
    dm = _dm(root, n_labeled=None, labeled_augment="strong", cache_images=False)
    assert set(_first(dm.train_dataloader())) == {"labeled"}


# ----------------------------------------------------------------------------- determinism


def _images(loader: CombinedLoader, steps: int = 2) -> list[torch.Tensor]:
    out = []
    for k, (batch, _, _) in enumerate(loader):
        if k == steps:
            break
        out += [batch["labeled"]["image"], batch["unlabeled"]["image"]]
    return out


def test_same_seed_same_batches_any_workers(syn_root: Path) -> None:
    a = _images(_dm(syn_root, seed=3).train_dataloader())
    b = _images(_dm(syn_root, seed=3, num_workers=2, cache_images=False).train_dataloader())
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    c = _images(_dm(syn_root, seed=4).train_dataloader())
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_epochs_and_cycles_draw_fresh_augmentations(syn_root: Path) -> None:
    dm = _dm(syn_root, n_labeled=4, batch_size=4)
    loader = dm.train_dataloader().iterables["labeled"]

    def by_id() -> dict[str, torch.Tensor]:
        batch = next(iter(loader))
        return dict(zip(batch["id"], batch["image"], strict=True))

    first, second = by_id(), by_id()  # two passes in one epoch (the labeled loader cycles)
    assert any(not torch.equal(first[i], second[i]) for i in first)
    loader.sampler.set_epoch(0)  # same epoch again: passes go on, no replay
    assert any(not torch.equal(first[i], img) for i, img in by_id().items())
    loader.sampler.set_epoch(1)
    assert any(not torch.equal(first[i], img) for i, img in by_id().items())
    loader.sampler.set_epoch(0)  # back to epoch 0: its first pass is replayed exactly
    replay = by_id()
    assert all(torch.equal(first[i], replay[i]) for i in first)


def test_sampler_follows_trainer_epoch() -> None:
    """Lightning builds the first iterator before calling set_epoch (also on resume): use the trainer's."""
    epoch = {"now": 3}
    sampler = SeededSampler(6, seed=0, stream=1, epoch_source=lambda: epoch["now"])
    resumed = list(sampler)
    sampler.set_epoch(3)  # Lightning's call arrives after the first pass: it must not restart the passes
    second = list(sampler)
    reference = SeededSampler(6, seed=0, stream=1)
    reference.set_epoch(3)
    assert resumed == list(reference) and second == list(reference)
    epoch["now"] = 4
    reference.set_epoch(4)
    assert list(sampler) == list(reference)


def test_seeded_sampler_and_derive_seed() -> None:
    sampler = SeededSampler(10, seed=0, stream=1)
    order = [i for i, _ in sampler]
    assert sorted(order) == list(range(10)) and order != list(range(10)) and len(sampler) == 10
    plain = SeededSampler(5, seed=0, shuffle=False)
    assert [i for i, _ in plain] == list(range(5))
    assert derive_seed(0, 1) != derive_seed(1, 0) and 0 <= derive_seed(2**40, -1) < 2**63
    with pytest.raises(ValueError, match="num_samples"):
        SeededSampler(-1, seed=0)


def test_segmentation_dataset_standalone(syn_root: Path) -> None:
    images = sorted((syn_root / "unlabeled").iterdir())
    dataset = SegmentationDataset(images, None, in_channels=1)
    item = dataset[0]
    assert set(item) == {"image", "id"} and item["image"].shape == (1, 40, 40) and item["id"] == "unl_00000"
    with pytest.raises(ValueError, match="mask_paths"):
        SegmentationDataset(images, images[:1])


# ----------------------------------------------------------------------------- split files and split.json


def test_split_file_in_root_and_explicit(syn_root: Path, tmp_path: Path) -> None:
    ids = [f"syn_{i:05d}" for i in range(24)]
    custom = Split(train=ids[:10], val=ids[10:14], test=ids[14:18], labeled=ids[:2])
    path = custom.save(tmp_path / "custom.json")
    dm = _dm(syn_root, split_file=str(path), n_labeled=None)
    assert dm.split == custom and dm.describe()["split_source"] == str(path)
    dm = _dm(syn_root, split_file=str(path), n_labeled=3)  # argument overrides the file's labeled list
    assert len(dm.split.labeled) == 3 and dm.split.val == custom.val
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": ids[:3] + ["ghost"], "val": ids[2:4]}))
    with pytest.raises(ValueError, match=r"train/val: 'syn_00002'"):
        _dm(syn_root, split_file=str(bad))
    bad.write_text(json.dumps({"train": ids[:3] + ["ghost"], "val": ids[4:6]}))
    with pytest.raises(ValueError, match="not in the dataset folder: 'ghost'"):
        _dm(syn_root, split_file=str(bad))


def test_default_split_json_in_root(tmp_path: Path) -> None:
    root = generate_synthetic_dataset(tmp_path / "d", n_images=8, image_size=32)
    ids = [f"syn_{i:05d}" for i in range(8)]
    Split(train=ids[:5], val=ids[5:7], test=ids[7:]).save(root / "split.json")
    dm = _dm(root, n_labeled=None)
    assert dm.split.train == ids[:5] and dm.describe()["split_source"].endswith("split.json")


def test_n_labeled_too_large(syn_root: Path) -> None:
    with pytest.raises(ValueError, match=r"n_labeled.*=17.*16 ids"):
        _dm(syn_root, n_labeled=17)


def test_bad_folder_fails_before_training_and_skip_bad(tmp_path: Path) -> None:
    root = generate_synthetic_dataset(tmp_path / "d", n_images=10, image_size=32)
    (root / "masks" / "syn_00004.png").write_bytes(b"")
    with pytest.raises(DataValidationError, match="masks/syn_00004.png"):
        _dm(root)
    dm = _dm(root, skip_bad=True, n_labeled=2)
    assert "syn_00004" not in dm.split.train + dm.split.val + dm.split.test
    assert dm.describe()["n_skipped"] == 1 and dm.describe()["n_pairs"] == 9


def test_split_json_written_to_log_dir(syn_root: Path, tmp_path: Path) -> None:
    trainer = L.Trainer(default_root_dir=tmp_path / "plain", logger=False, enable_progress_bar=False)
    dm = SemiSupervisedDataModule(root=str(syn_root), image_size=32, n_labeled=4)
    dm.trainer = trainer
    dm.setup("fit")
    assert Split.from_dict(json.loads((tmp_path / "plain" / "split.json").read_text())) == dm.split
    logger = CSVLogger(tmp_path / "logs", name="run")
    trainer = L.Trainer(default_root_dir=tmp_path, logger=logger, enable_progress_bar=False)
    dm.trainer = trainer
    dm.setup("validate")
    assert (Path(logger.log_dir) / "split.json").is_file()


class _TinyModule(L.LightningModule):
    """One 1x1 convolution trained on the labeled masks; records which batch keys it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 1)
        self.seen: list[set[str]] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.seen.append(set(batch))
        logits = self.conv(batch["labeled"]["image"])[:, 0]
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["labeled"]["mask"].float())

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.log("val/loss", self.conv(batch["image"]).mean(), batch_size=len(batch["id"]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_fit_with_trainer_fast_dev_run(syn_root: Path, tmp_path: Path) -> None:
    dm = SemiSupervisedDataModule(root=str(syn_root), image_size=32, n_labeled=4, batch_size=2)
    model = _TinyModule()
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        fast_dev_run=2,
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    assert model.seen == [{"labeled", "unlabeled"}] * 2
    assert (tmp_path / "split.json").is_file()  # fast_dev_run has no real logger: default_root_dir
    assert dm.state_dict()["split"] == dm.split.to_dict()


class _RecordingModule(_TinyModule):
    """Records a fingerprint of every training batch (epoch, ids, pixel sums)."""

    def __init__(self) -> None:
        super().__init__()
        self.record: list[tuple] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        labeled, unlabeled = batch["labeled"], batch["unlabeled"]
        sums = (round(labeled["image"].sum().item(), 3), round(unlabeled["image"].sum().item(), 3))
        self.record.append((self.current_epoch, tuple(labeled["id"]), tuple(unlabeled["id"]), sums))
        return super().training_step(batch, batch_idx)


def test_resume_replays_the_same_batches(syn_root: Path, tmp_path: Path) -> None:
    """An uninterrupted 2-epoch fit and a fit resumed after epoch 1 see identical batches in epoch 2."""

    def fit(max_epochs: int, ckpt: str | None = None) -> tuple[_RecordingModule, L.Trainer]:
        dm = SemiSupervisedDataModule(root=str(syn_root), image_size=32, n_labeled=4, batch_size=2)
        model = _RecordingModule()
        trainer = L.Trainer(
            default_root_dir=tmp_path,
            max_epochs=max_epochs,
            limit_train_batches=3,
            limit_val_batches=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt)
        return model, trainer

    full, _ = fit(2)
    first, trainer = fit(1)
    trainer.save_checkpoint(tmp_path / "epoch1.ckpt")
    resumed, _ = fit(2, str(tmp_path / "epoch1.ckpt"))
    assert first.record == [r for r in full.record if r[0] == 0]
    assert resumed.record == [r for r in full.record if r[0] == 1] and len(resumed.record) == 3
    assert full.record[0][1:] != full.record[3][1:]  # epochs differ


def test_state_dict_restores_split(syn_root: Path) -> None:
    source = _dm(syn_root, seed=1)
    target = _dm(syn_root, seed=2)
    assert target.split != source.split
    with pytest.warns(UserWarning, match="different split"):
        target.load_state_dict(source.state_dict())
    assert target.split == source.split
    assert target.datasets["labeled"].ids == source.split.labeled


# ----------------------------------------------------------------------------- embedded and real data


def test_embedded_synthetic_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QG_LIGHTNING_CACHE", str(tmp_path / "cache"))
    dm = SemiSupervisedDataModule(
        synthetic_images=20, synthetic_size=32, image_size=32, labeled_fraction=0.5, batch_size=4
    )
    assert str(dm.data_root).startswith(str(tmp_path / "cache"))
    dm.prepare_data()
    dm.setup("fit")
    assert dm.describe()["n_pairs"] == 20 and len(dm.split.labeled) == 7
    assert _first(dm.train_dataloader())["labeled"]["image"].shape == (4, 3, 32, 32)


@pytest.mark.skipif(not KVASIR.is_dir(), reason=f"Kvasir-SEG development copy not found at {KVASIR}")
def test_kvasir_seg_scan_and_batch(tmp_path: Path) -> None:
    start = time.perf_counter()
    dm = SemiSupervisedDataModule(
        root=str(KVASIR), image_size=64, n_labeled=50, batch_size=2, cache_images=False
    )
    dm.setup("fit")
    elapsed = time.perf_counter() - start
    info = dm.describe()
    assert info["n_pairs"] == 640 and info["n_labeled"] == 50 and info["n_skipped"] == 0
    assert elapsed < 30, f"validating kvasir_seg took {elapsed:.1f} s"
    batch = _first(dm.train_dataloader())
    assert batch["labeled"]["image"].shape == (2, 3, 64, 64)
    assert set(batch["labeled"]["mask"].unique().tolist()) <= {0, 1}
    assert batch["unlabeled"]["image"].shape == (4, 3, 64, 64)
    with Image.open(KVASIR / "images" / f"{batch['labeled']['id'][0]}.png") as img:
        assert img.size == (256, 256)
    assert np.isfinite(batch["labeled"]["image"].numpy()).all()

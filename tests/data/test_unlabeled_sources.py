"""External unlabeled folders, hidden masks of unlabeled images (analysis only) and a second mask folder."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from qg_lightning.data import SemiSupervisedDataModule
from qg_lightning.data.folder import DataValidationError, scan_folder, scan_image_folder
from qg_lightning.data.synthetic import generate_synthetic_dataset

NEOPOLYP = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "neopolyp"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic_dataset(tmp_path_factory.mktemp("syn") / "d", n_images=24, image_size=40)


@pytest.fixture(scope="module")
def external(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("other_source")
    rng = np.random.default_rng(0)
    for i in range(7):
        Image.fromarray(rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)).save(folder / f"ext_{i}.jpg")
    return folder


def _dm(root: Path, **kwargs) -> SemiSupervisedDataModule:
    args = {"root": str(root), "image_size": 32, "batch_size": 2, "unlabeled_batch_size": 3, **kwargs}
    dm = SemiSupervisedDataModule(**args)
    dm.setup("fit")
    return dm


def test_external_unlabeled_folder_joins_the_unlabeled_set(root: Path, external: Path) -> None:
    dm = _dm(root, unlabeled_root=str(external))  # every train image labeled, as in the paper's protocol
    info = dm.describe()
    assert info["label_ratio"] == 1.0 and info["n_unlabeled_train"] == 0
    assert info["n_unlabeled_external"] == 7 == info["n_unlabeled_used"]
    assert dm.datasets["unlabeled"].ids == [f"ext_{i}" for i in range(7)]
    assert not dm.unlabeled_have_masks
    batch, _, _ = next(iter(dm.train_dataloader()))
    assert set(batch["unlabeled"]) == {"image", "id"} and batch["unlabeled"]["image"].shape == (3, 3, 32, 32)


def test_external_unlabeled_folder_errors_name_the_fix(root: Path, external: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="unlabeled_root"):
        SemiSupervisedDataModule(root=str(root), unlabeled_root=str(tmp_path / "missing"))
    clash = tmp_path / "clash"
    clash.mkdir()
    shutil.copy(root / "images" / "syn_00003.png", clash / "syn_00003.png")
    with pytest.raises(DataValidationError, match="syn_00003.*unique"):
        _dm(root, unlabeled_root=str(clash))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataValidationError, match="broken.png"):
        scan_image_folder(bad)


def test_true_masks_of_carved_out_unlabeled_images(root: Path) -> None:
    dm = _dm(root, n_labeled=4, unlabeled_true_masks=True, unlabeled_views="weak_strong")
    assert dm.unlabeled_have_masks
    batch, _, _ = next(iter(dm.train_dataloader()))
    unlabeled = batch["unlabeled"]
    assert set(unlabeled) == {"image", "image_strong", "id", "true_mask"}  # never under "mask"
    assert unlabeled["true_mask"].shape == (3, 32, 32) and unlabeled["true_mask"].dtype == torch.long
    # same geometry as the weak view: the mask is the one of the image id, through the same transform
    plain = _dm(root, n_labeled=4, unlabeled_views="weak_strong")
    other, _, _ = next(iter(plain.train_dataloader()))
    assert torch.equal(other["unlabeled"]["image"], unlabeled["image"])  # hidden masks change no draw


def test_true_masks_refused_when_some_unlabeled_images_have_none(root: Path, external: Path) -> None:
    with pytest.raises(ValueError, match="unlabeled_true_masks.*unlabeled_root: 7"):
        _dm(root, n_labeled=4, unlabeled_root=str(external), unlabeled_true_masks=True)


def test_mask_dir_serves_a_second_mask_folder(root: Path, tmp_path: Path) -> None:
    copy = tmp_path / "multi"
    shutil.copytree(root, copy)
    (copy / "masks_3class").mkdir()
    for path in sorted((copy / "masks").iterdir()):
        mask = (np.array(Image.open(path)) > 0).astype(np.uint8)
        mask[:, : mask.shape[1] // 2] *= 2  # left half of the lesion becomes class 2
        Image.fromarray(mask).save(copy / "masks_3class" / path.name)
    dm = _dm(copy, num_classes=3, mask_dir="masks_3class", use_unlabeled=False)
    values = torch.cat([b["mask"].unique() for b in dm.val_dataloader()]).unique().tolist()
    assert set(values) <= {0, 1, 2} and 2 in values
    assert dm.describe()["mask_dir"] == "masks_3class"
    with pytest.raises(DataValidationError, match="masks_none"):
        scan_folder(copy, mask_dir="masks_none")
    with pytest.raises(ValueError, match="mask_dir"):
        SemiSupervisedDataModule(root=str(copy), mask_dir="../masks")


@pytest.mark.skipif(not (NEOPOLYP / "masks_3class").is_dir(), reason="NeoPolyp not in ../shared/data")
def test_neopolyp_three_classes_served_in_place() -> None:
    dm = _dm(NEOPOLYP, num_classes=3, mask_dir="masks_3class", use_unlabeled=False, image_size=32)
    assert dm.describe()["n_pairs"] == 400

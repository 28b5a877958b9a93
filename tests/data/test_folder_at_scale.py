"""Bad data at scale: 1,000 image/mask pairs with a few broken files of every kind are reported in one pass.

The folder is built once per module (about a second): 1,000 tiny 16x16 pairs, then 8 ids broken in each of
nine ways. The guarantees checked here (README "Reliability"):

* one :class:`DataValidationError` lists *every* bad file with its problem (no truncation) and carries the
  same list as data (``err.problems``);
* through ``SemiSupervisedDataModule`` + ``Trainer.fit`` it is raised before any training step;
* ``skip_bad=True`` trains on exactly the remaining pairs and warns with the full list of skipped files.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import pytest
from PIL import Image

from qg_lightning.data import SemiSupervisedDataModule
from qg_lightning.data.folder import DataValidationError, scan_folder
from qg_lightning.methods import SupervisedSegmenter

N_PAIRS = 1000
PER_KIND = 8
SIZE = 16
# kind -> words the reason must contain
KINDS = {
    "truncated_image": "truncated",
    "zero_byte_image": "0 bytes",
    "zero_byte_mask": "0 bytes",
    "cmyk_image": "mode CMYK",
    "image_16bit": "16/32-bit",
    "mask_16bit": "16/32-bit",
    "stray_labels": "mask values",
    "image_without_mask": "image has no mask",
    "mask_without_image": "mask has no image",
}
N_BAD_IDS = PER_KIND * len(KINDS)


def _break(root: Path, id_: str, kind: str, rng: np.random.Generator) -> str:
    """Break pair ``id_`` in the way ``kind``; return the relative path of the bad file."""
    image, mask = root / "images" / f"{id_}.png", root / "masks" / f"{id_}.png"
    if kind == "truncated_image":
        data = image.read_bytes()
        image.write_bytes(data[: len(data) // 2])
    elif kind == "zero_byte_image":
        image.write_bytes(b"")
    elif kind == "zero_byte_mask":
        mask.write_bytes(b"")
        return f"masks/{id_}.png"
    elif kind == "cmyk_image":  # CMYK needs JPEG or TIFF; images may be .jpg (masks must be .png)
        rgb = cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB)
        image.unlink()
        Image.fromarray(rgb).convert("CMYK").save(root / "images" / f"{id_}.jpg")
        return f"images/{id_}.jpg"
    elif kind == "image_16bit":  # half grayscale, half RGB (Pillow would silently cut 16-bit RGB to 8)
        channels = (SIZE, SIZE) if int(id_[-1]) % 2 else (SIZE, SIZE, 3)
        cv2.imwrite(str(image), rng.integers(0, 65536, channels, dtype=np.uint16))
    elif kind == "mask_16bit":
        cv2.imwrite(str(mask), (cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE) > 0).astype(np.uint16))
        return f"masks/{id_}.png"
    elif kind == "stray_labels":  # binary {0, 255} mask with a few anti-aliased edge values
        values = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE)
        values[0, :3] = (1, 128, 254)
        cv2.imwrite(str(mask), values)
        return f"masks/{id_}.png"
    elif kind == "image_without_mask":
        mask.unlink()
    elif kind == "mask_without_image":
        image.unlink()
        return f"masks/{id_}.png"
    return f"images/{id_}.png"


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """(root, {bad relative path: kind}): 1,000 pairs, 8 ids broken in each of the nine ways."""
    root = tmp_path_factory.mktemp("at_scale")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N_PAIRS, SIZE, SIZE, 3), dtype=np.uint8)
    masks = np.zeros((N_PAIRS, SIZE, SIZE), np.uint8)
    masks[:, 4:12, 4:12] = 255
    for k in range(N_PAIRS):
        cv2.imwrite(str(root / "images" / f"case_{k:04d}.png"), images[k])
        cv2.imwrite(str(root / "masks" / f"case_{k:04d}.png"), masks[k])
    ids = rng.choice(N_PAIRS, N_BAD_IDS, replace=False)  # spread over the folder, not the first files
    bad: dict[str, str] = {}
    for j, kind in enumerate(KINDS):
        for k in ids[j * PER_KIND : (j + 1) * PER_KIND]:
            bad[_break(root, f"case_{k:04d}", kind, rng)] = kind
    assert len(bad) == N_BAD_IDS
    return root, bad


def _problem_lines(message: str) -> dict[str, str]:
    """The ``  - rel/path: reason`` lines of a validation message."""
    return dict(re.findall(r"^  - (\S+): (.*)$", message, flags=re.MULTILINE))


def _assert_lists_every_bad_file(problems: dict[str, str], bad: dict[str, str]) -> None:
    assert set(problems) == set(bad), {"missing": set(bad) - set(problems), "extra": set(problems) - set(bad)}
    wrong = {
        rel: (KINDS[kind], problems[rel]) for rel, kind in bad.items() if KINDS[kind] not in problems[rel]
    }
    assert not wrong, wrong


def test_one_error_lists_every_bad_file(broken: tuple[Path, dict[str, str]]) -> None:
    root, bad = broken
    start = time.perf_counter()
    with pytest.raises(DataValidationError) as info:
        scan_folder(root)
    elapsed = time.perf_counter() - start
    message = str(info.value)
    assert message.startswith(f"Found {N_BAD_IDS} problem(s) in dataset folder '{root}'")
    assert "skip_bad=True" in message  # says how to go on
    _assert_lists_every_bad_file(_problem_lines(message), bad)  # all of them, in the message itself
    _assert_lists_every_bad_file(info.value.problems, bad)  # and as data on the exception
    assert info.value.root == root
    assert elapsed < 30, f"scanning {N_PAIRS} pairs took {elapsed:.1f} s"  # about 1 s on 2 CPU cores


def test_skip_bad_keeps_exactly_the_good_pairs(
    broken: tuple[Path, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    root, bad = broken
    with caplog.at_level(logging.WARNING, logger="qg_lightning.data.folder"):
        index = scan_folder(root, skip_bad=True)
    bad_ids = {Path(rel).stem for rel in bad}
    assert len(index.ids) == N_PAIRS - N_BAD_IDS
    assert set(index.ids) == {f"case_{k:04d}" for k in range(N_PAIRS)} - bad_ids
    _assert_lists_every_bad_file(index.skipped, bad)
    assert f"Skipping {N_BAD_IDS} bad file(s)" in caplog.text
    _assert_lists_every_bad_file(_problem_lines(caplog.text), bad)  # the warning lists every skipped file


class _StepRecorder(L.Callback):
    def __init__(self) -> None:
        self.batches = 0

    def on_train_batch_start(self, *args: object) -> None:
        self.batches += 1


def _trainer(tmp_path: Path, recorder: _StepRecorder) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[recorder],
    )


def _datamodule(root: Path, *, skip_bad: bool) -> SemiSupervisedDataModule:
    return SemiSupervisedDataModule(
        root=str(root), image_size=32, batch_size=4, val_fraction=0.1, test_fraction=0.1, skip_bad=skip_bad
    )


def test_fit_fails_before_any_training_step(broken: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    root, bad = broken
    recorder = _StepRecorder()
    trainer = _trainer(tmp_path, recorder)
    model = SupervisedSegmenter(encoder_name="resnet18", in_channels=3, num_classes=2)
    with pytest.raises(DataValidationError) as info:
        trainer.fit(model, datamodule=_datamodule(root, skip_bad=False))
    assert recorder.batches == 0 and trainer.global_step == 0
    _assert_lists_every_bad_file(info.value.problems, bad)
    _assert_lists_every_bad_file(_problem_lines(str(info.value)), bad)


def test_fit_with_skip_bad_trains_on_the_remaining_pairs(
    broken: tuple[Path, dict[str, str]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root, bad = broken
    recorder = _StepRecorder()
    trainer = _trainer(tmp_path, recorder)
    model = SupervisedSegmenter(encoder_name="resnet18", in_channels=3, num_classes=2)
    dm = _datamodule(root, skip_bad=True)
    with caplog.at_level(logging.WARNING, logger="qg_lightning.data.folder"):
        trainer.fit(model, datamodule=dm)
    assert recorder.batches == 1 and trainer.global_step == 1
    info = dm.describe()
    assert info["n_pairs"] == N_PAIRS - N_BAD_IDS and info["n_skipped"] == N_BAD_IDS
    assert info["n_train"] + info["n_val"] + info["n_test"] == N_PAIRS - N_BAD_IDS
    used = set(dm.split.train) | set(dm.split.val) | set(dm.split.test)
    assert not used & {Path(rel).stem for rel in bad}
    assert f"Skipping {N_BAD_IDS} bad file(s)" in caplog.text

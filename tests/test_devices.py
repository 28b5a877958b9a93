"""The paths a GPU takes, checked on every device this machine has.

On a GPU the quality data module corrupts masks, warps images and thresholds snapshot probabilities on the
training device (``on_after_batch_transfer``), the corruption kernels take their batched torch path instead of
OpenCV, and the guidance callback moves the frozen predictor to the host's device and precision. Each test here
runs on the CPU everywhere and again on CUDA where a GPU is present (the CUDA cases are skipped otherwise;
``benchmarks/device/run.sh`` runs this file on a lent GPU).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device

from qg_lightning.data import SemiSupervisedDataModule, generate_synthetic_dataset
from qg_lightning.guidance import QualityReweightCallback
from qg_lightning.methods import PseudoLabelSegmenter, SupervisedSegmenter
from qg_lightning.quality import CorruptionSampler
from qg_lightning.quality.corruptions.registry import BLOB, CATASTROPHIC, HEAVY, MAIN, MULTICLASS
from qg_lightning.quality.datamodule import QUALITY_CATEGORIES, QualityDataModule
from qg_lightning.quality.predictor import QualityPredictor
from qg_lightning.quality.sampling import dice_target
from qg_lightning.quality.snapshots import SnapshotCallback

_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=_CUDA)]
# (device, Lightning precision): bf16-mixed runs on both; fp16 with a gradient scaler only on CUDA
PRECISIONS = [
    ("cpu", "32-true"),
    ("cpu", "bf16-mixed"),
    pytest.param("cuda", "32-true", marks=_CUDA),
    pytest.param("cuda", "bf16-mixed", marks=_CUDA),
    pytest.param("cuda", "16-mixed", marks=_CUDA),
]
SIZE = 32


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic_dataset(tmp_path_factory.mktemp("syn"), n_images=24, image_size=SIZE, seed=7)


@pytest.fixture(scope="module")
def snapshots(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One weak-model snapshot (epoch 1), trained on the CPU: the data module serves it on any device."""
    out = tmp_path_factory.mktemp("snaps")
    dm = SemiSupervisedDataModule(
        root=str(root), image_size=SIZE, labeled_fraction=0.5, use_unlabeled=False, batch_size=4
    )
    trainer = L.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=0, logger=False,
                        callbacks=[SnapshotCallback(epochs=[1], dirpath=str(out))], enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                        default_root_dir=str(out))  # fmt: skip
    torch.manual_seed(0)
    trainer.fit(SupervisedSegmenter(encoder_name="resnet18", encoder_weights=None), datamodule=dm)
    return out


def _qdm(root: Path, snapshots: Path | None = None) -> QualityDataModule:
    extra: dict = {"p_weak": 0.0}
    if snapshots is not None:
        extra = {"p_weak": 0.5, "snapshots": [str(snapshots)], "snapshot_policy": "all",
                 "snapshot_threshold": [0.2, 0.8]}  # fmt: skip
    return QualityDataModule(root=str(root), image_size=SIZE, samples_per_image=3, batch_size=8,
                             labeled_fraction=0.5, seed=0, **extra)  # fmt: skip


def _trainer(device: str, precision: str, tmp_path: Path, callbacks: list | None = None) -> L.Trainer:
    return L.Trainer(accelerator=device, devices=1, precision=precision, max_steps=3, limit_val_batches=1,
                     num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, gradient_clip_val=1.0, callbacks=callbacks or [],
                     default_root_dir=str(tmp_path))  # fmt: skip


# -------------------------------------------------------------------------------- corruption recipe
def _rectangles(n: int, classes: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, classes, SIZE, SIZE, dtype=torch.uint8)
    for i in range(n):
        for c in range(classes):
            y, x = torch.randint(0, SIZE // 2, (2,), generator=g).tolist()
            h, w = torch.randint(0, SIZE // 2, (2,), generator=g).tolist()
            masks[i, c, y : y + h, x : x + w] = 1
    return masks


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("classes", [1, 2], ids=["binary", "two-class"])
def test_corruption_sampler_keeps_its_contract_on_the_device(device: str, classes: int) -> None:
    """Seeded, on the masks' device, binary, and the targets are the Dice of what it returns."""
    masks = _rectangles(48, classes).to(device)  # rectangles of many sizes, some samples empty
    sampler = CorruptionSampler()
    first = sampler(masks, generator=torch.Generator(device=device).manual_seed(3))
    again = sampler(masks, generator=torch.Generator(device=device).manual_seed(3))
    assert first.masks.device.type == first.quality.device.type == device
    assert first.masks.shape == masks.shape and first.masks.dtype == torch.uint8
    assert torch.equal(first.masks, again.masks) and torch.equal(first.quality, again.quality)
    assert set(first.masks.unique().tolist()) <= {0, 1}
    assert torch.allclose(first.quality, dice_target(first.masks.float(), masks.float()), atol=1e-6)
    assert len(set(first.name)) > 5  # a real mix, not one corruption


@contextlib.contextmanager
def _default_device(device: str) -> Iterator[None]:
    """torch's default device (where a tensor made without ``device=`` lands) set to ``device`` inside."""
    previous = torch.get_default_device()
    torch.set_default_device(device)
    try:
        yield
    finally:
        torch.set_default_device(previous)


@pytest.mark.parametrize("opencv", [True, False], ids=["opencv-path", "torch-path"])
def test_every_tensor_is_made_on_the_inputs_device(opencv: bool, root: Path, snapshots: Path) -> None:
    """No tensor of the recipe or of a training batch is made on torch's default device instead of the inputs'.
    On a GPU such a tensor would be a CPU tensor mixed into CUDA work; here the default device is ``meta``, so
    the CPU checks it: every corruption of every registry, the sampler, and training batches with snapshots."""
    backend = "auto" if opencv else "torch"
    binary, two = _rectangles(12, 1), _rectangles(12, 2)
    qdm = _qdm(root, snapshots)
    qdm.sampler = CorruptionSampler(qdm.sampler.probs, backend=backend)  # the data module's, on that path
    qdm.setup("fit")
    raw = next(iter(qdm.train_dataloader()))
    with _default_device("meta"):  # a tensor made without `device=` lands there; mixing it with ours fails
        for registry, masks in ((MAIN, binary), (HEAVY, binary), (CATASTROPHIC, binary), (BLOB, binary),
                                (MULTICLASS, two)):  # fmt: skip
            for name, spec in registry.items():
                out = spec(masks, generator=torch.Generator(device="cpu").manual_seed(0), backend=backend)
                assert out.device.type == "cpu", name
        for masks in (binary, two):
            sampler = CorruptionSampler(backend=backend)
            result = sampler(masks, generator=torch.Generator(device="cpu").manual_seed(1))
            assert result.masks.device.type == result.quality.device.type == "cpu"
        for index in range(3):
            batch = qdm.make_training_batch(raw, generator=torch.Generator(device="cpu").manual_seed(index),
                                            batch_index=index)  # fmt: skip
            assert all(value.device.type == "cpu" for value in batch.values())


# -------------------------------------------------------------------------------- quality data module
@pytest.mark.parametrize("device", DEVICES)
def test_training_batches_are_made_on_the_device(device: str, root: Path, snapshots: Path) -> None:
    """What ``on_after_batch_transfer`` does in a fit: warps, corruptions, snapshot thresholds and photometric
    jitter on the device the loader's batch was moved to; seeded there; the targets match the candidates."""
    qdm = _qdm(root, snapshots)
    qdm.setup("fit")
    raw = move_data_to_device(next(iter(qdm.train_dataloader())), torch.device(device))
    a = qdm.make_training_batch(raw, generator=torch.Generator(device=device).manual_seed(1))
    b = qdm.make_training_batch(raw, generator=torch.Generator(device=device).manual_seed(1))
    for key, value in a.items():
        assert value.device.type == device, key
        assert torch.equal(value, b[key]), key
    assert a["image"].dtype == torch.float32 and torch.isfinite(a["image"]).all()
    assert set(a["candidate"].unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(dice_target(a["candidate"], a["truth"]), a["quality"], atol=1e-6)
    assert ((a["quality"] >= 0) & (a["quality"] <= 1)).all()
    drawn = set()  # p_weak 0.5: snapshot masks and synthetic corruptions side by side, over a few batches
    for index, batch in enumerate(qdm.train_dataloader()):
        batch = move_data_to_device(batch, torch.device(device))
        made = qdm.make_training_batch(batch, generator=torch.Generator(device=device).manual_seed(index))
        drawn |= {QUALITY_CATEGORIES[int(i)] for i in made["category"].tolist()}
    assert "snapshot" in drawn and drawn - {"snapshot"}


# -------------------------------------------------------------------------------- predictor training
@pytest.mark.parametrize("device,precision", PRECISIONS)
def test_predictor_fits_on_the_device(device: str, precision: str, root: Path, snapshots: Path,
                                      tmp_path: Path) -> None:  # fmt: skip
    torch.manual_seed(0)
    model = QualityPredictor(backbone="resnet18", in_channels=3, num_classes=2, channels_last=True)
    trainer = _trainer(device, precision, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few-workers / small-dataset notices
        trainer.fit(model, datamodule=_qdm(root, snapshots))
    metrics = trainer.callback_metrics
    for key in ("train/loss", "val/loss", "val/mae"):
        assert torch.isfinite(metrics[key]), key
    assert next(model.parameters()).device.type == device and trainer.global_step == 3
    images = torch.rand(2, 3, SIZE, SIZE, device=device)
    masks = (torch.rand(2, 1, SIZE, SIZE, device=device) > 0.5).float()
    with torch.autocast(device, dtype=torch.bfloat16), torch.no_grad():
        q = model.eval()(images, masks)
    assert q.dtype == torch.float32 and ((q >= 0) & (q <= 1)).all()  # the head stays float32 under autocast


# -------------------------------------------------------------------------------- guidance
@pytest.mark.parametrize("device,precision", PRECISIONS)
def test_guided_host_gets_a_frozen_predictor_on_its_device(device: str, precision: str, root: Path,
                                                           predictor_ckpt: str, tmp_path: Path) -> None:  # fmt: skip
    torch.manual_seed(0)
    host = PseudoLabelSegmenter(arch="Unet", encoder_name="resnet18", encoder_weights=None, lr=1e-3,
                                unsup_warmup=0.0, unsup_ramp=0.0, weighting="none")  # fmt: skip
    cb = QualityReweightCallback(predictor=predictor_ckpt, mechanisms=["qw", "qar"], qw_warmup=0, qw_ramp=0,
                                 qar_warmup=0, qar_ramp=0)  # fmt: skip
    dm = SemiSupervisedDataModule(root=str(root), image_size=SIZE, labeled_fraction=0.3, batch_size=2,
                                  unlabeled_batch_size=2, seed=0)  # fmt: skip
    before = {k: v.clone() for k, v in torch.load(predictor_ckpt, weights_only=True)["state_dict"].items()}
    trainer = _trainer(device, precision, tmp_path, [cb])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(host, datamodule=dm)
    predictor = cb.loaded_predictor
    assert predictor is not None and not predictor.training
    params = list(predictor.parameters())
    assert all(p.device.type == device and not p.requires_grad for p in params)
    after = {k: v.cpu() for k, v in predictor.state_dict().items()}
    assert all(torch.equal(before[k].float(), after[k].float()) for k in before)  # frozen: never updated
    logged = trainer.callback_metrics
    for key in ("train/loss", "train/loss_qar", "train/q_mean", "train/w_mean"):
        assert torch.isfinite(logged[key]), key

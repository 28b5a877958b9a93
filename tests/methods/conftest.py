"""What the host tests share: a small synthetic dataset, its semi-supervised data module and a short CPU fit.

``host_dm`` and ``fit_host`` hand out functions (the tests pick views, steps and callbacks), as ``run_script``
does in ``tests/conftest.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import pytest

from qg_lightning.data import SemiSupervisedDataModule, generate_synthetic_dataset


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 synthetic 32 px images (one folder per test module)."""
    return generate_synthetic_dataset(tmp_path_factory.mktemp("syn"), n_images=24, image_size=32, seed=3)


def _host_dm(
    root: Path, views: str = "weak", *, unlabeled_batch_size: int = 2, truth: bool = False
) -> SemiSupervisedDataModule:
    """30 % of ``root`` labeled, 2 labeled images a batch, ``views`` of the unlabeled ones (and their hidden
    true masks when ``truth``)."""
    return SemiSupervisedDataModule(
        root=str(root), image_size=32, labeled_fraction=0.3, batch_size=2,
        unlabeled_batch_size=unlabeled_batch_size, unlabeled_views=views, seed=0, unlabeled_true_masks=truth,
    )  # fmt: skip


def _fit_host(
    model: L.LightningModule,
    dm: L.LightningDataModule,
    callbacks: Sequence[L.Callback] = (),
    tmp_path: Path | None = None,
    steps: int = 2,
    *,
    validate: bool = False,
) -> L.Trainer:
    """Fit ``model`` for ``steps`` optimizer steps on the CPU, quietly; ``validate``: one validation batch at
    the last step (otherwise no validation runs in so short a fit)."""
    schedule = dict(val_check_interval=steps, check_val_every_n_epoch=None) if validate else {}
    trainer = L.Trainer(
        max_steps=steps, limit_val_batches=1, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks), accelerator="cpu",
        default_root_dir=tmp_path, **schedule,
    )  # fmt: skip
    trainer.fit(model, datamodule=dm)
    return trainer


@pytest.fixture
def host_dm() -> Callable[..., SemiSupervisedDataModule]:
    """:func:`_host_dm`: ``host_dm(root, views="weak", *, unlabeled_batch_size=2, truth=False)``."""
    return _host_dm


@pytest.fixture
def fit_host() -> Callable[..., L.Trainer]:
    """:func:`_fit_host`: ``fit_host(model, dm, callbacks=(), tmp_path=None, steps=2, *, validate=False)``."""
    return _fit_host

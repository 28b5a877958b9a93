"""Fixtures shared across test modules."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
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


#: the shared data folder, beside the repository (tests that need it skip when it is absent)
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def three_class_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny folder with binary ``masks/`` and 3-class ``masks_3class/`` (values 0..2) of the same 24 images
    (40 px): the lesion's left half is class 2, except on every third image, which has class 1 only (an
    absent class, as in NeoPolyp)."""
    import numpy as np
    from PIL import Image

    from qg_lightning.data.synthetic import generate_synthetic_dataset

    root = generate_synthetic_dataset(tmp_path_factory.mktemp("three") / "d", n_images=24, image_size=40)
    (root / "masks_3class").mkdir()
    for i, path in enumerate(sorted((root / "masks").iterdir())):
        mask = (np.array(Image.open(path)) > 0).astype(np.uint8)
        if i % 3:
            mask[:, : mask.shape[1] // 2] *= 2
        Image.fromarray(mask).save(root / "masks_3class" / path.name)
    return root


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in tmp_path (relative run dirs land there) with the synthetic-data cache in tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QG_LIGHTNING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("sys.argv", ["qg-lightning"])  # the CLI gets its arguments from `args` only
    return tmp_path


def _run_script(
    tmp_path: Path, source: str, name: str, *args: str, timeout: int = 300
) -> subprocess.CompletedProcess:
    """Run ``source`` as ``tmp_path/name`` with ``tmp_path`` and ``args``, as a clean launch: Lightning picks a
    free port and starts rank 1 itself."""
    script = tmp_path / name
    script.write_text(source)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "NO_ALBUMENTATIONS_UPDATE": "1",
        "QG_LIGHTNING_CACHE": str(tmp_path / "cache"),
        "PYTHONWARNINGS": "ignore",
    }
    for key in ("MASTER_PORT", "MASTER_ADDR", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK"):
        env.pop(key, None)
    return subprocess.run(
        [sys.executable, str(script), str(tmp_path), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def run_script() -> Callable[..., subprocess.CompletedProcess]:
    """:func:`_run_script`: run a test's script in a fresh process (DDP tests: Lightning relaunches it)."""
    return _run_script

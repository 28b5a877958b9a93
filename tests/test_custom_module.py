"""examples/custom_module.py: the guided module is the plain one plus a base class and a few lines."""

from __future__ import annotations

import ast
import difflib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import lightning as L
import pytest
import torch

from qg_lightning.checkpoint import load_checkpoint
from qg_lightning.data import SemiSupervisedDataModule, generate_synthetic_dataset
from qg_lightning.guidance import QualityGuidedMixin

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom_module.py"
QUIET = dict(
    accelerator="cpu",
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
)


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("custom_module_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # inspect / pickling look classes up by module name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic_dataset(tmp_path_factory.mktemp("syn"), n_images=24, image_size=32, seed=5)


def _class_sources() -> dict[str, list[str]]:
    source = EXAMPLE.read_text()
    tree = ast.parse(source)
    return {
        node.name: ast.get_source_segment(source, node).splitlines()
        for node in tree.body
        if isinstance(node, ast.ClassDef)
    }


def test_guided_module_is_the_plain_one_plus_a_handful_of_lines() -> None:
    classes = _class_sources()
    plain = classes["MyWeakToStrong"]
    guided = [line.replace("MyWeakToStrongQG", "MyWeakToStrong") for line in classes["MyWeakToStrongQG"]]
    diff = [
        line
        for line in difflib.unified_diff(plain, guided, lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert diff[0] == "-class MyWeakToStrong(L.LightningModule):"
    assert diff[1] == "+class MyWeakToStrong(QualityGuidedMixin, L.LightningModule):"
    removed = [line for line in diff if line.startswith("-")]
    added = [line for line in diff if line.startswith("+")]
    assert len(removed) == 2 and len(added) <= 7, "\n".join(diff)
    assert any("self.quality_weights(" in line for line in added)
    assert any("weighted_mean(" in line for line in added)
    assert any("self.quality_regularization(" in line for line in added)
    assert len(plain) <= 70


def _dm(root: Path) -> SemiSupervisedDataModule:
    return SemiSupervisedDataModule(
        root=str(root), image_size=32, labeled_fraction=0.5, batch_size=2, unlabeled_batch_size=2,
        unlabeled_views="weak_strong", seed=0,
    )  # fmt: skip


def test_plain_module_trains_without_a_predictor(
    example: ModuleType, data_root: Path, tmp_path: Path
) -> None:
    model, trainer = example.build_trainer(
        None, max_steps=2, default_root_dir=str(tmp_path), limit_val_batches=0, **QUIET
    )
    assert type(model) is example.MyWeakToStrong and not isinstance(model, QualityGuidedMixin)
    trainer.fit(model, datamodule=_dm(data_root))
    assert trainer.global_step == 2
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


def test_guided_module_uses_weights_and_qar(
    example: ModuleType, data_root: Path, predictor_ckpt: str, tmp_path: Path
) -> None:
    L.seed_everything(0)
    model, trainer = example.build_trainer(
        predictor_ckpt, max_steps=2, mechanisms=["qw", "qar"], default_root_dir=str(tmp_path),
        limit_val_batches=1, val_check_interval=2, num_sanity_val_steps=0, **QUIET,
    )  # fmt: skip
    assert isinstance(model, example.MyWeakToStrongQG) and isinstance(model, QualityGuidedMixin)
    trainer.fit(model, datamodule=_dm(data_root))
    logged = trainer.callback_metrics
    for key in (
        "train/q_mean",
        "train/w_mean",
        "train/frac_q_above_tau",
        "train/loss_qar",
        "val/quality_pred_mean",
    ):
        assert key in logged, f"{key} missing from {sorted(logged)}"
    assert float(logged["train/lambda_qar"]) == pytest.approx(0.01)  # the compressed ramp ends at once here
    # the module keeps its own unsup_weight: no train/lambda_qw that could read as "guidance off"
    assert float(logged["train/qw_applied"]) == 1.0 and "train/lambda_qw" not in logged
    predictor = model.quality_predictor
    assert predictor is not None and not any(p.requires_grad for p in predictor.parameters())
    assert not any(p is q for p in model.parameters() for q in predictor.parameters())
    saved = load_checkpoint(predictor_ckpt)["state_dict"]
    current = predictor.state_dict()
    assert saved.keys() == current.keys() and all(torch.equal(saved[k], current[k]) for k in saved)


def test_guided_module_without_callback_says_what_to_add(
    example: ModuleType, data_root: Path, tmp_path: Path
) -> None:
    model = example.MyWeakToStrongQG()
    trainer = L.Trainer(max_steps=1, default_root_dir=tmp_path, **QUIET)
    with pytest.raises(RuntimeError, match="QualityReweightCallback"):
        trainer.fit(model, datamodule=_dm(data_root))


def test_script_runs_guided_from_the_command_line(
    example: ModuleType, predictor_ckpt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QG_LIGHTNING_CACHE", str(tmp_path / "cache"))
    trainer = example.main(
        [
            "--predictor",
            predictor_ckpt,
            "--qar",
            "--max-steps",
            "1",
            "--image-size",
            "32",
            "--out",
            str(tmp_path),
        ]
    )
    assert trainer.global_step == 1
    assert "train/q_mean" in trainer.callback_metrics
    assert (tmp_path / "cache").is_dir()

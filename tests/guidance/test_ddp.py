"""Quality guidance under ``strategy="ddp"``: 2 CPU processes on the gloo backend.

The fit runs in a subprocess (a script in ``tmp_path``) because Lightning's DDP launcher re-executes the
script for rank 1; every rank writes what it saw to a JSON file that the test then checks. bf16-mixed on
CPU is covered in ``test_callback.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from qg_lightning.data import generate_synthetic_dataset
from qg_lightning.quality.predictor import QualityPredictor

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    import lightning as L
    import torch

    from qg_lightning.callbacks import TestOverlayCallback
    from qg_lightning.checkpoint import load_checkpoint
    from qg_lightning.data import SemiSupervisedDataModule
    from qg_lightning.guidance import QualityReweightCallback
    from qg_lightning.methods import PseudoLabelSegmenter

    out, root, ckpt = (Path(a) for a in sys.argv[1:4])

    def main():
        L.seed_everything(0)
        model = PseudoLabelSegmenter(
            encoder_name="resnet18", lr=1e-3, unsup_warmup=0.0, unsup_ramp=0.0, schedule_unit="step"
        )
        callback = QualityReweightCallback(
            predictor=str(ckpt), mechanisms=["qw"], tau=0.0, qw_warmup=0, qw_ramp=0, schedule_unit="step"
        )
        data = SemiSupervisedDataModule(
            root=str(root), image_size=32, labeled_fraction=0.5, batch_size=2, unlabeled_batch_size=2, seed=0
        )
        trainer = L.Trainer(
            accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, limit_train_batches=3,
            limit_val_batches=2, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, callbacks=[TestOverlayCallback(n_images=2), callback],
            default_root_dir=str(out),
        )
        trainer.fit(model, datamodule=data)
        predictor = callback.loaded_predictor
        saved = load_checkpoint(ckpt)["state_dict"]
        current = predictor.state_dict()
        report = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "backend": str(torch.distributed.get_backend()),
            "global_step": trainer.global_step,
            "predictor_attached": model.quality_predictor is predictor,
            "predictor_identical": sorted(saved) == sorted(current)
            and all(torch.equal(saved[k], current[k].cpu()) for k in saved),
            "predictor_frozen": not predictor.training
            and not any(p.requires_grad for p in predictor.parameters()),
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
        }
        # writing the test report and overlays must not deadlock (the run dir is a collective call)
        model.test_tag = "ddp"
        trainer.test(model, datamodule=data, verbose=False)
        (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))

    if __name__ == "__main__":
        main()
    """
)


@pytest.mark.slow
def test_guided_fit_under_ddp_on_two_cpu_processes(tmp_path: Path) -> None:
    root = generate_synthetic_dataset(tmp_path / "data", n_images=40, image_size=32, seed=1)
    torch.manual_seed(0)
    predictor = QualityPredictor(backbone="resnet18", in_channels=3, num_classes=2)
    ckpt = tmp_path / "predictor.ckpt"
    torch.save({"state_dict": predictor.state_dict(), "hyper_parameters": dict(predictor.hparams)}, ckpt)
    script = tmp_path / "ddp_fit.py"
    script.write_text(SCRIPT)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "NO_ALBUMENTATIONS_UPDATE": "1",
        "QG_LIGHTNING_CACHE": str(tmp_path / "cache"),
        "PYTHONWARNINGS": "ignore",
    }
    for key in ("MASTER_PORT", "MASTER_ADDR", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK"):
        env.pop(key, None)  # a clean launch: Lightning picks a free port and starts rank 1 itself
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path), str(root), str(ckpt)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = (result.stdout + result.stderr)[-4000:]
    assert result.returncode == 0, log
    assert "find_unused_parameters" not in log, log

    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r, report in enumerate(reports):
        assert report["rank"] == r and report["world_size"] == 2 and report["backend"] == "gloo"
        assert report["global_step"] == 3
        assert report["predictor_attached"], "the predictor must be attached on every rank"
        assert report["predictor_identical"], f"rank {r}: predictor weights changed during the guided fit"
        assert report["predictor_frozen"]
        metrics = report["metrics"]
        for key in (
            "train/q_mean",
            "train/w_mean",
            "train/frac_q_above_tau",
            "train/lambda_qw",
            "train/loss",
        ):
            assert key in metrics, f"rank {r} did not log {key}: {sorted(metrics)}"
        assert metrics["train/lambda_qw"] == pytest.approx(0.25)
        assert 0.0 <= metrics["train/q_mean"] <= 1.0
    assert (tmp_path / "test_metrics_ddp.json").is_file() and (tmp_path / "test_overlays_ddp.png").is_file()
    # epoch-level values are reduced across ranks: every rank holds the same number
    for key in ("val/dice", "val/loss", "val/quality_pred_mean", "val/quality_true_mean"):
        values = [report["metrics"][key] for report in reports]
        assert values[0] == pytest.approx(values[1], abs=1e-6), (key, values)

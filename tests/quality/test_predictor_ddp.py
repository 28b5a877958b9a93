"""Quality predictor training under ``strategy="ddp"``: 2 CPU processes on the gloo backend.

As in ``tests/guidance/test_ddp.py``, the fit runs in a subprocess (Lightning's DDP launcher re-executes the
script for rank 1) and every rank writes what it saw to a JSON file.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from qg_lightning.data import generate_synthetic_dataset

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    import lightning as L

    from qg_lightning.quality import QualityDataModule, QualityPredictor

    out, root = (Path(a) for a in sys.argv[1:3])

    def main():
        L.seed_everything(0)
        model = QualityPredictor(backbone="resnet18", in_channels=3, num_classes=2)
        data = QualityDataModule(
            root=str(root), image_size=32, labeled_fraction=0.5, samples_per_image=2, batch_size=4, p_weak=0.0,
        )
        trainer = L.Trainer(
            accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, limit_train_batches=2,
            num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, default_root_dir=str(out),
        )
        trainer.fit(model, datamodule=data)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(metrics))

    if __name__ == "__main__":
        main()
    """
)


@pytest.mark.slow
def test_validation_metrics_agree_across_ddp_ranks(tmp_path: Path, run_script) -> None:
    """Each rank validates part of the fixed candidates; what early stopping and checkpointing monitor
    (``val/loss``) and ``val/mae``, ``val/pearson``, ``val/spearman`` are the same on every rank."""
    root = generate_synthetic_dataset(tmp_path / "data", n_images=40, image_size=32, seed=1)
    result = run_script(tmp_path, SCRIPT, "ddp_predictor.py", str(root))
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for key in ("val/loss", "val/mae", "val/pearson", "val/spearman"):
        assert key in ranks[0], sorted(ranks[0])
        assert ranks[0][key] == pytest.approx(ranks[1][key], abs=1e-6), key

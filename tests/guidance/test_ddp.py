"""Quality guidance under ``strategy="ddp"``: 2 CPU processes on the gloo backend.

The fit runs in a subprocess (a script in ``tmp_path``) because Lightning's DDP launcher re-executes the
script for rank 1; every rank writes what it saw to a JSON file that the test then checks. bf16-mixed on
CPU is covered in ``test_callback.py``.
"""

from __future__ import annotations

import json
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
def test_guided_fit_under_ddp_on_two_cpu_processes(tmp_path: Path, run_script) -> None:
    root = generate_synthetic_dataset(tmp_path / "data", n_images=40, image_size=32, seed=1)
    torch.manual_seed(0)
    predictor = QualityPredictor(backbone="resnet18", in_channels=3, num_classes=2)
    ckpt = tmp_path / "predictor.ckpt"
    torch.save({"state_dict": predictor.state_dict(), "hyper_parameters": dict(predictor.hparams)}, ckpt)
    result = run_script(tmp_path, SCRIPT, "ddp_fit.py", str(root), str(ckpt))
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
            "train/qw_applied",
            "train/loss",
        ):
            assert key in metrics, f"rank {r} did not log {key}: {sorted(metrics)}"
        # the reference hosts keep their own unsupervised weight (they never read qw_lambda)
        assert "train/lambda_qw" not in metrics and metrics["train/qw_applied"] == 1.0
        assert 0.0 <= metrics["train/q_mean"] <= 1.0
    assert (tmp_path / "test_metrics_ddp.json").is_file() and (tmp_path / "test_overlays_ddp.png").is_file()
    # epoch-level values are reduced across ranks: every rank holds the same number
    for key in ("val/dice", "val/loss", "val/quality_pred_mean", "val/quality_true_mean"):
        values = [report["metrics"][key] for report in reports]
        assert values[0] == pytest.approx(values[1], abs=1e-6), (key, values)


# ------------------------------------------------------------------ DDP vs one process, and a failing rank

EQUIVALENCE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    import lightning as L
    import torch

    from qg_lightning.data import SemiSupervisedDataModule
    from qg_lightning.guidance import QualityReweightCallback
    from qg_lightning.methods import PseudoLabelSegmenter

    out, root, ckpt, mode = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    fail_rank = int(sys.argv[5]) if len(sys.argv) > 5 else -1
    devices = 1 if mode == "single" else 2
    per_rank = 4 // devices  # the same global batch of 4 (+ 4 unlabeled) either way


    class Record(L.Callback):
        def __init__(self):
            self.seen = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 2 and trainer.global_rank == fail_rank:
                raise RuntimeError(f"rank {fail_rank} fails on purpose")
            self.seen.append(
                {"step": trainer.global_step, "epoch": trainer.current_epoch,
                 "labeled": list(batch["labeled"]["id"]), "unlabeled": list(batch["unlabeled"]["id"])}
            )


    def _replace_batchnorm(module):
        for name, child in module.named_children():
            if isinstance(child, torch.nn.BatchNorm2d):
                norm = torch.nn.GroupNorm(1, child.num_features)
                norm.requires_grad_(child.weight.requires_grad)  # the EMA teacher's stay frozen
                setattr(module, name, norm)
            else:
                _replace_batchnorm(child)


    def main():
        L.seed_everything(0)
        model = PseudoLabelSegmenter(
            encoder_name="mobilenet_v2", lr=1e-2, unsup_warmup=0.0, unsup_ramp=0.0, schedule_unit="step"
        )
        # BatchNorm statistics are per process (SyncBatchNorm needs GPUs): use a per-sample norm so that one
        # process and two see the same computation and any difference comes from the distributed mechanics
        _replace_batchnorm(model)
        guidance = QualityReweightCallback(
            predictor=str(ckpt), mechanisms=["qw"], tau=0.0, qw_warmup=0, qw_ramp=0, schedule_unit="step"
        )
        data = SemiSupervisedDataModule(
            root=str(root), image_size=64, n_labeled=8, batch_size=per_rank, unlabeled_batch_size=per_rank,
            seed=0,
        )
        record = Record()
        trainer = L.Trainer(
            accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
            max_epochs=4, deterministic=True, num_sanity_val_steps=0,
            logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            callbacks=[record, guidance], default_root_dir=str(out),
        )
        trainer.fit(model, datamodule=data)
        report = {
            "seen": record.seen,
            "unlabeled_ids": sorted(data.datasets["unlabeled"].ids),
            "val_dice": float(trainer.callback_metrics["val/dice"]),
            "val_loss": float(trainer.callback_metrics["val/loss"]),
        }
        (out / f"{mode}_rank{trainer.global_rank}.json").write_text(json.dumps(report))


    if __name__ == "__main__":
        main()
    """
)


@pytest.fixture(scope="module")
def ddp_inputs(tmp_path_factory: pytest.TempPathFactory, predictor_ckpt: str) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("ddp_equivalence")
    root = generate_synthetic_dataset(tmp / "data", n_images=30, image_size=32, seed=2)
    return root, Path(predictor_ckpt)


@pytest.mark.slow
def test_ddp_matches_one_process_with_the_same_global_batch(tmp_path: Path, ddp_inputs, run_script) -> None:
    root, ckpt = ddp_inputs
    for mode in ("single", "ddp"):
        result = run_script(tmp_path, EQUIVALENCE_SCRIPT, "equivalence.py", str(root), str(ckpt), mode)
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    single = json.loads((tmp_path / "single_rank0.json").read_text())
    ranks = [json.loads((tmp_path / f"ddp_rank{r}.json").read_text()) for r in (0, 1)]

    # the two ranks' batches at each step are exactly the one-process batch at that step
    assert len(ranks[0]["seen"]) == len(ranks[1]["seen"]) == len(single["seen"]) > 0
    for step, one in enumerate(single["seen"]):
        a, b = ranks[0]["seen"][step], ranks[1]["seen"][step]
        assert a["step"] == b["step"] == one["step"] == step
        assert a["labeled"] + b["labeled"] == one["labeled"]
        assert a["unlabeled"] + b["unlabeled"] == one["unlabeled"]

    # each sample at most once per epoch across ranks, and every sample of the loader that sets the epoch
    # length (here the unlabeled one; the labeled one cycles) seen exactly once
    for epoch in range(4):
        unlabeled = [i for r in ranks for s in r["seen"] if s["epoch"] == epoch for i in s["unlabeled"]]
        assert len(set(unlabeled)) == len(unlabeled), f"epoch {epoch}: a sample was seen twice across ranks"
        usable = len(ranks[0]["unlabeled_ids"]) // 4 * 4  # incomplete last global batch dropped
        assert len(unlabeled) == usable

    # same validation Dice on every rank, and as one process: identical global batches and per-sample norms;
    # what remains is the order of floating-point reductions and the per-rank normalisation of the weights
    for key in ("val_dice", "val_loss"):
        assert ranks[0][key] == pytest.approx(ranks[1][key], abs=1e-6), key
    assert ranks[0]["val_loss"] == pytest.approx(single["val_loss"], abs=1e-3)  # measured: 2e-5 apart
    assert ranks[0]["val_dice"] == pytest.approx(single["val_dice"], abs=0.02)


@pytest.mark.slow
@pytest.mark.parametrize("fail_rank", [0, 1])
def test_a_failing_rank_stops_every_rank_instead_of_hanging(
    tmp_path: Path, ddp_inputs, run_script, fail_rank: int
) -> None:
    root, ckpt = ddp_inputs
    result = run_script(
        tmp_path,
        EQUIVALENCE_SCRIPT,
        "equivalence.py",
        str(root),
        str(ckpt),
        "ddp",
        str(fail_rank),
        timeout=240,
    )
    assert result.returncode != 0
    assert f"rank {fail_rank} fails on purpose" in result.stdout + result.stderr
    assert not list(tmp_path.glob("ddp_rank*.json")), "no rank may finish the fit as if nothing happened"

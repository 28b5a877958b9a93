"""Crash and resume with real processes: SIGKILL mid-epoch, SIGTERM, and a kill while a checkpoint is written.

Every fit is ``qg-lightning fit`` (``cli_main``) in a subprocess on a guided Mean Teacher config (EMA teacher,
guidance and unsupervised ramps, AdamW + warm-up cosine schedule), deterministic CPU. A resumed run must end
with exactly the weights, optimizer state and validation Dice of the uninterrupted run. The kill signals are
sent by the process to itself from a callback at a chosen step (``killers.py``, on ``PYTHONPATH``), so the
moment of the kill is reproducible.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from qg_lightning.checkpoint import load_checkpoint
from qg_lightning.cli import SIGTERM_EXIT_CODE
from qg_lightning.data import generate_synthetic_dataset

pytestmark = pytest.mark.slow

KILLERS = textwrap.dedent(
    """
    import os
    import signal

    import lightning as L
    import torch


    class SignalAt(L.Callback):
        '''Send ``signal_name`` to this process after the optimizer step that makes global_step == step.'''

        def __init__(self, step: int, signal_name: str = "SIGKILL") -> None:
            self.step = step
            self.signal_name = signal_name

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if trainer.global_step == self.step:
                os.kill(os.getpid(), getattr(signal, self.signal_name))


    class KillWhileSaving(L.Callback):
        '''SIGKILL this process half-way through writing the first checkpoint at global step ``step``.'''

        def __init__(self, step: int) -> None:
            self.step = step

        def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
            if trainer.global_step != self.step:
                return
            real_save = torch.save

            def half_then_die(obj, f, *args, **kwargs):
                import io

                buffer = io.BytesIO()
                real_save(obj, buffer)
                data = buffer.getvalue()
                f.write(data[: len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
                os.kill(os.getpid(), signal.SIGKILL)

            torch.save = half_then_die
    """
)

STEPS_PER_EPOCH = 4  # 8 labeled / batch 2 and 8 unlabeled / batch 2
MAX_STEPS = 12
VAL_EVERY = 3  # validations at steps 3, 6, 9, 12: checkpoints in the middle of epochs 0, 1 and 2


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, predictor_ckpt: str) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("resume")
    root = generate_synthetic_dataset(tmp / "data", n_images=24, image_size=32, seed=3)
    (tmp / "killers.py").write_text(KILLERS)
    return {"tmp": tmp, "root": root, "predictor": Path(predictor_ckpt)}


def _config(ws: dict[str, Path], out: Path, extra_callbacks: list[dict] | None = None) -> dict:
    return {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_steps": MAX_STEPS,
            "val_check_interval": VAL_EVERY,  # validation (and last.ckpt) mid-epoch, across epochs
            "check_val_every_n_epoch": None,
            "deterministic": True,
            "num_sanity_val_steps": 0,
            "log_every_n_steps": 1,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "default_root_dir": str(out),
            "logger": [
                {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(out)}}
            ],
            "callbacks": [
                {
                    "class_path": "qg_lightning.callbacks.ModelCheckpoint",
                    "init_args": {
                        "dirpath": str(out / "checkpoints"),
                        "monitor": "val/dice",
                        "mode": "max",
                        "save_last": True,
                        "filename": "best-{step:03d}",
                    },
                },
                *(extra_callbacks or []),
                {
                    "class_path": "qg_lightning.guidance.QualityReweightCallback",
                    "init_args": {
                        "predictor": str(ws["predictor"]),
                        "mechanisms": ["qw"],
                        "tau": 0.0,
                        "schedule_unit": "step",
                        "qw_warmup": 2,
                        "qw_ramp": 4,
                    },
                },
            ],
        },
        "model": {
            "class_path": "qg_lightning.methods.MeanTeacherSegmenter",
            "init_args": {
                "encoder_name": "mobilenet_v2",
                "encoder_weights": None,
                "lr": 1e-3,
                "warmup_steps": 2,
                "schedule_unit": "step",
                "unsup_warmup": 2,
                "unsup_ramp": 4,
                "ema_warmup_steps": 4,
            },
        },
        "data": {
            "class_path": "qg_lightning.data.SemiSupervisedDataModule",
            "init_args": {
                "root": str(ws["root"]),
                "image_size": 32,
                "n_labeled": 8,
                "batch_size": 2,
                "unlabeled_batch_size": 2,
                "unlabeled_views": "weak_strong",
                "seed": 0,
            },
        },
    }


def _fit(ws: dict[str, Path], out: Path, config: dict, *extra: str) -> subprocess.CompletedProcess:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"config{len(list(out.glob('config*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "NO_ALBUMENTATIONS_UPDATE": "1",
        "PYTHONPATH": os.pathsep.join([str(ws["tmp"]), os.environ.get("PYTHONPATH", "")]),
        "PYTHONWARNINGS": "ignore",
    }
    cmd = [
        sys.executable,
        "-c",
        "from qg_lightning.cli import cli_main; cli_main()",
        "fit",
        "--config",
        str(path),
    ]
    return subprocess.run(
        [*cmd, "--test_after_fit", "false", *extra],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _final_state(out: Path) -> dict:
    return load_checkpoint(out / "checkpoints" / "last.ckpt")


def _val_dice(out: Path) -> list[tuple[int, float]]:
    """``(step, val/dice)`` of every validation, over all CSV logs of the run (resumes log to new versions)."""
    rows = []
    for path in sorted(out.glob("lightning_logs/version_*/metrics.csv")):
        with path.open() as f:
            rows += [(int(r["step"]), float(r["val/dice"])) for r in csv.DictReader(f) if r.get("val/dice")]
    return sorted(set(rows))


def _assert_same_run(resumed: Path, reference: Path) -> None:
    a, b = _final_state(resumed), _final_state(reference)
    assert a["global_step"] == b["global_step"] == MAX_STEPS
    assert sorted(a["state_dict"]) == sorted(b["state_dict"])
    for key, value in b["state_dict"].items():  # student and EMA teacher
        assert torch.equal(a["state_dict"][key], value), f"{key} differs after resume"
    opt_a, opt_b = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert sorted(opt_a) == sorted(opt_b)
    for sa, sb in zip(opt_a.values(), opt_b.values(), strict=True):
        assert all(torch.equal(sa[k], sb[k]) for k in sb), "optimizer state differs after resume"
    assert a["lr_schedulers"] == b["lr_schedulers"]
    guidance = [k for k in b["callbacks"] if "QualityReweightCallback" in k]
    assert guidance and all(a["callbacks"][k] == b["callbacks"][k] for k in guidance)
    assert _val_dice(resumed)[-1] == _val_dice(reference)[-1]


@pytest.fixture(scope="module")
def reference(workspace: dict[str, Path]) -> Path:
    out = workspace["tmp"] / "uninterrupted"
    result = _fit(workspace, out, _config(workspace, out))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_sigkill_mid_epoch_then_ckpt_path_last_ends_like_an_uninterrupted_run(workspace, reference):
    out = workspace["tmp"] / "sigkill"
    kill = {"class_path": "killers.SignalAt", "init_args": {"step": 8}}  # first batch of epoch 2
    killed = _fit(workspace, out, _config(workspace, out, [kill]))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    before = load_checkpoint(out / "checkpoints" / "last.ckpt")
    assert before["global_step"] == 6  # written after the validation at step 6, 2 batches into epoch 1
    assert before["datamodule_hyper_parameters"]["seed"] == 0
    assert before["SemiSupervisedDataModule"]["train_progress"] == {"epoch": 1, "batches": 2}

    resumed = _fit(workspace, out, _config(workspace, out), "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_run(out, reference)


def test_sigterm_saves_mid_epoch_exits_143_and_resumes_exactly(workspace, reference):
    out = workspace["tmp"] / "sigterm"
    term = {"class_path": "killers.SignalAt", "init_args": {"step": 5, "signal_name": "SIGTERM"}}
    stopped = _fit(workspace, out, _config(workspace, out, [term]))
    assert stopped.returncode == SIGTERM_EXIT_CODE, stopped.stderr[-3000:]
    assert "resume with `--ckpt_path last`" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    saved = load_checkpoint(out / "checkpoints" / "last.ckpt")
    assert saved["global_step"] == 5  # saved after the batch it was signalled in (epoch 1, batch 1)
    loader_state = saved["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loader_state == [{"epoch": 1, "batches": 1}] * 2, "the data position must be in the checkpoint"

    resumed = _fit(workspace, out, _config(workspace, out), "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "not resumable" not in resumed.stderr
    _assert_same_run(out, reference)


def test_kill_while_writing_a_checkpoint_keeps_the_last_good_one(workspace, reference):
    out = workspace["tmp"] / "kill_in_write"
    # die half-way through the first checkpoint write after the validation at step 9
    die = {"class_path": "killers.KillWhileSaving", "init_args": {"step": 9}}
    killed = _fit(workspace, out, _config(workspace, out, [die]))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    last = load_checkpoint(out / "checkpoints" / "last.ckpt")  # complete and loadable
    assert last["global_step"] == 6
    assert not [p for p in (out / "checkpoints").iterdir() if "last" in p.name and p.name != "last.ckpt"]

    resumed = _fit(workspace, out, _config(workspace, out), "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_run(out, reference)

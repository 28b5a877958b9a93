"""The ``qg-lightning`` console script: one-line errors for bad input to the one-off commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qg_lightning import cli


def _run(monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    monkeypatch.setattr("sys.argv", ["qg-lightning", *argv])
    return cli.console_main()


def test_bad_input_to_a_command_is_one_line_with_status_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("QG_LIGHTNING_TRACEBACK", raising=False)
    missing = str(tmp_path / "nope.ckpt")
    args = ["--images", str(tmp_path), "--masks", str(tmp_path), "--out", str(tmp_path / "s.csv")]
    assert _run(monkeypatch, "score", "--predictor", missing, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("qg-lightning score: error: Not found: --predictor") and missing in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_the_traceback_on_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QG_LIGHTNING_TRACEBACK", "1")
    args = ["--images", str(tmp_path), "--masks", str(tmp_path), "--out", str(tmp_path / "s.csv")]
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        _run(monkeypatch, "score", "--predictor", str(tmp_path / "nope.ckpt"), *args)


def test_lightning_commands_keep_their_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ValueError during ``fit`` may be a bug hours into training: it is never shortened."""
    monkeypatch.delenv("QG_LIGHTNING_TRACEBACK", raising=False)

    def failing_main() -> int:
        raise ValueError("boom")

    monkeypatch.setattr(cli, "main", failing_main)
    with pytest.raises(ValueError, match="boom"):
        _run(monkeypatch, "fit", "--config", "x.yaml")


# ------------------------------------------------------------------ the end of a fit, and a failed fit
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "configs"


def _tiny(config: Path, *extra: str) -> list[str]:
    return [
        "fit", "--config", str(config), "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1",
        "--trainer.val_check_interval", "2", "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar",
        "false", "--trainer.enable_model_summary", "false", "--data.synthetic_images", "24",
        "--data.synthetic_size", "32", "--data.image_size", "32", *extra,
    ]  # fmt: skip


def test_fit_prints_run_folder_checkpoints_and_test_table(
    isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The predictor quickstart: the summary names what was written, and the best weights get the fixed name
    that the guided configs load."""
    from qg_lightning.quality import load_quality_predictor

    config = EXAMPLES / "predictor" / "quickstart.yaml"
    cli.cli_main(_tiny(config, "--data.samples_per_image", "2", "--data.batch_size", "4"))
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "Run folder       runs/predictor/quickstart/version_0" in lines
    best = next(line for line in lines if line.startswith("Best checkpoint"))
    assert "runs/predictor/quickstart/version_0/checkpoints/best-epoch=000.ckpt (val/loss " in best
    assert "Best copied to   runs/predictor/quality_predictor.ckpt" in lines
    assert "Last checkpoint  runs/predictor/quickstart/version_0/checkpoints/last.ckpt" in lines
    header = lines.index("Test             last       best")
    assert [line.split()[0] for line in lines[header + 1 :]] == ["loss", "mae", "pearson", "spearman"]
    stable = isolated / "runs" / "predictor" / "quality_predictor.ckpt"
    assert load_quality_predictor(str(stable), in_channels=3, num_classes=2).num_foreground == 1
    guided = (EXAMPLES / "ssl" / "pl_qw.yaml").read_text()
    assert "predictor: runs/predictor/quality_predictor.ckpt" in guided  # what the guided config loads


def test_a_missing_mask_folder_is_spelled_as_its_flag(tmp_path: Path) -> None:
    from qg_lightning.data import DataValidationError, scan_folder

    for name in ("images", "masks"):
        (tmp_path / name).mkdir()
    with pytest.raises(DataValidationError) as info:
        scan_folder(tmp_path, mask_dir="masks_3class")
    message = str(cli._cli_spelling(info.value))
    assert "(`--data.mask_dir` is 'masks_3class'; the folder's candidate mask folders: ['masks'])" in message


def test_failed_fit_leaves_no_empty_run_folder_and_spells_cli_flags(isolated: Path) -> None:
    from qg_lightning.data import DataValidationError, generate_synthetic_dataset

    root = generate_synthetic_dataset(isolated / "data", n_images=12, image_size=32, seed=0)
    sorted((root / "masks").iterdir())[0].write_bytes(b"not a png")
    args = _tiny(EXAMPLES / "quickstart.yaml", "--data.root", str(root))
    with pytest.raises(DataValidationError, match="masks/syn_00000.png") as info:
        cli.cli_main(args)
    message = str(info.value)
    assert "`--data.skip_bad true`" in message and "skip_bad=True" not in message
    assert info.value.problems and "masks/syn_00000.png" in info.value.problems
    assert not list((isolated / "runs").rglob("version_*")), sorted((isolated / "runs").rglob("*"))
    assert not (isolated / "runs" / "quickstart").exists()


# ------------------------------------------------------------------ class names without their module
SHORT_NAMES = """
from qg_lightning.cli import cli_main
cli = cli_main(["--model", "SupervisedSegmenter", "--model.encoder_weights", "null", "--data",
                "SemiSupervisedDataModule", "--trainer.logger", "false", "--trainer.accelerator", "cpu"], run=False)
print(type(cli.model).__name__, type(cli.datamodule).__name__)
"""


def test_a_config_may_name_the_classes_without_their_module(isolated: Path) -> None:
    """jsonargparse finds ``class_path: SupervisedSegmenter`` among the imported subclasses; the package imports
    are lazy, so the CLI imports the public classes first. A fresh process: this one has imported them all."""
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(cli.__file__).resolve().parents[1]),
        "NO_ALBUMENTATIONS_UPDATE": "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", SHORT_NAMES],
        cwd=isolated,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "SupervisedSegmenter SemiSupervisedDataModule"

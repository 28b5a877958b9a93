"""The ``qg-lightning`` command and the LightningCLI behind ``examples/fit.py``.

``qg-lightning fit|validate|test|predict --config CONFIG.yaml`` is a :class:`QGLightningCLI` (LightningCLI with any
LightningModule / LightningDataModule chosen by ``class_path`` in the config). Other sub-commands:

* ``qg-lightning make-synthetic --out DIR``: write the embedded synthetic dataset in the standard layout.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import CheckpointIO, TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from qg_lightning.callbacks import ExactResume
from qg_lightning.checkpoint import AtomicCheckpointIO, UnsafeCheckpointError
from qg_lightning.data.folder import MASK_DIR_ARGUMENT, ROOT_ARGUMENT, SKIP_BAD_FIX
from qg_lightning.runs import run_dir

__all__ = ["QGLightningCLI", "check_compatible", "cli_main", "console_main", "main"]

log = logging.getLogger(__name__)


def check_compatible(model: L.LightningModule, datamodule: L.LightningDataModule | None) -> None:
    """Fail early when the model and the data disagree on ``num_classes`` or ``in_channels``."""
    if datamodule is None:
        return
    for key in ("num_classes", "in_channels"):
        m = getattr(model, "hparams", {}).get(key)
        d = getattr(datamodule, "hparams", {}).get(key)
        if m is not None and d is not None and m != d:
            raise ValueError(
                f"`model.init_args.{key}={m}` does not match `data.init_args.{key}={d}`. Set both to the same "
                f"value in your config (num_classes counts the background: 2 = binary)."
            )


class QGLightningCLI(LightningCLI):
    """LightningCLI with qg_lightning's conventions.

    * ``--test_after_fit true`` (default): after ``fit``, test the last weights and the best-validation checkpoint,
      writing ``test_metrics_last.json`` / ``test_metrics_best.json`` (and overlays) into the run directory.
    * Checkpoints are read with ``weights_only=True`` unless the command line says otherwise.
    * Model and data must agree on ``num_classes`` and ``in_channels``.
    * Fault tolerance by default: :class:`~qg_lightning.callbacks.ExactResume` (exact ``--ckpt_path last``
      resume, ``last.ckpt`` on SIGTERM) and :class:`~qg_lightning.checkpoint.AtomicCheckpointIO` (a kill while
      a checkpoint is written never truncates it).
    * The end of every ``fit`` prints the run folder, the best (and last) checkpoint and the test figures of
      the last and the best weights as a small table (global rank 0, on stdout).
    * A ``fit`` that fails before it wrote anything removes the logger's empty ``version_N`` folder (one
      holding nothing but ``config.yaml`` / ``hparams.yaml``), so the next run does not skip a version.
    * Errors from the data modules spell their fix as command-line flags (``--data.skip_bad true``,
      ``--data.root``) instead of Python arguments.
    """

    def _run_subcommand(self, subcommand: str) -> None:
        self._test_results: dict[str, dict[str, float]] = {}
        try:
            super()._run_subcommand(subcommand)
        except BaseException as err:
            if subcommand == "fit" and not isinstance(err, (SIGTERMException, KeyboardInterrupt)):
                _remove_empty_run_dir(getattr(self, "trainer", None))
            if isinstance(err, (FileNotFoundError, ValueError)):
                respelled = _cli_spelling(err)
                if respelled is not err:
                    raise respelled.with_traceback(err.__traceback__) from None
            raise

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="After fit, test the last weights and the best checkpoint (fit only).",
        )

    def _prepare_subcommand_parser(
        self, klass: type, subcommand: str, **kwargs: Any
    ) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        try:
            parser.set_defaults(weights_only=True)
        except KeyError:  # subcommand without a weights_only argument
            pass
        return parser

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        """The configured Trainer plus :class:`~qg_lightning.callbacks.ExactResume` (unless configured) and
        :class:`~qg_lightning.checkpoint.AtomicCheckpointIO` (unless another checkpoint IO plugin is set)."""
        trainer = super().instantiate_trainer(**kwargs)
        if not any(isinstance(c, ExactResume) for c in trainer.callbacks):
            trainer.callbacks.append(ExactResume())
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO and not _configured_checkpoint_io(
            self._get(self.config_init, "trainer", default={}).get("plugins")
        ):
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer

    def _check(self) -> None:
        check_compatible(self.model, self.datamodule)

    def before_fit(self) -> None:
        self._check()

    def before_validate(self) -> None:
        self._check()

    def before_test(self) -> None:
        self._check()

    def after_fit(self) -> None:
        checkpoints = checkpoint_rows(self.trainer.checkpoint_callback)  # before testing restores its state
        self._test_after_fit()
        self._print_fit_summary(checkpoints)

    def _test_after_fit(self) -> None:
        cfg = self.config.get(self.subcommand, {})
        trainer = self.trainer
        if not cfg.get("test_after_fit", True) or trainer.interrupted or trainer.fast_dev_run:
            return
        if self.datamodule is None or not hasattr(self.datamodule, "test_dataloader"):
            return
        self.model.test_tag = "last"
        results = trainer.test(self.model, datamodule=self.datamodule, verbose=False)
        _write_test_results(trainer, results, "last", None)
        self._test_results["last"] = _flat_metrics(results)
        best = getattr(trainer.checkpoint_callback, "best_model_path", "")
        if best:
            self.model.test_tag = "best"
            results = trainer.test(
                self.model, datamodule=self.datamodule, ckpt_path=best, verbose=False, weights_only=True
            )
            _write_test_results(trainer, results, "best", best)
            self._test_results["best"] = _flat_metrics(results)
        self.model.test_tag = ""

    def _print_fit_summary(self, checkpoints: list[tuple[str, str]]) -> None:
        """Print :func:`fit_summary` (global rank 0)."""
        trainer = self.trainer
        folder = run_dir(trainer)  # collective under DDP: every rank calls it
        if trainer.is_global_zero:
            sys.stdout.write(fit_summary(folder, checkpoints, self._test_results))


def _write_test_results(
    trainer: L.Trainer, results: list[dict[str, float]], tag: str, ckpt: str | None
) -> None:
    """``test_metrics_<tag>.json`` in the run folder from what ``trainer.test`` returned (``test/loss`` ->
    ``loss``, ...), unless the module wrote its own report (the segmentation hosts do, with per-image values)."""
    out = run_dir(trainer)  # collective under DDP: every rank calls it
    path = out / f"test_metrics_{tag}.json"
    if not trainer.is_global_zero or path.exists() or not results:
        return
    metrics = {}
    for loader in results:
        for key, value in loader.items():
            value = float(value)
            metrics[key.removeprefix("test/")] = value if math.isfinite(value) else None
    out.mkdir(parents=True, exist_ok=True)
    report = {"metrics": metrics, "checkpoint": ckpt, "tag": tag}
    path.write_text(json.dumps(report, indent=2))
    log.info("Test metrics written to %s", path)


def _flat_metrics(results: list[dict[str, float]]) -> dict[str, float]:
    """``trainer.test`` results as ``{name: value}`` without the ``test/`` prefix."""
    return {key.removeprefix("test/"): float(v) for loader in results for key, v in loader.items()}


def checkpoint_rows(checkpoint: Any) -> list[tuple[str, str]]:
    """``(label, text)`` rows for the best and last checkpoint of a checkpoint callback (``None``: no rows).

    Example:
        >>> checkpoint_rows(None)
        []
    """
    rows = []
    best = getattr(checkpoint, "best_model_path", "") or ""
    if best:
        score = getattr(checkpoint, "best_model_score", None)
        monitor = getattr(checkpoint, "monitor", None)
        text = best if score is None or monitor is None else f"{best} ({monitor} {float(score):.4g})"
        rows.append(("Best checkpoint", text))
        copy = getattr(checkpoint, "copy_best_to", None)
        if copy:
            rows.append(("Best copied to", str(copy)))
    last = getattr(checkpoint, "last_model_path", "") or ""
    if last:
        rows.append(("Last checkpoint", last))
    return rows


def fit_summary(
    folder: str | os.PathLike,
    checkpoints: Sequence[tuple[str, str]],
    tests: Mapping[str, Mapping[str, float]],
) -> str:
    """The lines printed at the end of ``fit``: run folder, checkpoints and a table of test figures.

    Args:
        folder: the run folder.
        checkpoints: rows from :func:`checkpoint_rows`.
        tests: ``{"last": {metric: value}, "best": {...}}`` (either may be missing).

    Example:
        >>> rows = [("Best checkpoint", "runs/x/version_0/checkpoints/best.ckpt")]
        >>> tests = {"last": {"dice": 0.81234, "loss": 0.2}, "best": {"dice": 0.83}}
        >>> print(fit_summary("runs/x/version_0", rows, tests), end="")
        Run folder       runs/x/version_0
        Best checkpoint  runs/x/version_0/checkpoints/best.ckpt
        Test             last       best
          dice           0.8123     0.83
          loss           0.2
    """
    rows = [("Run folder", str(folder)), *checkpoints]
    lines = [f"{name:<16} {value}" for name, value in rows]
    tags = [tag for tag in ("last", "best") if tests.get(tag)]
    if tags:
        names = sorted({name for tag in tags for name in tests[tag]})
        lines.append(f"{'Test':<16} " + " ".join(f"{tag:<10}" for tag in tags).rstrip())
        for name in names:
            cells = [tests[tag].get(name) for tag in tags]
            text = " ".join(f"{'' if v is None else f'{v:.4g}':<10}" for v in cells).rstrip()
            lines.append(f"  {name:<14} {text}")
    return "\n".join(lines) + "\n"


def _remove_empty_run_dir(trainer: L.Trainer | None) -> None:
    """After a failed ``fit``: remove the logger's version folder if the run left nothing in it but its
    configuration (``config.yaml``, ``hparams.yaml``), then the folders above it that are now empty, up to
    the logger's ``save_dir``. Never touches ``default_root_dir`` itself or a folder with anything else in it.
    Rank 0 only; no collectives."""
    if trainer is None or not trainer.is_global_zero or not trainer.loggers:
        return
    logger = trainer.loggers[0]
    try:
        log_dir = logger.log_dir  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 (a logger without a folder, or one that cannot say)
        return
    if not isinstance(log_dir, (str, os.PathLike)):
        return
    folder = Path(log_dir)
    if not folder.is_dir() or folder.resolve() == Path(trainer.default_root_dir).resolve():
        return
    files = [p for p in folder.rglob("*") if p.is_file()]
    if any(p.parent != folder or p.name not in ("config.yaml", "hparams.yaml") for p in files):
        return
    shutil.rmtree(folder, ignore_errors=True)
    log.info("The failed run left nothing in %s: removed it.", folder)
    save_dir = getattr(logger, "save_dir", None)
    if not isinstance(save_dir, (str, os.PathLike)):
        return
    top = Path(save_dir).resolve()
    parent = folder.parent.resolve()
    # then the logger's now-empty name / save folders, never above its save_dir
    while parent.is_dir() and not any(parent.iterdir()) and parent.is_relative_to(top):
        parent.rmdir()
        if parent == top:
            break
        parent = parent.parent


#: Python spellings in library errors -> the command line's (see qg_lightning.data.folder).
_CLI_SPELLINGS = {
    SKIP_BAD_FIX: "pass `--data.skip_bad true` (in a config: `data.init_args.skip_bad: true`)",
    ROOT_ARGUMENT: "`--data.root`",
    MASK_DIR_ARGUMENT: "`--data.mask_dir`",
}


def _cli_spelling(err: BaseException) -> BaseException:
    """``err`` with its fix spelled as command-line flags, or ``err`` itself when nothing needs rewriting."""
    message = str(err.args[0]) if err.args and isinstance(err.args[0], str) else None
    if message is None or not any(key in message for key in _CLI_SPELLINGS):
        return err
    for key, value in _CLI_SPELLINGS.items():
        message = message.replace(key, value)
    try:
        if hasattr(err, "problems") and hasattr(err, "root"):
            return type(err)(message, root=err.root, problems=err.problems)  # type: ignore[call-arg]
        return type(err)(message)
    except TypeError:  # an exception type with another constructor: keep the original
        return err


def _configured_checkpoint_io(plugins: Any) -> bool:
    """Whether the trainer config's ``plugins`` already choose a checkpoint IO."""
    items = plugins if isinstance(plugins, list) else [plugins] if plugins is not None else []
    return any(isinstance(p, CheckpointIO) for p in items)


#: Exit status after a SIGTERM that saved the run (128 + 15, the shell's convention for "terminated").
SIGTERM_EXIT_CODE = 143

#: Packages whose public classes a config may name without their module (``class_path: PseudoLabelSegmenter``).
CONFIG_PACKAGES: tuple[str, ...] = (
    "qg_lightning.data",
    "qg_lightning.guidance",
    "qg_lightning.methods",
    "qg_lightning.quality",
)


def _import_config_classes() -> None:
    """Import every public name of :data:`CONFIG_PACKAGES`. jsonargparse finds a class given by its name alone
    among the subclasses imported so far, and the packages import their names lazily (on first use)."""
    for package in map(importlib.import_module, CONFIG_PACKAGES):
        for name in package.__all__:
            getattr(package, name)


def cli_main(args: Sequence[str] | None = None, *, run: bool = True) -> QGLightningCLI:
    """Run the LightningCLI (``fit``, ``validate``, ``test``, ``predict``) over any module and DataModule.

    After a SIGTERM during ``fit`` (the run saved ``last.ckpt``, see :class:`~qg_lightning.callbacks.ExactResume`)
    the process exits with status :data:`SIGTERM_EXIT_CODE` instead of running the after-fit tests.
    """
    _import_config_classes()
    try:
        return QGLightningCLI(
            L.LightningModule,
            L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            args=list(args) if args is not None else None,
            run=run,
        )
    except SIGTERMException:
        raise SystemExit(SIGTERM_EXIT_CODE) from None


def _make_synthetic(argv: Sequence[str]) -> int:
    from qg_lightning.data.synthetic import generate_synthetic_dataset

    parser = argparse.ArgumentParser(
        prog="qg-lightning make-synthetic",
        description="Write the embedded synthetic dataset (standard layout).",
    )
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--n-images", type=int, default=300)
    parser.add_argument("--n-unlabeled", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    ns = parser.parse_args(list(argv))
    path = generate_synthetic_dataset(
        ns.out, n_images=ns.n_images, image_size=ns.image_size, seed=ns.seed, n_unlabeled=ns.n_unlabeled
    )
    sys.stdout.write(f"{path}\n")
    return 0


def _evaluate_predictor(argv: Sequence[str]) -> int:
    from qg_lightning.cli_evaluate import evaluate_predictor_cli

    return evaluate_predictor_cli(argv)


def _calibrate_predictor(argv: Sequence[str]) -> int:
    from qg_lightning.cli_calibrate import calibrate_cli

    return calibrate_cli(argv)


def _score(argv: Sequence[str]) -> int:
    from qg_lightning.cli_score import score_cli

    return score_cli(argv)


def _gallery(argv: Sequence[str]) -> int:
    from qg_lightning.cli_gallery import gallery_cli

    return gallery_cli(argv)


def _train_predictor(argv: Sequence[str]) -> int:
    from qg_lightning.cli_train_predictor import train_predictor_cli

    return train_predictor_cli(argv)


def _study(argv: Sequence[str]) -> int:
    from qg_lightning.cli_study import study_cli

    return study_cli(argv)


EXTRA_COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "study": _study,
    "train-predictor": _train_predictor,
    "make-synthetic": _make_synthetic,
    "evaluate-predictor": _evaluate_predictor,
    "calibrate-predictor": _calibrate_predictor,
    "score": _score,
    "gallery": _gallery,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qg-lightning`` console command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in EXTRA_COMMANDS:
        return EXTRA_COMMANDS[argv[0]](argv[1:])
    if argv and argv[0] in ("-h", "--help") and len(argv) == 1:
        sys.stdout.write(
            "usage: qg-lightning {fit,validate,test,predict} --config CONFIG.yaml [overrides]\n"
            f"       qg-lightning {{{','.join(EXTRA_COMMANDS)}}} --help\n"
        )
        return 0
    cli_main(argv)
    return 0


def console_main() -> int:
    """The ``qg-lightning`` console script: :func:`main`, where bad input to a one-off command (``score``,
    ``evaluate-predictor``, ``calibrate-predictor``, ``gallery``, ``study``, ``make-synthetic``) is reported
    as one line on stderr with exit status 2 instead of a traceback. ``QG_LIGHTNING_TRACEBACK=1`` shows the
    traceback; ``fit`` and the other Lightning commands always do."""
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    try:
        return main()
    except (FileNotFoundError, ValueError, UnsafeCheckpointError) as err:
        if command not in EXTRA_COMMANDS or os.environ.get("QG_LIGHTNING_TRACEBACK"):
            raise
        sys.stderr.write(f"qg-lightning {command}: error: {err}\n")
        return 2

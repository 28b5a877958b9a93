"""``qg-lightning calibrate-predictor``: fit a monotone calibration of a quality predictor and write a copy of
its checkpoint that applies it (:func:`~qg_lightning.quality.calibration.calibrate_checkpoint` on the
candidates of an evaluation report, :func:`~qg_lightning.quality.calibration.read_candidates`).

Example:
    >>> _build_parser().parse_args(["--predictor", "g.ckpt", "--candidates", "c.csv", "--out", "h.ckpt"]).source
    'real'
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from qg_lightning.quality.calibration import calibrate_checkpoint, read_candidates

__all__ = ["calibrate_cli"]


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qg-lightning calibrate-predictor",
        description=(
            "Fit a monotone calibration q' = sigmoid(scale * logit(q) + shift) of a quality predictor on the "
            "candidates of an evaluation report (e.g. cross-fitted snapshots on the validation split) and write a "
            "copy of the checkpoint that applies it."
        ),
    )
    p.add_argument("--predictor", required=True, help="quality predictor checkpoint (.ckpt)")
    p.add_argument(
        "--candidates", required=True, help="*_candidates.csv from `qg-lightning evaluate-predictor`"
    )
    p.add_argument("--out", required=True, help="calibrated checkpoint path (.ckpt); never the input file")
    p.add_argument(
        "--source", default="real", choices=("real", "synthetic", "all"), help="candidates to fit on"
    )
    return p


def calibrate_cli(argv: Sequence[str]) -> int:
    """``qg-lightning calibrate-predictor``: see ``--help``. Returns the exit code (0)."""
    ns = _build_parser().parse_args(list(argv))
    src, out = Path(ns.predictor), Path(ns.out)
    if not src.is_file():
        raise FileNotFoundError(f"--predictor '{src}' not found.")
    if out.suffix != ".ckpt":
        raise ValueError(f"`--out` must be a .ckpt path, got '{out}'.")
    if out.resolve() == src.resolve():
        raise ValueError(f"`--out` '{out}' is the input checkpoint; write the calibrated copy to a new path.")
    pred, true = read_candidates(ns.candidates, ns.source)
    details = {"candidates": str(ns.candidates), "source": ns.source}
    summary = calibrate_checkpoint(src, pred, true, out, details=details)
    combined = summary["calibration"]
    b, a = summary["before"], summary["after"]
    sys.stdout.write(
        f"Calibration [scale, shift] = [{combined[0]:.4f}, {combined[1]:.4f}] fitted on {pred.numel()} {ns.source} "
        f"candidate values.\n  before: MAE {b['mae']:.4f}, mean predicted {b['mean_pred']:.3f} vs true "
        f"{b['mean_true']:.3f}\n  after:  MAE {a['mae']:.4f}, mean predicted {a['mean_pred']:.3f} "
        f"(constant-baseline MAE {b['constant_baseline_mae']:.4f})\nWrote {out}\n"
    )
    return 0

"""Post-hoc calibration of a quality predictor on candidates it never trained on.

A predictor trained on synthetic corruptions tends to over-rate the masks of real segmentation models (it has
seen few of their error patterns). Its *ranking* can still be useful; its *level* can be corrected with a
monotone map fitted on honest candidates, e.g. the masks of cross-fitted weak models ("snapshots") on the
validation images, which neither the predictor nor the snapshots trained on.

The map is a logit-linear (Platt-style) correction ``q' = sigmoid(scale * logit(q) + shift)`` with
``scale > 0``: smooth (QAR back-propagates through the predictor, so a step-wise isotonic map, flat almost
everywhere, would stop its gradient), monotone (Spearman and the failure-detection ranking are unchanged) and
stored as the predictor's ``calibration`` hyper-parameter, so every consumer of the checkpoint uses it.

Workflow::

    qg-lightning evaluate-predictor --predictor g.ckpt --subset val --candidates-per-image 0 \\
        --segmenter runs/snapshots/kvasir_seg/*.pt --out val_report.json
    qg-lightning calibrate-predictor --predictor g.ckpt --candidates val_report_candidates.csv \\
        --out g_calibrated.ckpt
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from qg_lightning.checkpoint import atomic_save, load_checkpoint

__all__ = [
    "apply_calibration",
    "calibrate_checkpoint",
    "calibrate_cli",  # noqa: F822 (module __getattr__: it lives in qg_lightning.cli_calibrate)
    "compose_calibration",
    "fit_calibration",
    "read_candidates",
]

_EPS = 1e-4


def _logit(q: Tensor) -> Tensor:
    q = q.clamp(_EPS, 1 - _EPS)
    return torch.log(q) - torch.log1p(-q)


def apply_calibration(pred: Tensor, calibration: Sequence[float]) -> Tensor:
    """``sigmoid(scale * logit(pred) + shift)`` for predicted qualities ``pred`` in [0, 1].

    Example:
        >>> apply_calibration(torch.tensor([0.5, 0.9]), [1.0, 0.0]).tolist() == torch.tensor([0.5, 0.9]).tolist()
        True
    """
    scale, shift = calibration
    return torch.sigmoid(scale * _logit(pred.to(torch.float64)) + shift).to(pred.dtype)


def compose_calibration(first: Sequence[float] | None, then: Sequence[float]) -> list[float]:
    """The single ``[scale, shift]`` equal to applying ``first`` and then ``then`` (``first`` may be None).

    Example:
        >>> compose_calibration([2.0, 1.0], [0.5, -1.0])
        [1.0, -0.5]
    """
    if first is None:
        return [float(then[0]), float(then[1])]
    return [float(then[0] * first[0]), float(then[0] * first[1] + then[1])]


def fit_calibration(pred: Tensor, true: Tensor, *, steps: int = 100) -> list[float]:
    """Fit ``[scale, shift]`` minimising the squared error of ``sigmoid(scale * logit(pred) + shift)`` to ``true``.

    Args:
        pred: predicted qualities in [0, 1], any shape.
        true: true Dice in [0, 1], same shape.
        steps: L-BFGS iterations (the problem has two parameters; it converges in a few dozen).

    Returns:
        ``[scale, shift]`` with ``scale > 0`` (kept positive so the map stays monotone increasing).

    Raises:
        ValueError: fewer than 2 values, mismatched shapes, values outside [0, 1] or not finite.

    Example:
        >>> true = torch.linspace(0.05, 0.95, 50)
        >>> over_rated = torch.sigmoid(torch.logit(true) + 1.5)  # predicts too high everywhere
        >>> scale, shift = fit_calibration(over_rated, true)
        >>> round(scale, 2), round(shift, 2)
        (1.0, -1.5)
    """
    pred, true = torch.as_tensor(pred, dtype=torch.float64), torch.as_tensor(true, dtype=torch.float64)
    if pred.shape != true.shape:
        raise ValueError(
            f"`pred` {tuple(pred.shape)} and `true` {tuple(true.shape)} must have the same shape."
        )
    pred, true = pred.flatten(), true.flatten()
    if pred.numel() < 2:
        raise ValueError(f"Calibration needs at least 2 candidates, got {pred.numel()}.")
    for name, v in (("pred", pred), ("true", true)):
        if not bool(torch.isfinite(v).all()) or bool((v < 0).any()) or bool((v > 1).any()):
            raise ValueError(f"`{name}` must hold finite values in [0, 1].")
    z = _logit(pred)
    log_scale = torch.zeros((), dtype=torch.float64, requires_grad=True)
    shift = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_scale, shift], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = (torch.sigmoid(log_scale.exp() * z + shift) - true).pow(2).mean()
        loss.backward()
        return loss

    opt.step(closure)
    return [float(log_scale.detach().exp()), float(shift.detach())]


def read_candidates(path: str | Path, source: str = "real") -> tuple[Tensor, Tensor]:
    """Predicted and true quality from an evaluation report's candidates CSV (``*_candidates.csv``).

    Args:
        path: the CSV written by ``qg-lightning evaluate-predictor``.
        source: ``"real"`` (segmentation models' masks), ``"synthetic"`` or ``"all"``.

    Returns:
        ``(pred, true)`` float tensors; per class (``pred_class*`` columns) for multi-class reports.
    """
    path = Path(path)
    if source not in ("real", "synthetic", "all"):
        raise ValueError(f"`--source` must be 'real', 'synthetic' or 'all', got {source!r}.")
    if not path.is_file():
        raise FileNotFoundError(
            f"Candidates CSV '{path}' not found. Write it with `qg-lightning evaluate-predictor`."
        )
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        if not {"source", "pred", "true"} <= set(fields):
            raise ValueError(
                f"'{path}' is not a candidates CSV of `qg-lightning evaluate-predictor` (columns {fields}; "
                "expected source, pred, true)."
            )
        classes = sorted(f[len("pred_") :] for f in fields if f.startswith("pred_class"))
        pred, true = [], []
        for row in reader:
            is_synthetic = row["source"] == "synthetic"
            if (source == "real" and is_synthetic) or (source == "synthetic" and not is_synthetic):
                continue
            if classes:
                pred += [float(row[f"pred_{c}"]) for c in classes]
                true += [float(row[f"true_{c}"]) for c in classes]
            else:
                pred.append(float(row["pred"]))
                true.append(float(row["true"]))
    if len(pred) < 2:
        raise ValueError(
            f"'{path}' has {len(pred)} {source} candidate values; calibration needs several. For real candidates, "
            "evaluate with --segmenter (e.g. cross-fitted snapshots) on images the predictor never trained on."
        )
    return torch.tensor(pred), torch.tensor(true)


def calibrate_checkpoint(
    predictor: str | Path,
    pred: Tensor,
    true: Tensor,
    out: str | Path,
    *,
    details: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit a calibration on ``(pred, true)`` and write a copy of the ``predictor`` checkpoint that applies it.

    The fitted map is composed with the checkpoint's existing ``calibration`` (if any), and the copy is written
    atomically to ``out`` together with ``out.with_suffix(".calibration.json")`` (the returned summary).

    Args:
        predictor: quality predictor checkpoint (``.ckpt``).
        pred: its predicted qualities on honest candidates (e.g. :func:`read_candidates`).
        true: their true Dice, same shape.
        out: the calibrated checkpoint path (``.ckpt``, not ``predictor``).
        details: extra JSON-ready entries for the summary (e.g. where the candidates came from).

    Returns:
        ``predictor``, ``out``, ``n``, ``calibration`` (the combined ``[scale, shift]``), ``fitted_on_top``,
        ``before`` and ``after`` (:func:`~qg_lightning.quality.evaluation.regression_metrics` on ``pred``).

    Raises:
        FileNotFoundError: no file at ``predictor``.
        ValueError: ``out`` is not a new ``.ckpt`` path, or ``predictor`` is not a quality predictor checkpoint.
        RuntimeError: the fit did not converge.
    """
    from qg_lightning.quality.evaluation import regression_metrics

    src, out = Path(predictor), Path(out)
    if not src.is_file():
        raise FileNotFoundError(f"--predictor '{src}' not found.")
    if out.suffix != ".ckpt":
        raise ValueError(f"`--out` must be a .ckpt path, got '{out}'.")
    if out.resolve() == src.resolve():
        raise ValueError(f"`--out` '{out}' is the input checkpoint; write the calibrated copy to a new path.")
    ckpt: dict[str, Any] = dict(load_checkpoint(src, what="quality predictor checkpoint"))
    hparams = ckpt.get("hyper_parameters")
    if not isinstance(hparams, Mapping) or "backbone" not in hparams:
        raise ValueError(f"'{src}' is not a quality predictor checkpoint (no 'backbone' hyper-parameter).")
    fitted = fit_calibration(pred, true)
    if not all(math.isfinite(v) for v in fitted) or fitted[0] <= 0:
        raise RuntimeError(f"The calibration fit did not converge (got {fitted}); check the candidates.")
    combined = compose_calibration(hparams.get("calibration"), fitted)
    ckpt["hyper_parameters"] = {**hparams, "calibration": combined}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(ckpt, out)
    summary = {
        "predictor": str(src),
        "out": str(out),
        **dict(details or {}),
        "n": int(pred.numel()),
        "calibration": combined,
        "fitted_on_top": fitted,
        "before": regression_metrics(pred, true),
        "after": regression_metrics(apply_calibration(pred, fitted), true),
    }
    out.with_suffix(".calibration.json").write_text(json.dumps(summary, indent=2))
    return summary


def __getattr__(name: str) -> Any:
    """``calibrate_cli`` moved to the CLI layer (:mod:`qg_lightning.cli_calibrate`); still importable from here."""
    if name == "calibrate_cli":
        from qg_lightning.cli_calibrate import calibrate_cli

        return calibrate_cli
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

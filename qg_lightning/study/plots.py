"""The study's PNG plots (test Dice per method, validation curves, kept fraction, predictor)."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qg_lightning.study._common import resolve_path

log = logging.getLogger(__name__)


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path)
    return str(path)


def _quality_points(
    out: Path, summary: Mapping[str, Any]
) -> tuple[list[float], list[float], list[str]] | None:
    """(pred, true, source) from the candidates CSV of the predictor's evaluation on the validation split."""
    candidates = [(summary.get("predictor") or {}).get("candidates_csv")]
    for name in candidates:
        path = resolve_path(name, out) if name else None
        if path is None or not path.is_file():
            continue
        pred, true, source = [], [], []
        with Path(path).open(newline="") as fh:
            for row in csv.DictReader(fh):
                pred.append(float(row["pred"]))
                true.append(float(row["true"]))
                source.append(
                    "synthetic" if row.get("source", "synthetic") == "synthetic" else "real (weak models)"
                )
        if pred:
            return pred, true, source
    return None


def plot_study(out: str | os.PathLike, summary: Mapping[str, Any]) -> dict[str, str | None]:
    """Write the study's PNG plots into ``out`` and return their paths (None when there is nothing to plot).

    ``dice_per_method.png`` (mean test Dice with std error bars and per-seed points),
    ``quality_pred_vs_true.png`` (predictor evaluation on the validation split), ``val_dice_curves.png`` (validation Dice, mean over
    seeds) and ``kept_fraction.png`` (fraction of unlabeled samples with q >= tau, guided "-QW" runs).
    """
    out = Path(out)
    rows = [r for r in summary.get("methods", []) if r["n_seeds"]]
    paths: dict[str, str | None] = {"dice": None, "quality": None, "val_curves": None, "kept_fraction": None}
    if rows:
        fig = _figure(max(5.0, 0.75 * len(rows) + 2), 3.8)
        ax = fig.add_subplot()
        x = np.arange(len(rows))
        means = [r["dice_best"]["mean"] if r["dice_best"]["mean"] is not None else np.nan for r in rows]
        stds = [r["dice_best"]["std"] or 0.0 for r in rows]
        colors = [
            "tab:orange"
            if r["guided"]
            else ("tab:gray" if r["host"] == "SupervisedSegmenter" else "tab:blue")
            for r in rows
        ]
        ax.bar(x, means, yerr=stds, color=colors, capsize=4, alpha=0.85)
        for i, r in enumerate(rows):
            values = r["dice_best"]["values"]
            ax.scatter(np.full(len(values), x[i]), values, color="black", s=10, zorder=3)
        ax.set_xticks(x, [r["method"] for r in rows], rotation=35, ha="right")
        ax.set_ylabel("test Dice (best-val checkpoint)")
        finite = [m for m in means if np.isfinite(m)]
        if finite:
            ax.set_ylim(max(0.0, min(finite) - 0.15), min(1.0, max(finite) + 0.1))
        ax.set_title("Test Dice (mean ± std over seeds)")
        paths["dice"] = _save(fig, out / "dice_per_method.png")

    points = _quality_points(out, summary)
    if points is not None:
        pred, true, source = points
        fig = _figure(4.6, 4.4)
        ax = fig.add_subplot()
        src = np.asarray(source)
        for label, color in (("synthetic", "tab:blue"), ("real (weak models)", "tab:red")):
            sel = src == label
            if sel.any():
                ax.scatter(
                    np.asarray(true)[sel], np.asarray(pred)[sel], s=6, alpha=0.5, color=color, label=label
                )
        ax.plot([0, 1], [0, 1], color="black", lw=0.8)
        ax.set_xlabel("true Dice of the candidate")
        ax.set_ylabel("predicted quality")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.legend(loc="upper left", fontsize=8)
        ax.set_title("Quality predictor on the validation split")
        paths["quality"] = _save(fig, out / "quality_pred_vs_true.png")

    curves = [r for r in rows if r.get("val_dice_curve")]
    if curves:
        fig = _figure(6.4, 4.0)
        ax = fig.add_subplot()
        for r in curves:
            c = r["val_dice_curve"]
            ax.plot(
                c["step"], c["value"], label=r["method"], ls="-" if r["guided"] else "--", marker=".", ms=3
            )
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("validation Dice (mean over seeds)")
        ax.legend(fontsize=7, ncol=2)
        ax.set_title("Validation Dice during training")
        paths["val_curves"] = _save(fig, out / "val_dice_curves.png")

    kept = [r for r in rows if r.get("kept_fraction_curve")]
    if kept:
        fig = _figure(6.4, 3.6)
        ax = fig.add_subplot()
        for r in kept:
            c = r["kept_fraction_curve"]
            values = np.asarray(c["value"], dtype=np.float64)
            window = max(1, len(values) // 20)
            smooth = (
                np.convolve(values, np.ones(window) / window, mode="valid")
                if values.size >= window
                else values
            )
            ax.plot(c["step"][window - 1 :], smooth, label=r["method"])
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("fraction with q >= tau")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7)
        ax.set_title("Unlabeled samples kept by quality weighting (mean over seeds)")
        paths["kept_fraction"] = _save(fig, out / "kept_fraction.png")
    paths["diagnostics"] = _plot_diagnostics(out, rows)
    return paths


def _plot_diagnostics(out: Path, rows: Sequence[Mapping[str, Any]]) -> str | None:
    """``pseudolabel_diagnostics.png``: per validation interval, Spearman between each score (predicted
    quality, teacher confidence) and the true Dice of the pseudolabels it weighted (left), and the true Dice of
    the pseudolabels the predicted quality keeps and drops beside what the oracle (the true Dice at the same
    tau) would keep and drop (right; confidence keeps almost everything, so it is left out there)."""
    diags = [(r["method"], r.get("diagnostics") or {}) for r in rows]
    diags = [(m, d) for m, d in diags if d]

    def curve(diag: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
        return (diag.get(key) or {}).get("curve")

    if not any(curve(d, f"{s}/spearman") or curve(d, f"{s}/kept_true_dice") for _, d in diags
               for s in ("quality", "confidence", "oracle")):  # fmt: skip
        return None
    fig = _figure(11.0, 3.8)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for method, diag in diags:
        for score, style in (("quality", "-"), ("confidence", "--")):
            c = curve(diag, f"{score}/spearman")
            if c:
                left.plot(c["step"], c["value"], ls=style, marker=".", ms=3, label=f"{method}: {score}")
        for score, style in (("quality", "-"), ("oracle", ":")):
            for stat, marker in (("kept_true_dice", "o"), ("dropped_true_dice", "x")):
                k = curve(diag, f"{score}/{stat}")
                if k:
                    right.plot(k["step"], k["value"], ls=style, marker=marker, ms=3,
                               label=f"{method}: {score}, {stat.split('_')[0]}")  # fmt: skip
    left.axhline(0.0, color="black", lw=0.6)
    left.set_xlabel("optimizer step")
    left.set_ylabel("Spearman(score, true Dice)")
    left.set_title("Does the score see pseudolabel quality?")
    left.legend(fontsize=7)
    right.set_xlabel("optimizer step")
    right.set_ylabel("true Dice of pseudolabels")
    right.set_title("Kept (o) / dropped (x): quality (solid), oracle (dotted)")
    right.legend(fontsize=6, ncol=2)
    return _save(fig, out / "pseudolabel_diagnostics.png")

"""What a study's numbers mean: convergence of the supervised floor, oracle headroom and the share of it that
the predictor captures, the pseudolabel diagnostics per method, and the tests on other centres.

Pure functions over the per-run ``result.json`` dicts (see :func:`~qg_lightning.study.execute_run`);
:func:`~qg_lightning.study.summarize_study` calls them and :func:`analysis_markdown` writes their section of
``results.md``.

Example:
    >>> convergence({"step": [25, 50, 75, 100], "value": [0.40, 0.50, 0.52, 0.52]})["converged"]
    True
    >>> convergence({"step": [25, 50, 75, 100], "value": [0.30, 0.40, 0.45, 0.50]})["converged"]
    False
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from qg_lightning.study.stats import mean_curve, paired_comparison

__all__ = [
    "DIAGNOSTIC_KEYS",
    "analysis_markdown",
    "convergence",
    "diagnostics_summary",
    "extra_test_summary",
    "headroom",
]

#: The diagnostics summarised per method (``diag/<key>`` in the runs' logs).
DIAGNOSTIC_KEYS: tuple[str, ...] = (
    "true_dice_mean",
    "quality/spearman",
    "quality/pearson",
    "quality/kept_frac",
    "quality/kept_true_dice",
    "quality/dropped_true_dice",
    "confidence/spearman",
    "confidence/pearson",
    "confidence/kept_frac",
    "confidence/kept_true_dice",
    "confidence/dropped_true_dice",
    "oracle/kept_frac",
    "oracle/kept_true_dice",
    "oracle/dropped_true_dice",
)


def convergence(
    curve: Mapping[str, Sequence[float]] | None, *, last: float = 0.25, tolerance: float = 0.01
) -> dict[str, Any]:
    """Did a (seed-mean) validation Dice curve plateau? METHOD.md's criterion: it changes by less than
    ``tolerance`` over the last ``last`` fraction of training.

    The change is the least-squares line through the validation points of the last quarter (steps >= 75% of
    the last step), evaluated across that quarter: robust to the noise of single validations, unlike a
    difference of two points.

    Returns:
        ``{"change", "converged", "window_steps", "n_points"}``; ``converged`` is ``None`` with fewer than
        two points in the window.
    """
    if not curve or not curve.get("step"):
        return {"change": None, "converged": None, "window_steps": None, "n_points": 0}
    steps = np.asarray(curve["step"], dtype=float)
    values = np.asarray(curve["value"], dtype=float)
    start = steps.max() * (1 - last)
    window = steps >= start
    n = int(window.sum())
    if n < 2:
        return {
            "change": None,
            "converged": None,
            "window_steps": [float(start), float(steps.max())],
            "n_points": n,
        }
    slope = float(np.polyfit(steps[window], values[window], 1)[0])
    change = slope * float(steps[window].max() - steps[window].min())
    return {
        "change": change,
        "converged": abs(change) < tolerance,
        "window_steps": [float(steps[window].min()), float(steps[window].max())],
        "n_points": n,
    }


def _dice(result: Mapping[str, Any], which: str = "test_best") -> float | None:
    value = ((result.get(which) or {}).get("dice") or {}).get("mean")
    return float(value) if value is not None else None


def headroom(
    results: Mapping[str, Mapping[int, Mapping[str, Any]]],
    *,
    plain: str = "PL-C",
    guided: str = "PL-QW",
    oracle: str = "PL-oracle",
    which: str = "test_best",
) -> dict[str, Any] | None:
    """The ceiling of the weighting and how much of it the predictor buys (test Dice, paired over seeds).

    ``headroom = oracle - plain``; ``captured = guided - plain``; ``share = captured / headroom`` (of the
    seed means; ``None`` when the headroom is not positive: then no predictor can help through this
    weighting in this regime).

    Returns:
        ``None`` unless the plain and oracle methods both have results.
    """
    if plain not in results or oracle not in results:
        return None

    def scores(name: str) -> dict[int, float]:
        return {s: v for s, r in results.get(name, {}).items() if (v := _dice(r, which)) is not None}

    room = paired_comparison(scores(oracle), scores(plain))
    out: dict[str, Any] = {"plain": plain, "guided": guided, "oracle": oracle, "checkpoint": which[5:]}
    out["headroom"] = room
    got = paired_comparison(scores(guided), scores(plain)) if guided in results else None
    out["captured"] = got
    share = None
    if got and got["mean_diff"] is not None and room["mean_diff"] is not None and room["mean_diff"] > 0:
        share = got["mean_diff"] / room["mean_diff"]
    out["share"] = share
    return out


def diagnostics_summary(runs: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Per diagnostic: the mean over seeds of each run's mean over its validation intervals, and the
    seed-mean curve. Empty when the runs logged no diagnostics."""
    out: dict[str, Any] = {}
    for key in DIAGNOSTIC_KEYS:
        curves = [(r.get("diagnostics_curves") or {}).get(key) for r in runs.values()]
        curves = [c for c in curves if c and c.get("value")]
        if not curves:
            continue
        arrays = [np.array([math.nan if v is None else v for v in c["value"]], dtype=float) for c in curves]
        per_run = [float(np.nanmean(a)) if np.isfinite(a).any() else math.nan for a in arrays]
        finite = [v for v in per_run if math.isfinite(v)]
        out[key] = {
            "mean": float(np.mean(finite)) if finite else None,
            "std": float(np.std(finite, ddof=1)) if len(finite) > 1 else None,
            "n_runs": len(finite),
            "curve": mean_curve(curves),
        }
    return out


def extra_test_summary(runs: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Per extra test folder: mean +- std over seeds of the test Dice (best checkpoint and last weights)."""
    names = sorted({name for r in runs.values() for name in (r.get("extra_test") or {})})
    out: dict[str, Any] = {}
    for name in names:
        block: dict[str, Any] = {}
        for which in ("best", "last"):
            values = [
                (((r.get("extra_test") or {}).get(name) or {}).get(which) or {}).get("dice", {}).get("mean")
                for r in runs.values()
            ]
            finite = [float(v) for v in values if v is not None]
            block[which] = {
                "mean": float(np.mean(finite)) if finite else None,
                "std": float(np.std(finite, ddof=1)) if len(finite) > 1 else None,
                "n": len(finite),
            }
        out[name] = block
    return out


def _fmt(value: float | None, digits: int = 3, sign: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def analysis_markdown(summary: Mapping[str, Any]) -> list[str]:
    """The ``results.md`` section on convergence, headroom, pseudolabel diagnostics and other centres."""
    lines: list[str] = []
    conv = summary.get("convergence")
    if conv:
        verdict = {True: "**converged**", False: "**NOT converged**", None: "undetermined"}[
            conv.get("converged")
        ]
        lines += [
            "",
            "## Convergence of the supervised floor",
            "",
            f"SUP's mean validation Dice changed by {_fmt(conv.get('change'), sign=True)} over the last quarter "
            f"of training (least-squares line through {conv.get('n_points')} validations, steps "
            f"{conv.get('window_steps')}): {verdict} by METHOD.md's criterion (|change| < 0.01).",
        ]
    room = summary.get("headroom")
    if room:
        h, c = room.get("headroom") or {}, room.get("captured") or {}
        lines += [
            "",
            "## Oracle headroom of the weighting",
            "",
            "| Headroom: PL-oracle − PL-C | Captured: PL-QW − PL-C | Share captured | Per-seed headroom |",
            "|---|---|---|---|",
            f"| {_fmt(h.get('mean_diff'), sign=True)} | {_fmt(c.get('mean_diff'), sign=True)} | "
            f"{_fmt(room.get('share'), 2)} | {', '.join(_fmt(d, sign=True) for d in h.get('diffs', []))} |",
        ]
    diag_rows = [(r["method"], r.get("diagnostics") or {}) for r in summary.get("methods", [])]
    diag_rows = [(m, d) for m, d in diag_rows if d]
    if diag_rows:
        lines += [
            "",
            "## Pseudolabel diagnostics (training, mean over validation intervals and seeds)",
            "",
            "How well each score sees the true Dice of the very pseudolabels it weighted; kept = score >= tau. "
            "The `oracle` rows score each pseudolabel by its true Dice: what a perfect predictor would keep "
            "at the same tau.",
            "",
            "| Method | True Dice of pseudolabels | Score | Spearman | Pearson | Kept fraction | "
            "True Dice kept | True Dice dropped |",
            "|" + "---|" * 8,
        ]
        for method, diag in diag_rows:
            true = _fmt((diag.get("true_dice_mean") or {}).get("mean"))
            for score in ("quality", "confidence", "oracle"):
                if f"{score}/kept_frac" not in diag:
                    continue

                def get(stat: str, score: str = score, diag: Mapping[str, Any] = diag) -> str:
                    return _fmt((diag.get(f"{score}/{stat}") or {}).get("mean"))

                lines.append(
                    f"| {method} | {true} | {score} | {get('spearman')} | {get('pearson')} | "
                    f"{get('kept_frac')} | {get('kept_true_dice')} | {get('dropped_true_dice')} |"
                )
    extra_rows = [(r["method"], r.get("extra_test") or {}) for r in summary.get("methods", [])]
    names = sorted({n for _, e in extra_rows for n in e})
    if names:
        lines += [
            "",
            "## Other centres (every image of each folder; best-validation checkpoint)",
            "",
            "| Method | In-domain test Dice | " + " | ".join(f"{n} Dice" for n in names) + " |",
            "|" + "---|" * (2 + len(names)),
        ]
        for row in summary.get("methods", []):
            if not row.get("n_seeds"):
                continue
            extra = row.get("extra_test") or {}
            cells = []
            for n in names:
                b = (extra.get(n) or {}).get("best") or {}
                cells.append(f"{_fmt(b.get('mean'))} ± {_fmt(b.get('std'))}")
            d = row["dice_best"]
            lines.append(
                f"| {row['method']} | {_fmt(d['mean'])} ± {_fmt(d['std'])} | " + " | ".join(cells) + " |"
            )
    return lines

"""Small statistics of the study: mean +- std over seeds, paired comparisons over seeds, mean curves."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["format_mean_std", "mean_curve", "paired_comparison", "seed_stats"]


def format_mean_std(mean: float | None, std: float | None, digits: int = 3) -> str:
    """``"0.812 ± 0.011"``; the std is ``n/a`` when undefined (one seed), the mean ``n/a`` when missing.

    Example:
        >>> format_mean_std(0.81234, 0.0111), format_mean_std(12.345, None, digits=1)
        ('0.812 ± 0.011', '12.3 ± n/a')
    """
    if mean is None or not math.isfinite(mean):
        return "n/a"
    s = "n/a" if std is None or not math.isfinite(std) else f"{std:.{digits}f}"
    return f"{mean:.{digits}f} ± {s}"


def seed_stats(values: Sequence[float]) -> dict[str, Any]:
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = int(arr.size)
    return {
        "mean": float(arr.mean()) if n else None,
        "std": float(arr.std(ddof=1)) if n > 1 else None,
        "n": n,
        "values": [float(v) for v in arr],
    }


def paired_comparison(guided: Mapping[int, float], plain: Mapping[int, float]) -> dict[str, Any]:
    """Paired comparison over the seeds both methods finished: guided minus plain.

    Returns ``seeds``, ``diffs`` (per seed), ``mean_diff``, ``std_diff``, ``p_value`` (two-sided paired
    t-test, ``scipy.stats.ttest_rel``; None with fewer than 2 seeds or zero variance), ``better`` /
    ``worse`` / ``ties`` (sign count).

    Example:
        >>> r = paired_comparison({0: 0.80, 1: 0.82, 2: 0.79}, {0: 0.78, 1: 0.80, 2: 0.80})
        >>> round(r["mean_diff"], 4), r["better"], r["worse"], r["p_value"] is not None
        (0.01, 2, 1, True)
    """
    seeds = sorted(set(guided) & set(plain))
    diffs = [float(guided[s] - plain[s]) for s in seeds]
    p_value = None
    if len(seeds) >= 2:
        from scipy.stats import ttest_rel

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result = ttest_rel([guided[s] for s in seeds], [plain[s] for s in seeds])
        p = float(result.pvalue)
        p_value = p if math.isfinite(p) else None
    return {
        "seeds": seeds,
        "diffs": diffs,
        "mean_diff": float(np.mean(diffs)) if diffs else None,
        "std_diff": float(np.std(diffs, ddof=1)) if len(diffs) > 1 else None,
        "p_value": p_value,
        "better": sum(d > 0 for d in diffs),
        "worse": sum(d < 0 for d in diffs),
        "ties": sum(d == 0 for d in diffs),
    }


def _nanmean(values: Sequence[float | None]) -> float | None:
    """Mean of the finite values (``None`` and NaN are missing: e.g. a correlation of a constant score)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def mean_curve(curves: Sequence[Mapping[str, list] | None]) -> dict[str, list] | None:
    """Mean over seeds at the steps every seed logged."""
    curves = [c for c in curves if c and c.get("step")]
    if not curves:
        return None
    maps = [dict(zip(c["step"], c["value"], strict=True)) for c in curves]
    steps = sorted(set.intersection(*(set(m) for m in maps)))
    return {
        "step": steps,
        "value": [_nanmean([m[s] for m in maps]) for s in steps],
        "n_seeds": len(maps),
    }

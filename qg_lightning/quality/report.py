"""Writing an evaluation of a quality predictor: JSON-safe values, the calibration scatter and the gallery of
worst-predicted candidates (PNGs), and the per-candidate CSV.

:func:`~qg_lightning.quality.evaluation.evaluate_predictor` writes them next to its report;
:mod:`~qg_lightning.quality.scoring` and :mod:`~qg_lightning.quality.gallery` reuse the galleries.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from qg_lightning.masks import labels_from_foreground
from qg_lightning.quality.candidates import SYNTHETIC, as_float_images
from qg_lightning.quality.eval_metrics import paired, regression_metrics

__all__ = ["json_safe", "save_calibration_png", "save_worst_png", "write_candidates_csv"]


def json_safe(obj: Any) -> Any:
    """NaN / inf -> None (JSON has no NaN), numpy scalars and 0-d tensors -> Python, paths -> str,
    recursively (the one JSON-safe conversion of the package).

    Example:
        >>> json_safe({"a": float("nan"), "b": (np.int64(2), Path("x"))})
        {'a': None, 'b': [2, 'x']}
    """
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # 0-d tensors
        return json_safe(obj.item())
    return obj


def format_value(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _agg_figure(figsize: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_calibration_png(
    pred: Any, true: Any, sources: Sequence[str], path: str | os.PathLike, *, title: str = "Quality predictor"
) -> Path:
    """Scatter of predicted vs true Dice coloured by source, with the diagonal; MAE / Pearson in the title.

    Args:
        pred: predicted quality per candidate (mean over classes), ``(M,)``.
        true: true Dice per candidate, ``(M,)``.
        sources: source label per candidate (``"synthetic"`` or a segmenter's name).
        path: PNG file to write (folder created).
        title: first line of the title.

    Returns:
        The written path.

    Example:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = pathlib.Path(tmp) / "c.png"
        ...     p = save_calibration_png([0.2, 0.8], [0.3, 0.9], ["synthetic", "unet"], path)
        ...     p.stat().st_size > 0
        True
    """
    p, t = paired(pred, true, ("pred", "true"))
    sources = [str(s) for s in sources]
    if len(sources) != p.size:
        raise ValueError(f"`sources` must have one label per candidate ({p.size}), got {len(sources)}.")
    m = regression_metrics(p, t)
    fig = _agg_figure((6.4, 6.0))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color="0.5", lw=1, ls="--", label="ideal")
    names = [SYNTHETIC] + sorted({s for s in sources if s != SYNTHETIC})
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink"]
    src = np.asarray(sources)
    for i, name in enumerate(names):
        sel = src == name
        if not sel.any():
            continue
        sm = regression_metrics(p[sel], t[sel])
        ax.scatter(
            t[sel],
            p[sel],
            s=10,
            alpha=0.5,
            color=colors[i % len(colors)],
            label=f"{name} (n={sm['n']}, MAE {format_value(sm['mae'])}, r {format_value(sm['pearson'])})",
        )
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("true Dice")
    ax.set_ylabel("predicted quality")
    ax.set_title(
        f"{title}\nMAE {format_value(m['mae'])}, Pearson {format_value(m['pearson'])}, Spearman {format_value(m['spearman'])}"
    )
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


#: Candidate colours (per foreground class) of the overlays: chosen to stand out on reddish medical images.
_CANDIDATE_COLORS = ((0.15, 0.55, 1.0), (1.0, 0.85, 0.1), (1.0, 0.2, 0.8), (0.6, 0.3, 1.0), (1.0, 0.5, 0.0))
_TRUTH_COLOR = (0.1, 1.0, 0.1)


def overlay_rgb(image: Tensor, candidate: Tensor, truth: Tensor | None) -> np.ndarray:
    """``(H, W, 3)`` uint8: candidate filled and outlined per class, ground truth as a green outline."""
    from qg_lightning.visualize import mask_boundary

    rgb = as_float_images(image.unsqueeze(0)).cpu()
    rgb = (rgb.repeat(1, 3, 1, 1) if rgb.shape[1] == 1 else rgb[:, :3]).clamp(0, 1)[0]
    pred = labels_from_foreground(candidate.unsqueeze(0).float().cpu())
    for k in range(1, int(pred.max()) + 1):
        color = torch.tensor(_CANDIDATE_COLORS[(k - 1) % len(_CANDIDATE_COLORS)]).view(3, 1, 1)
        sel = pred == k
        rgb = torch.where(sel, rgb * 0.6 + color * 0.4, rgb)
        rgb = torch.where(mask_boundary(sel.long())[0], color, rgb)
    if truth is not None:
        target = labels_from_foreground(truth.unsqueeze(0).float().cpu())
        rgb = torch.where(mask_boundary(target)[0], torch.tensor(_TRUTH_COLOR).view(3, 1, 1), rgb)
    return (rgb.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def panel_figure(panels: Sequence[tuple[np.ndarray, str]], *, title: str, ncols: int, size: float = 2.4):
    """A figure with one image per panel and its caption above it.

    The tiles are composed into one canvas shown by a single axes (one matplotlib axes per panel is slow for
    the ~50 panels of the corruption gallery); captions are text at pixel positions.
    """
    import cv2

    dpi = 100
    n = max(1, len(panels))
    ncols = max(1, min(ncols, n))
    nrows = (n + ncols - 1) // ncols
    tile, cap, top, pad = int(size * dpi), 34, 36, 8
    width, height = ncols * (tile + pad) + pad, nrows * (tile + cap + pad) + top
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    spots = []
    for i, (rgb, caption) in enumerate(panels):
        r, c = divmod(i, ncols)
        x, y = pad + c * (tile + pad), top + r * (tile + cap + pad) + cap
        h, w = rgb.shape[:2]
        scale = tile / max(h, w)
        th, tw = max(1, round(h * scale)), max(1, round(w * scale))
        canvas[y : y + th, x : x + tw] = cv2.resize(rgb, (tw, th), interpolation=cv2.INTER_NEAREST)
        spots.append((x + tile / 2, y - 3, caption))
    fig = _agg_figure((width / dpi, height / dpi))
    fig.set_dpi(dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    for x, y, caption in spots:
        ax.text(x, y, caption, ha="center", va="bottom", fontsize=7)
    ax.text(
        width / 2, top / 2, title if panels else f"{title} (no cases)", ha="center", va="center", fontsize=9
    )
    return fig


def _panel_png(
    panels: Sequence[tuple[np.ndarray, str]], path: str | os.PathLike, *, title: str, ncols: int = 4
) -> Path:
    fig = panel_figure(panels, title=title, ncols=ncols, size=2.6)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def save_worst_png(
    images: Tensor,
    candidates: Tensor,
    truths: Tensor | None,
    captions: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str = "",
    ncols: int = 4,
) -> Path:
    """A grid of overlays (candidate filled, ground truth outlined in green) with one caption each.

    Args:
        images: ``(B, C, H, W)`` float in [0, 1] or ``uint8``.
        candidates: ``(B, K-1, H, W)`` candidate masks.
        truths: ``(B, K-1, H, W)`` ground-truth masks, or None (no outline).
        captions: one caption per panel.
        path: PNG to write.
        title: figure title.
        ncols: panels per row.

    Example:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     p = save_worst_png(torch.rand(2, 3, 16, 16), torch.ones(2, 1, 16, 16), None, ["a", "b"],
        ...                        pathlib.Path(tmp) / "w.png")
        ...     p.is_file()
        True
    """
    if len(captions) != images.shape[0] or candidates.shape[0] != images.shape[0]:
        raise ValueError(
            f"`images` ({images.shape[0]}), `candidates` ({candidates.shape[0]}) and `captions` "
            f"({len(captions)}) must have the same length."
        )
    panels = [
        (overlay_rgb(images[i], candidates[i], truths[i] if truths is not None else None), captions[i])
        for i in range(images.shape[0])
    ]
    return _panel_png(panels, path, title=title, ncols=ncols)


def _csv_number(value: float) -> str:
    return f"{value:.6f}" if math.isfinite(value) else ""


def write_candidates_csv(path, pred, true, sources, cats, corruptions, ids, scores) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    k = pred.shape[1]
    per_class = [f"{w}_class{c + 1}" for c in range(k) for w in ("pred", "true")] if k > 1 else []
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["id", "source", "category", "corruption", "pred", "true", *per_class, *sorted(scores)]
        )
        for i in range(pred.shape[0]):
            extra = [f"{v:.6f}" for c in range(k) for v in (pred[i, c], true[i, c])] if k > 1 else []
            writer.writerow(
                [
                    ids[i] if ids is not None else i,
                    sources[i],
                    cats[i],
                    (corruptions[i] or "") if corruptions is not None else "",
                    f"{pred[i].mean():.6f}",
                    f"{true[i].mean():.6f}",
                    *extra,
                    *(_csv_number(-scores[s][i] if s == "entropy" else scores[s][i]) for s in sorted(scores)),
                ]
            )
    return path

"""The study's summary: per-method statistics over seeds, paired comparisons, ``results.md``."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from qg_lightning.study._common import SUMMARY_FORMAT, _fmt_duration, _now, _read_json, _write_json
from qg_lightning.study.analysis import (
    analysis_markdown,
    convergence,
    diagnostics_summary,
    extra_test_summary,
    headroom,
)
from qg_lightning.study.methods import PAIRS
from qg_lightning.study.plots import plot_study
from qg_lightning.study.stats import format_mean_std, mean_curve, paired_comparison, seed_stats

log = logging.getLogger(__name__)


def _metric(result: Mapping[str, Any], which: str, name: str) -> float | None:
    block = result.get(which) or {}
    value = (block.get(name) or {}).get("mean")
    return float(value) if value is not None else None


def _load_results(out: Path) -> dict[str, dict[int, dict[str, Any]]]:
    results: dict[str, dict[int, dict[str, Any]]] = {}
    for path in sorted((out / "runs").glob("*/seed*/result.json")):
        result = _read_json(path)
        if result.get("status") != "done":
            continue
        results.setdefault(result["method"], {})[int(result["seed"])] = result
    return results


def summarize_study(
    out: str | os.PathLike,
    *,
    methods: Sequence[str] | None = None,
    pairs: Sequence[tuple[str, str]] = PAIRS,
    plots: bool = True,
) -> dict[str, Any]:
    """Aggregate the finished runs of a study folder into ``summary.json``, ``results.md`` and plots.

    Per method (in ``methods`` order, then any other method found): Dice / IoU / HD95 of the best-validation
    checkpoint and of the last weights, as mean +- std over seeds of the per-run test means; mean validation
    Dice and kept-fraction curves; wall time. Per pair ``(plain, guided)`` with both present: the paired
    comparison of test Dice (best-validation checkpoint) over common seeds.

    Args:
        out: the study folder.
        methods: method order of the table (default: ``study.json``'s, else alphabetical).
        pairs: ``(plain, guided)`` pairs to compare.
        plots: also write the PNG plots.

    Returns:
        The summary dict (also written to ``OUT/summary.json``).
    """
    out = Path(out).expanduser()
    study = _read_json(out / "study.json") if (out / "study.json").is_file() else {}
    results = _load_results(out)
    order = list(methods) if methods is not None else list(study.get("methods", []))
    order += sorted(m for m in results if m not in order)
    rows = []
    for name in order:
        runs = results.get(name, {})
        row: dict[str, Any] = {"method": name, "seeds": sorted(runs), "n_seeds": len(runs)}
        for which, tag in (("test_best", "best"), ("test_last", "last")):
            for metric in ("dice", "iou", "hd95"):
                row[f"{metric}_{tag}"] = seed_stats([_metric(r, which, metric) for r in runs.values()])
        any_run = next(iter(runs.values()), None)
        row["guided"] = bool(any_run and any_run.get("guidance"))
        row["host"] = any_run.get("host") if any_run else None
        row["wall_time_s"] = seed_stats([r.get("wall_time_s") for r in runs.values()])
        row["steps"] = seed_stats([r.get("steps") for r in runs.values()])
        row["val_dice_curve"] = mean_curve([r.get("val_dice_curve") for r in runs.values()])
        row["kept_fraction_curve"] = mean_curve([r.get("kept_fraction_curve") for r in runs.values()])
        row["best_val_dice"] = seed_stats([(r.get("best") or {}).get("val_dice") for r in runs.values()])
        row["diagnostics"] = diagnostics_summary(runs)
        row["extra_test"] = extra_test_summary(runs)
        rows.append(row)
    present = {r["method"] for r in rows if r["n_seeds"]}
    comparisons = []
    for plain, guided in pairs:
        if plain not in present or guided not in present:
            continue
        for which in ("test_best", "test_last"):
            g = {s: _metric(r, which, "dice") for s, r in results[guided].items()}
            p = {s: _metric(r, which, "dice") for s, r in results[plain].items()}
            g = {s: v for s, v in g.items() if v is not None}
            p = {s: v for s, v in p.items() if v is not None}
            comparisons.append(
                {
                    "guided": guided,
                    "plain": plain,
                    "checkpoint": which.split("_")[1],
                    "metric": "dice",
                    **paired_comparison(g, p),
                }
            )
    all_results = [r for runs in results.values() for r in runs.values()]
    ssl_results = [r for r in all_results if (r.get("data") or {}).get("use_unlabeled")]
    any_result = (ssl_results or all_results or [None])[0]
    stage_times = [r.get("wall_time_s") or 0.0 for r in all_results]
    info_path = out / "predictor" / "study_predictor.json"
    predictor = _read_json(info_path) if info_path.is_file() else None
    summary = {
        "format": SUMMARY_FORMAT,
        "out": str(out),
        "study": study,
        "data": {
            k: v
            for k, v in (any_result or {}).get("data", {}).items()
            if k.startswith("n_") or k in ("root", "label_ratio", "split")
        },
        "schedule": (any_result or {}).get("schedule"),
        "pretrained": bool((study.get("fingerprint") or {}).get("encoder_weights")),
        "methods": rows,
        "comparisons": comparisons,
        "convergence": convergence(next((r["val_dice_curve"] for r in rows if r["method"] == "SUP"), None)),
        "headroom": headroom(results),
        "predictor": predictor,
        "compute_time_s": float(sum(stage_times) + ((predictor or {}).get("wall_time_s") or 0.0)),
        "failed_runs": sorted(
            str(p.parent.relative_to(out))
            for p in (out / "runs").glob("*/seed*/error.json")
            if not (p.parent / "result.json").is_file()
        ),
        "updated_at": _now(),
    }
    if plots:
        summary["plots"] = plot_study(out, summary)
    write_results_markdown(out / "results.md", summary)
    _write_json(out / "summary.json", summary, base=out)
    return summary


def _comparison_cell(comparisons: Sequence[Mapping[str, Any]], method: str) -> str:
    parts = []
    for c in comparisons:
        if c["guided"] != method or c["checkpoint"] != "best" or c["mean_diff"] is None:
            continue
        p = f"p={c['p_value']:.2f}" if c["p_value"] is not None else "p n/a"
        parts.append(f"{c['mean_diff']:+.3f} vs {c['plain']} ({p}; {c['better']}↑ {c['worse']}↓)")
    return "<br>".join(parts)


def _predictor_lines(predictor: Mapping[str, Any] | None) -> list[str]:
    """The quality predictor's line of ``results.md``: its recipe and its figures on the validation split."""
    if not predictor:
        return []
    recipe = predictor.get("recipe") or {}

    def fig(block: Mapping[str, Any] | None, key: str) -> str:
        value = (block or {}).get(key)
        return f"{value:.3f}" if isinstance(value, (int, float)) else "n/a"

    evaluations = predictor.get("evaluations") or {}
    lines = [
        f"- **Quality predictor**: the library's recipe (`PredictorRecipe`: {recipe.get('backbone')}, "
        f"{recipe.get('snapshot_folds')} cross-fitted snapshot folds, p_weak {recipe.get('p_weak')}, snapshot "
        f"threshold {recipe.get('snapshot_threshold')}, error-map weight {recipe.get('error_map_weight')}, "
        f"{recipe.get('max_epochs')} epochs at {recipe.get('image_size')} px, calibration "
        f"{recipe.get('calibration')}), trained on the labeled images only; on the validation split:"
    ]
    for name, label in (
        ("uncalibrated", "uncalibrated"),
        ("calibrated", "calibrated (fitted on these masks: in-sample)"),
        ("calibrated_tta", "calibrated + flip TTA"),
    ):
        ev = evaluations.get(name)
        if not ev:
            continue
        real, syn = ev.get("real") or {}, ev.get("synthetic") or {}
        lines.append(
            f"  - {label}: real masks (snapshot models) Pearson {fig(real, 'pearson')}, Spearman "
            f"{fig(real, 'spearman')}, MAE {fig(real, 'mae')} (constant guess {fig(real, 'constant_baseline_mae')},"
            f" n={real.get('n', 'n/a')}); synthetic candidates Pearson {fig(syn, 'pearson')}, MAE {fig(syn, 'mae')}."
        )
    return lines


def write_results_markdown(path: str | os.PathLike, summary: Mapping[str, Any]) -> Path:
    """Write ``results.md``: the table (first column the method, second its mean test Dice) and the paired
    comparisons.

    Returns:
        The path written.
    """
    path = Path(path)
    fp = (summary.get("study") or {}).get("fingerprint") or {}
    preset = fp.get("preset") or {}
    data = summary.get("data") or {}
    sched = summary.get("schedule") or {}
    lines = ["# Quality-guidance study: results", ""]
    root = fp.get("root") or "embedded synthetic data"
    lines.append(
        f"- **Data**: {root}; {data.get('n_train', '?')} train images ({data.get('n_labeled', '?')} labeled, "
        f"{data.get('n_unlabeled_used', '?')} unlabeled used), {data.get('n_val', '?')} validation, "
        f"{data.get('n_test', '?')} test; split `split.json` (seed {fp.get('split_seed', '?')})."
    )
    lines.append(
        f"- **Preset**: `{preset.get('name', '?')}` ({preset.get('description', '')}): "
        f"{preset.get('image_size')} px, {preset.get('arch')}/{preset.get('encoder_name')}, "
        f"{sched.get('max_steps', '?')} optimizer steps per run (batch {preset.get('batch_size')} labeled + "
        f"{preset.get('unlabeled_batch_size')} unlabeled), validation every {sched.get('val_every', '?')} "
        "steps."
    )
    weights = fp.get("encoder_weights")
    lines.append(
        "- **Encoders**: "
        + (
            f"pretrained (`{weights}`)."
            if weights
            else "randomly initialised (no pretrained weights; the paper "
            "uses ImageNet weights, so absolute numbers are lower than published)."
        )
    )
    seeds = sorted({s for r in summary.get("methods", []) for s in r.get("seeds", [])})
    lines.append(
        f"- **Seeds**: {', '.join(map(str, seeds)) or 'none'}. Test figures: per-image mean over the test "
        "split for each run, then mean ± std over seeds. Model selection (best checkpoint) on validation "
        "Dice only."
    )
    study = summary.get("study") or {}
    env = study.get("environment") or {}
    if env:
        lines.append(
            f"- **Machine**: {env.get('platform')}, {env.get('cpu_count')} CPUs ({env.get('torch_threads')} "
            f"torch threads), GPU: {env.get('cuda') or 'none'}; torch {env.get('torch')}, lightning "
            f"{env.get('lightning')}."
        )
    if study.get("command"):
        lines.append(f"- **Command**: `{study['command']}`")
    lines.append(
        f"- **Compute time** (sum of all stages, resumed sessions included): "
        f"{_fmt_duration(summary.get('compute_time_s'))}."
    )
    lines += _predictor_lines(summary.get("predictor"))
    lines += [
        "",
        "| Method | Dice | IoU | HD95 (px) | Dice (last) | IoU (last) | HD95 (last) | Guided − plain host "
        "(Dice, paired over seeds) | Seeds | Time per run |",
        "|" + "---|" * 10,
    ]
    comparisons = summary.get("comparisons", [])
    for row in summary.get("methods", []):
        if not row["n_seeds"]:
            continue

        def cell(key: str, digits: int = 3, row: Mapping[str, Any] = row) -> str:
            return format_mean_std(row[key]["mean"], row[key]["std"], digits)

        lines.append(
            f"| {row['method']} | {cell('dice_best')} | {cell('iou_best')} | {cell('hd95_best', 1)} | "
            f"{cell('dice_last')} | {cell('iou_last')} | {cell('hd95_last', 1)} | "
            f"{_comparison_cell(comparisons, row['method'])} | {row['n_seeds']} | "
            f"{_fmt_duration(row['wall_time_s']['mean'])} |"
        )
    best = [c for c in comparisons if c["checkpoint"] == "best"]
    if best:
        lines += [
            "",
            "## Paired comparisons (test Dice, best-validation checkpoint)",
            "",
            "| Guided | Plain host | Mean difference | Per-seed differences | Paired t-test p | "
            "Guided better / worse / tied | Mean difference, last weights |",
            "|" + "---|" * 7,
        ]
        last = {(c["guided"], c["plain"]): c for c in comparisons if c["checkpoint"] == "last"}
        for c in best:
            diffs = ", ".join(f"{d:+.3f}" for d in c["diffs"])
            p = f"{c['p_value']:.3f}" if c["p_value"] is not None else "n/a (< 2 seeds)"
            lc = last.get((c["guided"], c["plain"]))
            ld = f"{lc['mean_diff']:+.3f}" if lc and lc["mean_diff"] is not None else "n/a"
            md = f"{c['mean_diff']:+.3f}" if c["mean_diff"] is not None else "n/a"
            lines.append(
                f"| {c['guided']} | {c['plain']} | {md} | {diffs} | {p} | {c['better']} / {c['worse']} / "
                f"{c['ties']} | {ld} |"
            )
    lines += analysis_markdown(summary)
    plots = summary.get("plots") or {}
    if plots:
        lines += ["", "## Plots", ""]
        for key, title in (
            ("dice", "Test Dice per method"),
            ("quality", "Predicted vs true quality"),
            ("val_curves", "Validation Dice during training"),
            ("kept_fraction", "Unlabeled samples kept (q >= tau)"),
            ("diagnostics", "Pseudolabel diagnostics: score vs true Dice"),
        ):
            if plots.get(key):
                lines.append(f"![{title}]({Path(plots[key]).name})")
    failed = summary.get("failed_runs") or []
    if failed:
        lines += [
            "",
            f"**Failed runs** (see their error.json; rerun the command to retry): {', '.join(failed)}",
        ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path

"""``qg-lightning study``: the command-line layer over :func:`~qg_lightning.study.run_study`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qg_lightning.study._common import _fmt_duration, _json_safe
from qg_lightning.study.config import StudyConfig
from qg_lightning.study.estimate import estimate_study
from qg_lightning.study.methods import DEFAULT_METHODS, METHODS
from qg_lightning.study.pipeline import run_study
from qg_lightning.study.presets import PRESETS, StudyPreset

log = logging.getLogger(__name__)


def _parse_override(text: str, preset: StudyPreset) -> tuple[str, Any]:
    """``"FIELD=VALUE"`` -> ``(field, typed value)`` for :meth:`StudyPreset.replace` (``--set``);
    ``recipe.FIELD=VALUE`` changes a field of the predictor recipe (JSON values: ``[1, 2]``, ``null``).

    Example:
        >>> cpu = PRESETS["cpu"]
        >>> _parse_override("val_every=12.5", cpu), _parse_override("patience=none", cpu)
        (('val_every', 12.5), ('patience', None))
        >>> _parse_override("recipe.max_epochs=10", cpu)[1].max_epochs
        10
    """
    if "=" not in text:
        raise ValueError(f"`--set` expects FIELD=VALUE, got {text!r}.")
    key, raw = text.split("=", 1)
    if key.startswith("recipe."):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        try:
            return "recipe", preset.recipe.replace(**{key[len("recipe.") :]: value})
        except (TypeError, ValueError) as err:
            raise ValueError(f"`--set {text}`: {err}") from None
    fields = {f.name: f for f in dataclasses.fields(preset)}
    if key not in fields:
        raise ValueError(f"`--set {text}`: unknown preset field {key!r}; valid fields: {sorted(fields)}.")
    kind = str(fields[key].type)
    try:
        if raw.lower() in ("none", "null") and "None" in kind:
            return key, None
        if kind.startswith("int"):
            return key, int(raw)
        if kind.startswith("float"):
            return key, float(raw)
    except ValueError:
        raise ValueError(f"`--set {text}`: {key} must be of type {kind}, got {raw!r}.") from None
    return key, raw


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qg-lightning study",
        description="Run the quality-guidance study: split, cross-fitted snapshots, quality predictor and "
        "its evaluation, then every method x seed (plain and quality-guided, same seeds and budget), with a "
        "results table, summary JSON and plots in --out. Rerun the same command to resume.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--root", help="dataset folder in the standard layout (images/, masks/, optional unlabeled/)"
    )
    src.add_argument("--synthetic", action="store_true", help="use the embedded synthetic dataset")
    lab = p.add_mutually_exclusive_group()
    lab.add_argument("--n-labeled", type=int, default=None, help="number of labeled training images")
    lab.add_argument(
        "--labeled-fraction",
        type=float,
        default=None,
        help="labeled fraction of the training split (default: the preset's, 0.1 for cpu/paper)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), help=f"from {list(METHODS)}")
    p.add_argument("--out", required=True, help="results folder (reuse it to resume)")
    p.add_argument(
        "--split-seed", type=int, default=0, help="seed of the split, snapshot folds and predictor data"
    )
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--test-fraction", type=float, default=0.15)
    p.add_argument("--in-channels", type=int, default=3)
    p.add_argument("--num-classes", type=int, default=2)
    p.add_argument(
        "--encoder-weights",
        default=None,
        help="e.g. imagenet (must be in your local cache); default: random init",
    )
    p.add_argument(
        "--predictor", default=None, help="use this quality predictor checkpoint instead of training one"
    )
    p.add_argument(
        "--unlabeled-root",
        default=None,
        help="a folder of extra unlabeled images (no masks) from another source, as in the paper's protocol "
        "(with --labeled-fraction 1)",
    )
    p.add_argument(
        "--extra-test",
        nargs="+",
        default=[],
        metavar="ROOT",
        help="other labeled folders (standard layout) on which every final model is also tested",
    )
    p.add_argument(
        "--no-diagnostics",
        dest="diagnostics",
        action="store_false",
        help="do not give the hidden masks of carved-out unlabeled images to the runs (no PL-oracle, no diag/*)",
    )
    p.add_argument("--mask-dir", default="masks", help="mask sub-folder of --root (e.g. masks_3class)")
    p.add_argument("--accelerator", default="auto")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--keep-checkpoints", action="store_true", help="keep each run's best/last checkpoints")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a preset field, e.g. --set budget=600 --set image_size=128 (repeatable)",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        help="training length per run in the preset's unit (steps for cpu/smoke, epochs for paper); the "
        "validation interval and all warm-ups and ramps are scaled with it",
    )
    p.add_argument(
        "--target-minutes",
        type=float,
        default=None,
        help="with --estimate: also suggest the --budget whose projected wall time fits this many minutes",
    )
    p.add_argument(
        "--estimate",
        action="store_true",
        help="only measure step times and print the projected wall time (nothing is written to --out)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p


def study_cli(argv: Sequence[str]) -> int:
    """``qg-lightning study``: see ``--help``. Prints one JSON line (the outcome) on stdout; returns the exit
    code (1 when a run failed)."""
    ns = _build_parser().parse_args(list(argv))
    package_log = logging.getLogger("qg_lightning.study")  # the progress lines of every study module
    if not ns.quiet and not package_log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        package_log.addHandler(handler)
        package_log.setLevel(logging.INFO)
    preset = PRESETS[ns.preset]
    if ns.budget is not None:
        preset = preset.scaled(ns.budget)
    if ns.overrides:
        for override in ns.overrides:  # in order: several recipe.* fields accumulate
            key, value = _parse_override(override, preset)
            preset = preset.replace(**{key: value})
    config = StudyConfig(
        out=ns.out,
        root=ns.root,
        n_labeled=ns.n_labeled,
        labeled_fraction=ns.labeled_fraction,
        seeds=tuple(ns.seeds),
        preset=preset,
        methods=tuple(ns.methods),
        split_seed=ns.split_seed,
        val_fraction=ns.val_fraction,
        test_fraction=ns.test_fraction,
        in_channels=ns.in_channels,
        num_classes=ns.num_classes,
        encoder_weights=ns.encoder_weights,
        predictor=ns.predictor,
        accelerator=ns.accelerator,
        num_workers=ns.num_workers,
        keep_checkpoints=ns.keep_checkpoints,
        unlabeled_root=ns.unlabeled_root,
        extra_test=tuple(ns.extra_test),
        diagnostics=ns.diagnostics,
        mask_dir=ns.mask_dir,
    )
    if ns.estimate:
        target = ns.target_minutes * 60 if ns.target_minutes is not None else None
        estimate = estimate_study(config, target_s=target)
        for name, figures in estimate["per_method"].items():
            log.info(
                "[estimate] %-12s %.3f s/step -> %s per run",
                name,
                figures["step_s"],
                _fmt_duration(figures["run_s"]),
            )
        log.info(
            "[estimate] snapshots %s, predictor %s, runs %s (%d seeds): total %s",
            _fmt_duration(estimate["snapshots_s"]),
            _fmt_duration(estimate["predictor_s"]),
            _fmt_duration(estimate["runs_s"]),
            len(config.seeds),
            _fmt_duration(estimate["total_s"]),
        )
        if estimate["suggested_budget"] is not None:
            log.info(
                "[estimate] to fit %.0f minutes: --budget %g (%s)",
                ns.target_minutes,
                estimate["suggested_budget"],
                "epochs" if preset.unit == "epoch" else "steps",
            )
        sys.stdout.write(json.dumps({"estimate": estimate}) + "\n")
        return 0
    summary = run_study(config, command=" ".join(["qg-lightning", "study", *argv]))
    line = {
        "out": str(Path(config.out)),
        "results": str(Path(config.out) / "results.md"),
        "execution": summary["execution"],
        "elapsed_s": round(summary["elapsed_s"], 1),
        "dice": {r["method"]: r["dice_best"]["mean"] for r in summary["methods"] if r["n_seeds"]},
        "comparisons": [
            {k: c[k] for k in ("guided", "plain", "mean_diff", "p_value", "better", "worse")}
            for c in summary["comparisons"]
            if c["checkpoint"] == "best"
        ],
    }
    sys.stdout.write(json.dumps(_json_safe(line)) + "\n")
    return 1 if summary["execution"]["failed"] else 0

"""``qg-lightning train-predictor``: train the best quality-predictor recipe on a data folder, end to end.

Usage::

    qg-lightning train-predictor --data.root ../shared/data/kvasir_seg [--out DIR] [--config recipe.yaml]
        [--recipe.FIELD VALUE ...] [--preset release] [--estimate-only] [--print-recipe]
    qg-lightning train-predictor --data.root ../shared/data/neopolyp --data.mask_dir masks_3class
        --data.num_classes 3      (a second mask folder of the same images, read in place)

The command checks every input, logs a measured estimate of the run time, logs one line per stage and
epoch on stderr, and prints the final (calibrated) checkpoint's path as the last line on stdout: the path
``--trainer.callbacks.predictor`` and ``QualityReweightCallback(predictor=...)`` take as is. Each stage is
cached in ``--out``: rerunning skips the finished stages.

``--config`` takes a YAML file with the recipe's fields (``recipe:`` and ``data:`` sections, or the recipe's
fields at the top level); flags override it. See :class:`~qg_lightning.quality.recipe.PredictorRecipe` for
the fields.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from qg_lightning.quality.recipe import PredictorData, PredictorRecipe

__all__ = ["parse_train_predictor_args", "train_predictor_cli"]

log = logging.getLogger(__name__)

_RECIPE_FIELDS = tuple(f.name for f in fields(PredictorRecipe))
_DATA_FIELDS = tuple(f.name for f in fields(PredictorData))
_PRESETS = {"best": PredictorRecipe, "release": PredictorRecipe.release}
#: data fields read as plain text, never as YAML (a folder named ``2024`` or ``null`` stays a name)
_PATH_FIELDS = ("root", "split_file", "mask_dir")


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qg-lightning train-predictor",
        allow_abbrev=False,
        usage="qg-lightning train-predictor [--data.root ROOT] [--out DIR] [--config RECIPE.yaml] "
        "[--recipe.FIELD VALUE ...] [--data.FIELD VALUE ...] [options]",
        description=(
            "Train a quality predictor with the best recipe measured (cross-fitted snapshot models, the "
            "predictor, a calibration on the validation images' snapshot masks, an evaluation report) and print "
            "the final checkpoint's path."
        ),
        epilog=(
            "Recipe fields (--recipe.FIELD VALUE; lists and null as in YAML, e.g. --recipe.snapshot_threshold "
            "'[0.2, 0.8]'): " + ", ".join(_RECIPE_FIELDS)
        ),
    )
    p.add_argument(
        "--out", default=None, help="output folder (default runs/train_predictor/<data folder name>)"
    )
    p.add_argument(
        "--config", default=None, help="YAML file with recipe fields (and an optional data: section)"
    )
    p.add_argument(
        "--preset", choices=sorted(_PRESETS), default="best",
        help="starting recipe: best (default, the best measured) or release (the authors' release settings)",
    )  # fmt: skip
    defaults = PredictorData()
    for name in _DATA_FIELDS:
        flag = f"--data.{name}"
        if name == "skip_bad":
            p.add_argument(flag, dest=f"data.{name}", action="store_true", help="skip unreadable files")
            continue
        hints = {
            "root": "dataset folder (default: the embedded synthetic data)",
            "mask_dir": "mask sub-folder of the dataset folder (default masks), e.g. masks_3class with "
            "--data.num_classes 3",
        }
        hint = hints.get(name)
        p.add_argument(flag, dest=f"data.{name}", default=None, metavar="VALUE",
                       help=hint or f"PredictorData.{name} (default {getattr(defaults, name)!r})")  # fmt: skip
    recipe = PredictorRecipe()
    for name in _RECIPE_FIELDS:
        p.add_argument(f"--recipe.{name}", dest=f"recipe.{name}", default=None, metavar="VALUE",
                       help=f"default {_yaml(getattr(recipe, name))}")  # fmt: skip
    p.add_argument("--accelerator", default="auto", choices=("auto", "cpu", "gpu", "cuda", "mps"))
    p.add_argument("--precision", default=None, help="Lightning precision of the trainings, e.g. bf16-mixed")
    p.add_argument(
        "--report-subset", choices=("val", "test"), default="val",
        help="split the report evaluates on (the calibration is always fitted on the validation images)",
    )  # fmt: skip
    p.add_argument("--estimate-only", action="store_true", help="log the time estimate and stop")
    p.add_argument("--no-estimate", action="store_true", help="skip the time estimate")
    p.add_argument(
        "--print-recipe", action="store_true", help="print the resolved recipe and data as YAML, stop"
    )
    return p


def _yaml(value: Any) -> str:
    text = yaml.safe_dump(list(value) if isinstance(value, tuple) else value, default_flow_style=True)
    return text.strip().removesuffix("...").strip()


def _value(text: str, flag: str, parser: argparse.ArgumentParser) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        parser.error(f"{flag}: cannot read {text!r} as a YAML value ({err}).")


def _read_config(path: str, parser: argparse.ArgumentParser) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(recipe, data)`` mappings from a YAML file."""
    file = Path(path).expanduser()
    if not file.is_file():
        parser.error(f"--config '{path}' does not exist.")
    try:
        content = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as err:
        parser.error(f"--config '{path}' is not valid YAML: {err}")
    if not isinstance(content, Mapping):
        parser.error(f"--config '{path}' must hold a mapping of recipe fields, got {type(content).__name__}.")
    if set(content) <= {"recipe", "data"}:
        recipe, data = content.get("recipe") or {}, content.get("data") or {}
    else:
        recipe, data = dict(content), {}
    for what, section, known in (("recipe", recipe, _RECIPE_FIELDS), ("data", data, _DATA_FIELDS)):
        if not isinstance(section, Mapping):
            parser.error(f"--config '{path}': `{what}` must be a mapping, got {type(section).__name__}.")
        unknown = sorted(set(section) - set(known))
        if unknown:
            parser.error(
                f"--config '{path}': unknown {what} field(s) {unknown}; the fields are {list(known)}."
            )
    return dict(recipe), dict(data)


def _flag_names(message: str, prefix: str) -> str:
    """Name the flag in a recipe / data error: `` `p_weak` `` -> ``--recipe.p_weak``."""
    return re.sub(r"`(\w+)`", lambda m: f"{prefix}{m.group(1)}", message)


def parse_train_predictor_args(
    argv: Sequence[str],
) -> tuple[argparse.Namespace, PredictorRecipe, PredictorData, Path]:
    """Parse and check the command line: ``(options, recipe, data, out)``. Bad input exits with status 2 and a
    message naming the flag, before any work."""
    parser = _build_parser()
    ns, unknown = parser.parse_known_args(list(argv))
    if unknown:
        names = [u.split("=")[0] for u in unknown if u.startswith("--")]
        recipe_names = [n for n in names if n.startswith("--recipe.")]
        if recipe_names:
            parser.error(f"unknown recipe field(s) {recipe_names}; the fields are {list(_RECIPE_FIELDS)}.")
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    recipe_values, data_values = _read_config(ns.config, parser) if ns.config else ({}, {})
    for name in _RECIPE_FIELDS:
        text = getattr(ns, f"recipe.{name}")
        if text is not None:
            recipe_values[name] = _value(text, f"--recipe.{name}", parser)
    for name in _DATA_FIELDS:
        value = getattr(ns, f"data.{name}")
        if name == "skip_bad":
            if value:
                data_values[name] = True
        elif value is not None:
            data_values[name] = value if name in _PATH_FIELDS else _value(value, f"--data.{name}", parser)
    try:
        recipe = _PRESETS[ns.preset](**recipe_values)
    except (TypeError, ValueError) as err:
        parser.error(_flag_names(str(err), "--recipe."))
    try:
        data = PredictorData(**data_values)
    except (TypeError, ValueError, FileNotFoundError) as err:
        parser.error(_flag_names(str(err), "--data."))
    if recipe.init_from is not None:  # the starting weights exist and fit, before any work
        from qg_lightning.quality.training import check_init_from

        try:
            check_init_from(recipe, data)
        except (ValueError, FileNotFoundError) as err:
            parser.error(_flag_names(str(err), "--recipe."))
    out = (
        Path(ns.out)
        if ns.out
        else Path("runs", "train_predictor", Path(data.root).name if data.root else "synthetic")
    )
    if out.exists() and not out.is_dir():
        parser.error(f"--out '{out}' exists and is not a folder.")
    return ns, recipe, data, out


def train_predictor_cli(argv: Sequence[str]) -> int:
    """``qg-lightning train-predictor``: see ``--help``. Returns the exit code (0)."""
    from qg_lightning.quality.estimate import estimate_predictor_time
    from qg_lightning.quality.training import CacheMismatchError, check_output, train_predictor

    ns, recipe, data, out = parse_train_predictor_args(argv)
    if ns.print_recipe:
        sys.stdout.write(
            yaml.safe_dump({"recipe": recipe.to_dict(), "data": data.to_dict()}, sort_keys=False)
        )
        return 0
    _log_to_stderr()
    try:
        done = check_output(recipe, data, out, report_subset=ns.report_subset) if out.is_dir() else []
    except CacheMismatchError as err:
        _build_parser().error(f"--out: {err}")
    log.info(
        "Recipe %s (%s); data %s; output %s", recipe.fingerprint, ns.preset, data.root or "synthetic", out
    )
    if "report" not in done and not ns.no_estimate:
        log.info("Estimating the run time (a few timed steps of each model) ...")
        estimate = estimate_predictor_time(recipe, data, accelerator=ns.accelerator, precision=ns.precision)
        left = {
            "snapshots": "snapshots" not in done,
            "predictor": "predictor" not in done,
            "evaluation": True,
        }
        seconds = sum(t for stage, t in estimate.stages.items() if left.get(stage, True))
        log.info("Estimated run time: %s; cached stages: %s", estimate.describe(), ", ".join(done) or "none")
        if done:
            log.info(
                "Left to run: about %s", f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.0f} min"
            )
    if ns.estimate_only:
        return 0
    trained = train_predictor(
        recipe, data, out, accelerator=ns.accelerator, precision=ns.precision, report_subset=ns.report_subset
    )
    for label, figures in trained.report["evaluations"].items():
        real, synthetic = figures.get("real") or {}, figures.get("synthetic") or {}
        log.info("%s: real Pearson %s MAE %s; synthetic Pearson %s MAE %s", label, _fmt(real.get("pearson")),
                 _fmt(real.get("mae")), _fmt(synthetic.get("pearson")), _fmt(synthetic.get("mae")))  # fmt: skip
    log.info("Report: %s", trained.paths["report"])
    sys.stdout.write(f"{trained.checkpoint}\n")
    return 0


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _log_to_stderr() -> None:
    """INFO lines of the training and this command on stderr (once)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    for name in (__name__, "qg_lightning.quality.training"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        if not any(getattr(h, "_qg_train_predictor", False) for h in logger.handlers):
            handler._qg_train_predictor = True  # type: ignore[attr-defined]
            logger.addHandler(handler)

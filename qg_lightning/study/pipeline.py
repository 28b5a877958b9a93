"""``run_study``: split -> snapshots -> predictor -> every method x seed -> summary, resumable."""

from __future__ import annotations

import logging
import math
import shutil
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from qg_lightning.study._common import (
    _environment,
    _fmt_duration,
    _json_safe,
    _now,
    _Progress,
    _quiet,
    _read_json,
    _write_json,
    relative_paths,
    resolve_path,
)
from qg_lightning.study.config import StudyConfig
from qg_lightning.study.methods import METHODS, PAIRS, MethodSpec
from qg_lightning.study.presets import resolve_schedule, steps_per_epoch
from qg_lightning.study.runs import execute_run
from qg_lightning.study.stages import _describe_data, _make_split, study_recipe, train_study_predictor
from qg_lightning.study.summary import summarize_study

log = logging.getLogger(__name__)


def _check_methods(names: Sequence[str], registry: Mapping[str, MethodSpec]) -> list[MethodSpec]:
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ValueError(f"Unknown method(s) {unknown}; available: {list(registry)}.")
    return [registry[n] for n in names]


def _check_resume(out: Path, config: StudyConfig) -> None:
    path = out / "study.json"
    if not path.is_file():
        return
    stored = _read_json(path).get("fingerprint")
    current = relative_paths(_json_safe(config.fingerprint()), out)
    if stored != current:
        changed = sorted(
            k for k in set(stored or {}) | set(current) if (stored or {}).get(k) != current.get(k)
        )
        raise ValueError(
            f"'{out}' holds a study with other settings (differing: {changed}). Resume it with the same "
            "settings (seeds and methods may be added), or choose another --out folder."
        )


def run_study(
    config: StudyConfig,
    *,
    registry: Mapping[str, MethodSpec] = METHODS,
    pairs: Sequence[tuple[str, str]] = PAIRS,
    command: str | None = None,
) -> dict[str, Any]:
    """Run (or resume) a study and return its summary (see :func:`summarize_study`).

    Args:
        config: the study settings.
        registry: method registry (default :data:`METHODS`).
        pairs: ``(plain, guided)`` pairs compared over seeds (default :data:`PAIRS`).
        command: the command line that started the study, recorded in ``study.json`` and ``results.md``.

    Returns:
        The summary dict, with ``"execution"``: counts of runs ``done`` (this call), ``skipped`` (finished
        before), ``redone`` (interrupted before, trained again) and ``failed`` (with their errors).

    Raises:
        ValueError: unknown methods, or ``config.out`` holds a study with other settings.
    """
    specs = _check_methods(config.methods, registry)
    out = Path(config.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    _check_resume(out, config)
    record = config.to_dict()
    record["environment"] = _environment()
    if command is not None:
        record["command"] = command
    if (out / "study.json").is_file():  # a resumed study may add seeds and methods
        stored = _read_json(out / "study.json")
        record["seeds"] = sorted(set(stored.get("seeds", [])) | set(record["seeds"]))
        record["methods"] = list(dict.fromkeys([*stored.get("methods", []), *record["methods"]]))
    _write_json(out / "study.json", {**record, "updated_at": _now()}, base=out)
    preset = config.study_preset
    plan = [(seed, spec) for seed in config.seeds for spec in specs]  # seed-major: complete pairs first
    progress = _Progress(total_runs=len(plan))
    need_predictor = any(s.guidance is not None for s in specs)

    with _quiet():
        split_path = out / "split.json"
        if split_path.is_file():
            data = _describe_data(config, split_path)
            progress.stage(f"split: reusing {split_path}")
        else:
            data = _make_split(config, split_path)
            progress.stage(
                f"split: {data['n_train']} train ({data['n_labeled']} labeled, {data['n_unlabeled_train']} "
                f"unlabeled + {data['n_unlabeled_extra']} extra), {data['n_val']} val, {data['n_test']} test "
                f"-> {split_path}"
            )
        n_unlabeled = data["n_unlabeled_train"] + data["n_unlabeled_extra"] + data["n_unlabeled_external"]
        true_masks = bool(
            config.diagnostics
            and data["n_unlabeled_train"] > 0
            and not data["n_unlabeled_extra"]
            and not data["n_unlabeled_external"]
        )
        skipped_methods = [s.name for s in specs if s.needs_true_masks and not true_masks]
        if skipped_methods:
            progress.stage(
                f"methods {skipped_methods} skipped: they need the hidden masks of the unlabeled images, and "
                "this study's unlabeled images have none (or diagnostics are off)"
            )
            plan = [(seed, spec) for seed, spec in plan if spec.name not in skipped_methods]
            progress.total_runs = len(plan)
        spe = steps_per_epoch(data["n_labeled"], n_unlabeled, preset.batch_size, preset.unlabeled_batch_size)
        schedule = resolve_schedule(preset, spe)

        predictor_path: str | None = config.predictor
        if need_predictor and predictor_path is None:
            recipe = study_recipe(config, max(1, data["n_labeled"]))
            progress.stage(f"predictor: training with the recipe {recipe.to_dict()}")
            info = train_study_predictor(config, out, progress=lambda event: progress.stage(event.message))
            predictor_path = str(resolve_path(info["checkpoint"], out))
            real = ((info["evaluations"].get("calibrated_tta") or info["evaluations"].get("calibrated")
                     or info["evaluations"].get("uncalibrated") or {}).get("real") or {})  # fmt: skip
            progress.stage(
                f"predictor: {predictor_path}; real masks of the validation split (calibrated): Pearson "
                f"{real.get('pearson') or math.nan:.3f}, MAE {real.get('mae') or math.nan:.3f} (constant guess "
                f"{real.get('constant_baseline_mae') or math.nan:.3f})"
            )

        execution: dict[str, Any] = {"done": 0, "skipped": 0, "redone": 0, "failed": []}
        for index, (seed, spec) in enumerate(plan):
            run_dir = out / "runs" / spec.name / f"seed{seed}"
            remaining = [
                s.name
                for k, s in plan[index + 1 :]
                if not (out / "runs" / s.name / f"seed{k}" / "result.json").is_file()
            ]
            result_path = run_dir / "result.json"
            if result_path.is_file():
                execution["skipped"] += 1
                progress.run_finished(spec.name, None)
                continue
            if run_dir.exists():
                shutil.rmtree(run_dir)  # an interrupted or failed run: redo from scratch
                execution["redone"] += 1
            start = time.perf_counter()
            try:
                result = execute_run(
                    spec, seed, config, schedule, run_dir, split_path, predictor_path, true_masks=true_masks
                )
            except KeyboardInterrupt:
                raise
            except Exception as err:  # one failing method must not lose the others; recorded and reported
                log.error("Run %s seed %d failed: %s", spec.name, seed, err, exc_info=True)
                _write_json(
                    run_dir / "error.json",
                    {
                        "method": spec.name,
                        "seed": seed,
                        "error": repr(err),
                        "traceback": traceback.format_exc(),
                        "at": _now(),
                    },
                )
                execution["failed"].append({"method": spec.name, "seed": seed, "error": repr(err)})
                progress.run_finished(spec.name, time.perf_counter() - start)
                continue
            result["wall_time_s"] = time.perf_counter() - start
            _write_json(result_path, result, base=out)
            execution["done"] += 1
            progress.run_finished(spec.name, result["wall_time_s"])
            best = (result["test_best"] or {}).get("dice", {}).get("mean", math.nan)
            last = (result["test_last"] or {}).get("dice", {}).get("mean", math.nan)
            progress.stage(
                f"run {progress.done_runs}/{progress.total_runs} {spec.name} seed {seed}: test Dice "
                f"{best:.3f} (best val) / {last:.3f} (last), {result['steps']} steps in "
                f"{_fmt_duration(result['wall_time_s'])}",
                remaining,
            )
        if execution["skipped"]:
            progress.stage(f"runs: {execution['skipped']} finished run(s) skipped (resumed study)")

        summary = summarize_study(out, methods=record["methods"], pairs=pairs)
    summary["execution"] = execution
    summary["elapsed_s"] = progress.elapsed()
    _write_json(out / "summary.json", summary, base=out)
    progress.stage(f"summary: {out / 'results.md'}")
    return summary

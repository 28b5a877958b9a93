"""Small shared helpers of the study: JSON writing, durations, quiet Lightning, precision, progress lines."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qg_lightning.quality.report import json_safe as _json_safe
from qg_lightning.study.presets import StudyPreset

log = logging.getLogger(__name__)


RESULT_FORMAT = "qg_lightning.study.run/1"
SUMMARY_FORMAT = "qg_lightning.study.summary/1"
_KEPT_KEY = "train/frac_q_above_tau"
_NOISY_WARNINGS = (
    ".*does not have many workers.*",
    ".*isinstance\\(treespec, LeafSpec\\).*",
    ".*The number of training batches.*is smaller than the logging interval.*",
    ".*Checkpoint directory .* exists and is not empty.*",
    ".*You called `self.log\\(.*\\)` but have no logger configured.*",
    ".*Experiment logs directory .* exists and is not empty.*",
)


def _environment() -> dict[str, Any]:
    """Machine and library versions, recorded with the results."""
    import platform

    import lightning

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def relative_paths(obj: Any, base: Path) -> Any:
    """``obj`` with every absolute path string made relative to ``base`` (the study folder), so that committed
    results name no machine's folders; :func:`resolve_path` reads them back.

    Example:
        >>> relative_paths({"a": "/x/study/runs/r.json", "b": ["/x/data"], "c": "PL-QW"}, Path("/x/study"))
        {'a': 'runs/r.json', 'b': ['../data'], 'c': 'PL-QW'}
    """
    if isinstance(obj, Mapping):
        return {k: relative_paths(v, base) for k, v in obj.items()}
    if isinstance(obj, list):
        return [relative_paths(v, base) for v in obj]
    if isinstance(obj, str) and os.path.isabs(obj) and "\n" not in obj:
        return os.path.relpath(obj, os.path.abspath(base))
    return obj


def resolve_path(path: str | os.PathLike, base: Path) -> Path:
    """A path read from a study JSON: relative ones are relative to the study folder ``base``."""
    return Path(path) if Path(path).is_absolute() else base / path


def _write_json(path: Path, data: Any, *, base: Path | None = None) -> Path:
    """Write JSON atomically (temp file, then rename); with ``base``, absolute paths are written relative to
    it (see :func:`relative_paths`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    safe = _json_safe(data)
    if base is not None:
        safe = relative_paths(safe, base)
    tmp.write_text(json.dumps(safe, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence Lightning's chatty info logs and known harmless warnings inside a stage."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for pattern in _NOISY_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _precision(preset: StudyPreset, accelerator: str) -> str:
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return preset.precision if on_gpu else "32-true"


class _Progress:
    """One log line per finished stage, with the elapsed time and an ETA from the runs finished so far."""

    def __init__(self, total_runs: int) -> None:
        self.start = time.perf_counter()
        self.total_runs = total_runs
        self.done_runs = 0
        self.durations: dict[str, list[float]] = {}

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def eta(self, remaining: Sequence[str]) -> float | None:
        all_durations = [d for ds in self.durations.values() for d in ds]
        if not all_durations:
            return None
        fallback = float(np.mean(all_durations))
        return float(sum(np.mean(self.durations[m]) if m in self.durations else fallback for m in remaining))

    def stage(self, message: str, remaining: Sequence[str] = ()) -> None:
        eta = self.eta(remaining) if remaining else (0.0 if self.done_runs >= self.total_runs else None)
        log.info("[study %s] %s | ETA %s", _fmt_duration(self.elapsed()), message, _fmt_duration(eta))

    def run_finished(self, method: str, seconds: float | None) -> None:
        self.done_runs += 1
        if seconds is not None:
            self.durations.setdefault(method, []).append(seconds)

"""The quality-guidance study: one command that measures, honestly, what quality guidance buys on your data.

``qg-lightning study`` (or ``python benchmarks/ssl_study.py``) runs the whole QG-SSL pipeline on a folder in
the standard layout (or the embedded synthetic data) and compares every selected semi-supervised method with
and without quality guidance, beside the supervised-only floor (METHOD.md, "Evaluation protocol"):

1. **split**: one seeded train / val / test split with a labeled subset of train, written to
   ``OUT/split.json`` and used by every later stage (a ``ROOT/split.json`` is respected; the labeled subset
   is drawn from its train ids);
2. **snapshots**: cross-fitted weak models, one :class:`~qg_lightning.methods.SupervisedSegmenter` per fold
   of the labeled set, saving snapshots (:class:`~qg_lightning.quality.snapshots.SnapshotCallback`);
3. **predictor**: a :class:`~qg_lightning.quality.predictor.QualityPredictor` trained on the labeled split
   only (:class:`~qg_lightning.quality.datamodule.QualityDataModule`, held-out snapshot masks), selected on
   validation loss;
4. **predictor evaluation**: test-split MAE / Pearson / Spearman on synthetic candidates and on the masks of
   the weak models (real candidates), via :mod:`qg_lightning.quality.evaluation` when it is installed;
5. **runs**: every method x seed, one at a time (to fit in memory): same seeds, data order and step budget
   for all methods; a guided variant differs from its plain host only by the
   :class:`~qg_lightning.guidance.QualityReweightCallback`. Each run tests the best-validation checkpoint
   and the last weights;
6. **summary**: ``OUT/summary.json``, ``OUT/results.md`` (one row per method, mean +- std over seeds,
   paired comparisons of each guided variant with its plain host) and PNG plots.

Every finished stage leaves a marker (``OUT/runs/<method>/seed<k>/result.json`` for runs), so rerunning the
same command resumes: finished stages are skipped, an interrupted run is redone from scratch. Seeds and
methods may be added to a finished study; other settings must stay the same (``OUT/study.json``).

Model selection uses the validation split only; the test split is only ever read by ``trainer.test``.

Example:
    >>> from qg_lightning.study import DEFAULT_METHODS, PRESETS, resolve_schedule
    >>> sorted(PRESETS)
    ['cpu', 'paper', 'smoke']
    >>> [m for m in DEFAULT_METHODS]
    ['SUP', 'PL', 'PL-T', 'PL-C', 'PL-QW', 'PL-oracle', 'QAR', 'MT', 'MT-QW']
    >>> resolve_schedule(PRESETS["paper"], steps_per_epoch=25).max_steps
    5000
"""

from typing import TYPE_CHECKING

from qg_lightning._lazy import lazy_exports

if TYPE_CHECKING:  # for type checkers and the API docs; at run time each name loads on first use
    from qg_lightning.study.config import StudyConfig
    from qg_lightning.study.estimate import estimate_study
    from qg_lightning.study.methods import DEFAULT_METHODS, METHODS, PAIRS, MethodSpec
    from qg_lightning.study.pipeline import run_study
    from qg_lightning.study.plots import plot_study
    from qg_lightning.study.presets import (
        PRESETS,
        RunSchedule,
        StudyPreset,
        resolve_schedule,
        steps_per_epoch,
    )
    from qg_lightning.study.runs import execute_run, guidance_kwargs, host_kwargs
    from qg_lightning.study.summary import (
        format_mean_std,
        paired_comparison,
        summarize_study,
        write_results_markdown,
    )

__all__ = [
    "DEFAULT_METHODS",
    "METHODS",
    "PAIRS",
    "PRESETS",
    "MethodSpec",
    "RunSchedule",
    "StudyConfig",
    "StudyPreset",
    "estimate_study",
    "execute_run",
    "format_mean_std",
    "guidance_kwargs",
    "host_kwargs",
    "paired_comparison",
    "plot_study",
    "resolve_schedule",
    "run_study",
    "steps_per_epoch",
    "study_cli",
    "summarize_study",
    "write_results_markdown",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "qg_lightning.study.config": ("StudyConfig",),
        "qg_lightning.study.estimate": ("estimate_study",),
        "qg_lightning.study.methods": ("DEFAULT_METHODS", "METHODS", "PAIRS", "MethodSpec"),
        "qg_lightning.study.pipeline": ("run_study",),
        "qg_lightning.study.plots": ("plot_study",),
        "qg_lightning.study.presets": (
            "PRESETS",
            "RunSchedule",
            "StudyPreset",
            "resolve_schedule",
            "steps_per_epoch",
        ),
        "qg_lightning.study.runs": ("execute_run", "guidance_kwargs", "host_kwargs"),
        "qg_lightning.study.summary": (
            "format_mean_std",
            "paired_comparison",
            "summarize_study",
            "write_results_markdown",
        ),
        "qg_lightning.cli_study": ("study_cli",),  # the CLI layer's (moved there), still importable here
    },
)

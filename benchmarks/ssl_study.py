"""What does quality guidance buy? The whole study in one command (issue 5).

Runs the seeded split, cross-fitted weak-model snapshots, the quality predictor and its evaluation, then every
selected method x seed (plain and quality-guided, same seeds, data order and step budget; supervised-only as
the floor), one run at a time. Writes ``OUT/results.md`` (the table), ``OUT/summary.json``, one
``OUT/runs/<method>/seed<k>/result.json`` per run and PNG plots. Rerun the same command to resume: finished
runs are skipped. Same as ``qg-lightning study``; see ``--help`` and :mod:`qg_lightning.study`.

The last line printed on stdout is one JSON object (results path, runs done / skipped / failed, mean Dice per
method, paired comparisons).

Usage:
    # project the wall time on this machine first (nothing is written to --out):
    python benchmarks/ssl_study.py --root ../shared/data/kvasir_seg --labeled-fraction 0.1 --preset cpu \\
        --out runs/study_kvasir_cpu --estimate
    # the study (default methods SUP PL-T PL-C PL-QW QAR MT MT-QW FixMatch FixMatch-QW, seeds 0 1 2):
    python benchmarks/ssl_study.py --root ../shared/data/kvasir_seg --labeled-fraction 0.1 --preset cpu \\
        --out runs/study_kvasir_cpu
    # a quick end-to-end check on the embedded synthetic data:
    python benchmarks/ssl_study.py --synthetic --preset smoke --methods SUP PL-C PL-QW --seeds 0 --out /tmp/s
"""

from __future__ import annotations

import sys

from qg_lightning.cli_study import study_cli

if __name__ == "__main__":
    raise SystemExit(study_cli(sys.argv[1:]))

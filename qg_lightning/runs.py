"""Where a run's files land, and stopping a distributed run when one rank fails."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

__all__ = ["run_dir", "stop_other_ranks"]

log = logging.getLogger(__name__)


def run_dir(trainer: L.Trainer | None) -> Path:
    """The run's folder: the logger's version folder, else ``trainer.default_root_dir`` (cwd without a trainer).

    Collective under DDP (``trainer.log_dir`` broadcasts from rank 0): call it on every rank, never from inside
    ``rank_zero_only`` code, then hand the path to the rank-zero writer.
    """
    if trainer is None:
        return Path.cwd()
    log_dir = trainer.log_dir
    if not isinstance(log_dir, (str, os.PathLike)):  # no logger, or fast_dev_run's DummyLogger
        log_dir = trainer.default_root_dir
    return Path(log_dir)


def stop_other_ranks(trainer: L.Trainer, exception: BaseException) -> bool:
    """After an exception on this rank, kill the worker processes Lightning launched, so they do not wait
    forever in a collective (the gloo/NCCL timeout is 30 minutes by default).

    Lightning already stops everything when a *launched* rank dies, but not when the launching rank (rank 0)
    raises. Only the launching process holds the workers, so this is a no-op elsewhere, in single-process runs,
    under external launchers (torchrun / SLURM stop the group themselves) and for SIGTERM (which every rank
    handles itself). Called from ``on_exception`` of :class:`~qg_lightning.callbacks.ExactResume`,
    :class:`~qg_lightning.guidance.QualityReweightCallback` and the data modules; calling it twice is harmless.

    Returns:
        Whether worker processes were signalled.
    """
    if trainer.world_size <= 1 or isinstance(exception, (SIGTERMException, KeyboardInterrupt)):
        return False
    launcher = trainer.strategy.launcher
    procs = getattr(launcher, "procs", None)
    if not procs or not any(p.poll() is None for p in procs):
        return False
    log.error(
        "Rank %d raised %s: stopping the other %d process(es) so that none waits forever.",
        trainer.global_rank,
        type(exception).__name__,
        len(procs),
    )
    launcher.kill(getattr(signal, "SIGKILL", signal.SIGTERM))
    return True

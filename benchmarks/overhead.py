"""What does quality guidance cost per training step, for each reference host?

For each host (PL, MT, FixMatch, CPS) the median training-step time plain and guided ("-QW": quality weights
of the pseudolabels), in one process, on the same pre-generated batches. Steps of the variants are interleaved
(plain, guided, guided, plain, ...) so that load from other processes on a shared machine hits both alike;
warm-up steps are excluded. QAR is measured on Mean Teacher (MT + QAR against MT: the student already runs
on the unlabeled batch), and QAR over supervised-only (``QARSegmenter`` against ``SupervisedSegmenter``, which
also pays a whole student pass over the unlabeled batch by design) is reported separately.

A step is what Lightning runs per batch, driven by hand: ``zero_grad``, ``training_step``, ``backward``,
optimizer step, ``on_train_batch_end`` (the EMA update). The predictor is attached with
``attach_quality_predictor`` (what the callback does in ``setup``), the loss weights are set with
``set_quality_lambdas`` and every ramp is at its final value, so each guided step does all of its work.

Clocks: on a CPU the reported ratios use the process CPU time (``time.process_time``) of each step, with
one torch thread by default. On a machine shared with other jobs, wall time measures the neighbours as much
as the step, while single-thread CPU time stays close to the compute the step needs; wall-time ratios are
reported too (``*_wall``). On CUDA the primary clock is wall time after ``torch.cuda.synchronize``.

Next to each measured ratio is its FLOP-count lower bound from ``torch.utils.flop_counter.FlopCounterMode``:
the host's step FLOPs plus one predictor forward over the unlabeled batch (PL-QW; CPS scores both networks'
pseudolabels, so two) or one predictor forward and backward (QAR), over the host's step FLOPs.

Targets on CPU at 128 px: PL-QW at most 1.15x its host, QAR at most 1.35x.

Usage:
    python benchmarks/overhead.py       # CPU, 1 thread, 128 px, 4 labeled + 8 unlabeled, 20 timed steps
    python benchmarks/overhead.py --steps 10 --hosts pl mt
    python benchmarks/overhead.py --predictors 2     # guided by the mean of two predictors
    python benchmarks/overhead.py --device cuda --bf16 --channels-last --batch-size 32 \
        --unlabeled-batch-size 64

The last line printed is one JSON object, also written to ``benchmarks/results/overhead.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from qg_lightning.guidance import GuidanceSettings, QualityGuidedMixin, qar_loss
from qg_lightning.methods import (
    CPSSegmenter,
    FixMatchSegmenter,
    MeanTeacherSegmenter,
    PseudoLabelSegmenter,
    QARSegmenter,
    SupervisedSegmenter,
)
from qg_lightning.quality.predictor import QualityEnsemble, QualityPredictor

__all__ = ["Runner", "interleaved_medians", "main", "make_batches", "predictor_flops"]

HOSTS: dict[str, tuple[type, dict[str, Any]]] = {
    "pl": (PseudoLabelSegmenter, {}),
    "mt": (MeanTeacherSegmenter, {}),
    "fixmatch": (FixMatchSegmenter, {}),
    "cps": (CPSSegmenter, {}),
}
TARGETS = {"pl_qw_ratio": 1.15, "qar_ratio": 1.35}
# Ramps at their final value from step 0, so every term of the guided step runs.
NOW = {"unsup_warmup": 0.0, "unsup_ramp": 0.0}
LAMBDAS = (0.25, 0.01)  # (qw, qar) as set by the callback at the end of its ramps


# ------------------------------------------------------------------------------------------------- data
def make_batches(
    n: int, batch_size: int, unlabeled_batch_size: int, size: int, *, device: torch.device, seed: int = 0
) -> list[dict[str, Any]]:
    """``n`` fixed combined batches: labeled images with blob masks, unlabeled weak and strong views."""
    g = torch.Generator().manual_seed(seed)

    def blobs(b: int) -> torch.Tensor:
        noise = torch.rand(b, 1, size, size, generator=g)
        smooth = F.avg_pool2d(noise, kernel_size=size // 8 + 1, stride=1, padding=size // 16)
        return (smooth[..., :size, :size] > smooth.mean()).long()[:, 0]

    out = []
    for _ in range(n):
        masks = blobs(batch_size)
        images = torch.rand(batch_size, 3, size, size, generator=g) * 0.5 + 0.25 * masks[:, None]
        weak = torch.rand(unlabeled_batch_size, 3, size, size, generator=g)
        strong = (weak + 0.1 * torch.randn(weak.shape, generator=g)).clamp(0, 1)
        out.append(
            {
                "labeled": {"image": images.to(device), "mask": masks.to(device)},
                "unlabeled": {"image": weak.to(device), "image_strong": strong.to(device)},
            }
        )
    return out


# ------------------------------------------------------------------------------------------------- steps
class Runner:
    """One host variant with its own optimizer; ``step`` runs one full training step on a batch."""

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        predictor: torch.nn.Module | None,
        mechanisms: frozenset[str],
        autocast: Callable[[], contextlib.AbstractContextManager],
        device: torch.device,
        channels_last: bool,
    ) -> None:
        self.module = module.to(device)
        if channels_last:
            self.module.to(memory_format=torch.channels_last)
        self.module.train()
        if predictor is not None:
            self.module.attach_quality_predictor(predictor, GuidanceSettings(mechanisms=mechanisms))
            self.module.set_quality_lambdas(*LAMBDAS)
        self.optimizer = torch.optim.AdamW(list(self.module.trainable_parameters()), lr=1e-4)
        self.autocast = autocast
        self.device = device
        self.i = 0

    def step(self, batch: dict[str, Any]) -> None:
        module = self.module
        self.optimizer.zero_grad(set_to_none=True)
        if isinstance(module, QualityGuidedMixin):
            module.reset_quality_stats()  # what the callback does before each batch
        with self.autocast():
            loss = module.training_step(batch, self.i)
        loss.backward()
        self.optimizer.step()
        module.on_train_batch_end(None, batch, self.i)
        self.i += 1

    def timed_step(self, batch: dict[str, Any]) -> tuple[float, float]:
        """``(wall seconds, process CPU seconds)`` of one step."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        wall, cpu = time.perf_counter(), time.process_time()
        self.step(batch)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - wall, time.process_time() - cpu

    def step_flops(self, batch: dict[str, Any]) -> int:
        with FlopCounterMode(display=False) as counter:
            self.step(batch)
        return int(counter.get_total_flops())


def interleaved_medians(
    runners: dict[str, Runner], batches: list[dict[str, Any]], *, warmup: int, steps: int
) -> dict[str, dict[str, float]]:
    """Median wall and CPU seconds per step of each variant; the variants' order alternates every step."""
    times: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in runners}
    names = list(runners)
    for i in range(warmup + steps):
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            wall, cpu = runners[name].timed_step(batches[i % len(batches)])
            if i >= warmup:
                times[name]["wall"].append(wall)
                times[name]["cpu"].append(cpu)
    return {name: {k: statistics.median(v) for k, v in clocks.items()} for name, clocks in times.items()}


def predictor_flops(predictor: torch.nn.Module, images: torch.Tensor, *, backward: bool) -> int:
    """FLOPs of one predictor forward (PL-QW) or forward + backward into the soft masks (QAR)."""
    masks = torch.rand(images.shape[0], 1, *images.shape[-2:], device=images.device)
    with FlopCounterMode(display=False) as counter:
        if backward:
            masks.requires_grad_(True)
            qar_loss(predictor, images, masks).backward()
        else:
            with torch.no_grad():
                predictor(images, masks)
    return int(counter.get_total_flops())


# ------------------------------------------------------------------------------------------------- main
def _build(cls: type, args: argparse.Namespace, seed: int, **kwargs: Any) -> torch.nn.Module:
    torch.manual_seed(seed)
    common = {"encoder_name": args.encoder, "encoder_weights": None, "lr": 1e-4}
    if cls is not SupervisedSegmenter:
        common.update(NOW)
    return cls(**common, **kwargs)


def _variants(
    base: torch.nn.Module, variants: dict[str, frozenset[str] | None], predictor: torch.nn.Module, **ctx: Any
) -> dict[str, Runner]:
    """Runners for ``variants`` (name -> mechanisms, None = plain) from identical initial weights."""
    runners = {}
    for name, mechanisms in variants.items():
        module = type(base)(**dict(base.hparams))
        module.load_state_dict(base.state_dict())
        guided = predictor if mechanisms else None
        runners[name] = Runner(module, predictor=guided, mechanisms=mechanisms or frozenset(), **ctx)
    return runners


def _round(x: float, n: int = 4) -> float:
    return round(float(x), n)


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.bf16 else None

    def autocast() -> contextlib.AbstractContextManager:
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=dtype)

    members = []  # several: their mean guides (a QualityEnsemble), as with a list of checkpoint paths
    for seed in range(args.predictors):
        torch.manual_seed(seed)
        members.append(QualityPredictor(backbone=args.predictor_backbone, in_channels=3, num_classes=2))
    predictor = members[0] if len(members) == 1 else QualityEnsemble(members)
    predictor = predictor.to(device).eval().requires_grad_(False)
    if args.channels_last:
        predictor.to(memory_format=torch.channels_last)
    batches = make_batches(4, args.batch_size, args.unlabeled_batch_size, args.size, device=device)
    ctx = {
        "predictor": predictor,
        "autocast": autocast,
        "device": device,
        "channels_last": args.channels_last,
    }
    unlabeled = batches[0]["unlabeled"]["image"]
    flops_pred_fwd = predictor_flops(predictor, unlabeled, backward=False)
    flops_pred_fwd_bwd = predictor_flops(predictor, unlabeled, backward=True)

    clock = args.clock or ("cpu" if device.type == "cpu" else "wall")

    def ms(medians: dict[str, dict[str, float]], name: str) -> float:
        return _round(medians[name][clock] * 1e3, 1)

    def ratios(medians: dict[str, dict[str, float]], name: str, base: str, key: str) -> dict[str, float]:
        """``{key: ratio on the primary clock, key_wall: ..., key_cpu: ...}``."""
        out = {key: _round(medians[name][clock] / medians[base][clock])}
        for c in ("wall", "cpu"):
            out[f"{key}_{c}"] = _round(medians[name][c] / medians[base][c])
        return out

    results: dict[str, Any] = {}
    for host in args.hosts:
        cls, kwargs = HOSTS[host]
        base = _build(cls, args, seed=1, **kwargs)
        variants: dict[str, frozenset[str] | None] = {"plain": None, "qw": frozenset({"qw"})}
        if host == "mt":
            variants["qar"] = frozenset({"qar"})
        runners = _variants(base, variants, **ctx)
        medians = interleaved_medians(runners, batches, warmup=args.warmup, steps=args.steps)
        flops = {name: runner.step_flops(batches[0]) for name, runner in runners.items()}
        n_scored = 2 if host == "cps" else 1  # CPS weights both cross terms: 2B pseudolabels per batch
        entry: dict[str, Any] = {
            "plain_ms": ms(medians, "plain"),
            "qw_ms": ms(medians, "qw"),
            **ratios(medians, "qw", "plain", "qw_ratio"),
            "qw_flop_bound": _round(1 + n_scored * flops_pred_fwd / flops["plain"]),
            "qw_flop_ratio": _round(flops["qw"] / flops["plain"]),
            "plain_gflops": _round(flops["plain"] / 1e9, 2),
        }
        if "qar" in variants:
            entry.update(
                {
                    "qar_ms": ms(medians, "qar"),
                    **ratios(medians, "qar", "plain", "qar_ratio"),
                    "qar_flop_bound": _round(1 + flops_pred_fwd_bwd / flops["plain"]),
                    "qar_flop_ratio": _round(flops["qar"] / flops["plain"]),
                }
            )
        results[host] = entry
        _log(f"{host}: {entry}")
        del runners, base

    if args.sup_qar:
        sup = _variants(_build(SupervisedSegmenter, args, seed=1), {"sup": None}, **ctx)
        qar = _variants(_build(QARSegmenter, args, seed=1), {"qar": frozenset({"qar"})}, **ctx)
        runners = {**sup, **qar}
        medians = interleaved_medians(runners, batches, warmup=args.warmup, steps=args.steps)
        flops = {name: runner.step_flops(batches[0]) for name, runner in runners.items()}
        entry = {
            "sup_ms": ms(medians, "sup"),
            "qar_ms": ms(medians, "qar"),
            **ratios(medians, "qar", "sup", "ratio"),
            "flop_ratio": _round(flops["qar"] / flops["sup"]),
            "note": "QAR over supervised-only also runs the student on the unlabeled batch (by design)",
        }
        results["sup_qar_ratio"] = entry["ratio"]
        results["sup_qar"] = entry
        _log(f"sup_qar: {entry}")

    checks = {}
    if "pl" in results:
        checks["pl_qw_ratio"] = results["pl"]["qw_ratio"] <= TARGETS["pl_qw_ratio"]
    if "mt" in results:
        checks["qar_ratio"] = results["mt"]["qar_ratio"] <= TARGETS["qar_ratio"]
    results["targets"] = TARGETS
    results["meets_targets"] = checks
    results["predictor_gflops"] = {
        "forward": _round(flops_pred_fwd / 1e9, 3),
        "forward_backward": _round(flops_pred_fwd_bwd / 1e9, 3),
    }
    results["config"] = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "threads": torch.get_num_threads(),
        "clock": clock,
        "cpu_count": os.cpu_count(),
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "torch": torch.__version__,
        "size": args.size,
        "batch_size": args.batch_size,
        "unlabeled_batch_size": args.unlabeled_batch_size,
        "encoder": args.encoder,
        "predictor_backbone": args.predictor_backbone,
        "predictors": args.predictors,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "bf16": args.bf16,
        "channels_last": args.channels_last,
        "command": " ".join(["python", sys.argv[0], *sys.argv[1:]]),
    }
    return results


def _log(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Per-step overhead of quality guidance on each reference host."
    )
    parser.add_argument("--hosts", nargs="+", default=list(HOSTS), choices=list(HOSTS))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4, help="labeled batch size")
    parser.add_argument(
        "--unlabeled-batch-size",
        type=int,
        default=8,
        help="unlabeled batch size (DataModule default: 2x labeled)",
    )
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant first")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: robust CPU-time clock)")
    parser.add_argument(
        "--clock",
        choices=["cpu", "wall"],
        default=None,
        help="clock of the reported ratios (default: process CPU time on CPU, wall time on CUDA)",
    )
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--predictor-backbone", default="resnet18")
    parser.add_argument(
        "--predictors", type=int, default=1, help="guide with the mean of this many predictors (an ensemble)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--no-sup-qar", dest="sup_qar", action="store_false", help="skip QAR over supervised")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "overhead.json"))
    args = parser.parse_args(argv)
    if args.predictors < 1:
        parser.error(f"--predictors must be >= 1, got {args.predictors}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    warnings.filterwarnings("ignore")  # `self.log` outside a Trainer warns on every call
    results = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    sys.stdout.write(json.dumps(results) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

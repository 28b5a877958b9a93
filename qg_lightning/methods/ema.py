"""Exponential-moving-average teacher (Mean Teacher, PL-QW)."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

__all__ = ["EMATeacher", "ema_decay"]


def ema_decay(step: int, *, final: float = 0.999, initial: float = 0.5, warmup_steps: int = 1000) -> float:
    """EMA decay at optimiser step ``step``: linear from ``initial`` to ``final`` over ``warmup_steps`` (METHOD.md).

    Example:
        >>> ema_decay(0), ema_decay(500), ema_decay(5000)
        (0.5, 0.7495, 0.999)
    """
    if step < 0:
        raise ValueError(f"`step` must be >= 0, got {step}.")
    if warmup_steps <= 0:
        return final
    frac = min(step / warmup_steps, 1.0)
    return round(initial + (final - initial) * frac, 10)


class EMATeacher(nn.Module):
    """A frozen copy of a student network updated as ``t = d * t + (1 - d) * s``.

    BatchNorm running statistics (and every other buffer) are copied from the student, as in METHOD.md. The
    update counter is a buffer, so it is saved in checkpoints and a resumed run continues the decay warm-up.
    A student with non-finite parameters or buffers is refused (the teacher is never updated from it).

    Args:
        student: the network to follow (deep-copied at construction).
        decay: final decay (0.999).
        initial_decay: decay at step 0 (0.5).
        warmup_steps: steps over which the decay ramps from ``initial_decay`` to ``decay``.

    Example:
        >>> student = nn.Linear(2, 1)
        >>> teacher = EMATeacher(student, decay=0.9, initial_decay=0.9, warmup_steps=0)
        >>> with torch.no_grad():
        ...     _ = student.weight.add_(1.0)
        >>> teacher.update(student)
        >>> bool(torch.allclose(teacher.module.weight, student.weight - 0.9))
        True
    """

    def __init__(
        self,
        student: nn.Module,
        *,
        decay: float = 0.999,
        initial_decay: float = 0.5,
        warmup_steps: int = 1000,
    ) -> None:
        super().__init__()
        for name, value in (("decay", decay), ("initial_decay", initial_decay)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"`{name}` must be in [0, 1), got {value}.")
        if warmup_steps < 0:
            raise ValueError(f"`warmup_steps` must be >= 0, got {warmup_steps}.")
        self.module = copy.deepcopy(student)
        self.module.requires_grad_(False)
        self.decay = decay
        self.initial_decay = initial_decay
        self.warmup_steps = warmup_steps
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        self.train(False)

    def train(self, mode: bool = True) -> EMATeacher:
        """The teacher always stays in eval mode (fixed BatchNorm statistics, no dropout)."""
        return super().train(False)

    def forward(self, images: Tensor) -> Tensor:
        return self.module(images)

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        """One EMA step from ``student``; raises if a student parameter or float buffer is non-finite."""
        s_params = dict(student.named_parameters())
        s_buffers = dict(student.named_buffers())
        checked = [("parameter", n, p) for n, p in s_params.items()]
        checked += [("buffer", n, b) for n, b in s_buffers.items() if b.is_floating_point()]
        finite = torch.stack([torch.isfinite(t).all() for _, _, t in checked]).all() if checked else True
        if not bool(finite):  # one host sync, then find the culprit for the message
            kind, bad = next((k, n) for k, n, t in checked if not torch.isfinite(t).all())
            raise FloatingPointError(
                f"EMA teacher not updated: student {kind} '{bad}' has non-finite values. "
                f"Lower the learning rate or enable gradient clipping (trainer.gradient_clip_val)."
            )
        d = ema_decay(
            int(self.num_updates),
            final=self.decay,
            initial=self.initial_decay,
            warmup_steps=self.warmup_steps,
        )
        t_params = dict(self.module.named_parameters())
        t = [t_params[n] for n in s_params]
        s = [s_params[n].detach().to(t_params[n].dtype) for n in s_params]
        torch._foreach_mul_(t, d)
        torch._foreach_add_(t, s, alpha=1.0 - d)
        for name, buf in self.module.named_buffers():
            if name in s_buffers:
                buf.copy_(s_buffers[name])
        self.num_updates += 1

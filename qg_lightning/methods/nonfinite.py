"""Non-finite (NaN/Inf) checks for training steps: :class:`NonFiniteError` and :func:`check_finite`.

The hosts in :mod:`qg_lightning.methods` check, in every training step, the input images before the forward
pass, the loss terms before backward, and (in :class:`~qg_lightning.guidance.QualityGuidedMixin`) every
predicted quality. Each group is one fused ``torch.isfinite(x).all()`` per tensor and one host-device sync;
the counting and the per-sample diagnosis run only once something is found. What happens then is the host's
``nonfinite`` policy (``"raise"`` or ``"skip"``, see :class:`~qg_lightning.methods.SupervisedSegmenter`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

__all__ = ["NONFINITE_POLICIES", "NonFiniteError", "NonFinitePolicy", "check_finite", "nonfinite_error"]

NonFinitePolicy = Literal["raise", "skip"]
NONFINITE_POLICIES: tuple[str, ...] = ("raise", "skip")
_MAX_LISTED = 8


class NonFiniteError(FloatingPointError):
    """A NaN or Inf in a training step: an input image, a loss term or a predicted quality.

    A ``FloatingPointError``, so ``except FloatingPointError`` also catches the EMA teacher's refusal of a
    non-finite student. The message is rebuilt from the attributes; the host's ``training_step`` fills in
    where it happened (:meth:`add_context`) before raising it or, under ``nonfinite="skip"``, warning.

    Attributes:
        what: the tensor, e.g. ``"labeled image"``, ``"loss 'unsup'"``, ``"predicted quality (quality_weights())"``.
        num_nan: NaN values in it. num_inf: +-Inf values in it. numel: its number of values.
        samples: batch positions of the samples with a non-finite value (tensors with a batch dimension).
        ids: the ids of those samples when the batch carries ``"id"`` (else empty).
        hint: likely cause and fix.
        batch_idx: training batch index. global_step: optimizer step. host: class name of the module.
        policy: the host's ``nonfinite`` policy (``"raise"`` adds how to switch to ``"skip"``).

    Example:
        >>> err = NonFiniteError("loss 'unsup'", num_nan=1)
        >>> err.add_context(batch_idx=3, global_step=7, host="MeanTeacherSegmenter", policy="skip")
        >>> str(err)
        "Non-finite value in training batch 3 (global step 7) of MeanTeacherSegmenter: loss 'unsup' is NaN."
    """

    def __init__(
        self,
        what: str,
        *,
        num_nan: int = 0,
        num_inf: int = 0,
        numel: int = 1,
        samples: Sequence[int] = (),
        ids: Sequence[Any] = (),
        hint: str = "",
        batch_idx: int | None = None,
        global_step: int | None = None,
        host: str | None = None,
        policy: str = "raise",
    ) -> None:
        self.what = what
        self.num_nan = int(num_nan)
        self.num_inf = int(num_inf)
        self.numel = int(numel)
        self.samples = [int(i) for i in samples]
        self.ids = list(ids)
        self.hint = hint
        self.batch_idx = batch_idx
        self.global_step = global_step
        self.host = host
        self.policy = policy
        super().__init__(self._message())

    def add_context(
        self, *, batch_idx: int | None, global_step: int | None, host: str | None, policy: str
    ) -> None:
        """Record where the error happened (keeps values already set) and rebuild the message."""
        self.batch_idx = self.batch_idx if self.batch_idx is not None else batch_idx
        self.global_step = self.global_step if self.global_step is not None else global_step
        self.host = self.host or host
        self.policy = policy
        self.args = (self._message(),)

    def __str__(self) -> str:
        return self._message()

    def _message(self) -> str:
        where = ""
        if self.batch_idx is not None:
            where = f" in training batch {self.batch_idx}"
            if self.global_step is not None:
                where += f" (global step {self.global_step})"
        if self.host:
            where += f" of {self.host}"
        if self.numel == 1 and self.num_nan + self.num_inf == 1:
            found = f"{self.what} is {'NaN' if self.num_nan else 'Inf'}"
        else:
            found = (
                f"{self.what} has {self.num_nan + self.num_inf} non-finite of {self.numel} values "
                f"({self.num_nan} NaN, {self.num_inf} Inf)"
            )
        if self.samples:
            shown = ", ".join(str(i) for i in self.samples[:_MAX_LISTED])
            more = f" and {len(self.samples) - _MAX_LISTED} more" if len(self.samples) > _MAX_LISTED else ""
            found += f" in batch sample(s) {shown}{more}"
            if self.ids:
                found += f" (ids: {', '.join(repr(i) for i in self.ids[:_MAX_LISTED])})"
        parts = [f"Non-finite value{where}: {found}."]
        if self.hint:
            parts.append(self.hint)
        if self.policy == "raise":
            parts.append(
                "To skip such steps instead of stopping (no optimizer step and no EMA-teacher update for that "
                "batch; counted in `train/nonfinite_skipped`), build the model with `nonfinite='skip'` "
                "(YAML: `model.init_args.nonfinite: skip`)."
            )
        return " ".join(parts)


def nonfinite_error(
    what: str, values: Tensor, *, ids: Sequence[Any] | None = None, hint: str = ""
) -> NonFiniteError:
    """A :class:`NonFiniteError` describing ``values`` (counts NaN and Inf; lists the samples along dim 0).

    Meant for the failure path: it syncs with the device several times.

    Args:
        what: name of the tensor for the message.
        values: the offending tensor; ``values.shape[0]`` is the batch when ``values.ndim >= 1``.
        ids: optional sample ids, aligned with dim 0.
        hint: likely cause and fix.

    Example:
        >>> x = torch.zeros(3, 1, 2, 2)
        >>> x[1, 0, 0, 0], x[2, 0, 1, 1] = float("nan"), float("inf")
        >>> err = nonfinite_error("labeled image", x, ids=["a", "b", "c"])
        >>> err.num_nan, err.num_inf, err.samples, err.ids
        (1, 1, [1, 2], ['b', 'c'])
    """
    values = values.detach()
    num_nan = int(torch.isnan(values).sum())
    num_inf = int(torch.isinf(values).sum())
    samples: list[int] = []
    if values.ndim >= 1 and values.shape[0] > 0:
        bad = ~torch.isfinite(values.reshape(values.shape[0], -1)).all(dim=1)
        samples = bad.nonzero().flatten().tolist()
    picked: list[Any] = []
    if ids is not None and len(ids) == (values.shape[0] if values.ndim else -1):
        picked = [ids[i] for i in samples]
    return NonFiniteError(
        what, num_nan=num_nan, num_inf=num_inf, numel=values.numel(), samples=samples, ids=picked, hint=hint
    )


def check_finite(
    tensors: Mapping[str, Tensor | None],
    *,
    ids: Mapping[str, Sequence[Any] | None] | None = None,
    hint: str = "",
) -> None:
    """Raise :class:`NonFiniteError` for the first tensor in ``tensors`` with a NaN or Inf.

    One fused ``isfinite(x).all()`` per tensor and a single host-device sync for all of them; ``None`` and
    non-float entries are ignored.

    Args:
        tensors: name -> tensor, in the order to report them.
        ids: name -> sample ids aligned with that tensor's dim 0 (optional).
        hint: likely cause and fix, added to the message.

    Raises:
        NonFiniteError: naming the tensor, how many values were NaN / Inf and which samples.

    Example:
        >>> images = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
        >>> check_finite({"labeled image": images})  # finite: nothing happens
        >>> images[1, 0, :2, :2] = float("nan")
        >>> try:
        ...     check_finite({"labeled image": images}, ids={"labeled image": ["img_0", "img_1"]})
        ... except NonFiniteError as err:
        ...     print(err.what, err.num_nan, err.samples, err.ids)
        labeled image 4 [1] ['img_1']
    """
    items = [(n, t) for n, t in tensors.items() if isinstance(t, Tensor) and t.is_floating_point()]
    if not items:
        return
    device = items[0][1].device
    flags = torch.stack([torch.isfinite(t).all().to(device) for _, t in items])
    if bool(flags.all()):
        return
    name, values = items[int((~flags).nonzero()[0, 0])]
    raise nonfinite_error(name, values, ids=(ids or {}).get(name), hint=hint)

"""The corruption engine's interface for :class:`~qg_lightning.quality.sampling.CorruptionSampler`.

Internal: not part of the public API (use :mod:`.functional` and :mod:`.registry`), but the only module of the
engine that code outside :mod:`qg_lightning.quality.corruptions` may import internals from. The sampler
needs:

* the mask plumbing: :func:`check_masks`, :func:`to_u8` (hard ``uint8`` view or copy), :func:`from_u8`,
  :func:`finish` (back to the caller's dtype as an ordinary tensor) and :func:`row_counts`;
* the backends: :data:`BACKENDS`, :func:`check_backend`;
* merged calls: :func:`plan_of` gives ``(kernel, params)`` for a built-in corruption that has a kernel with
  per-sample parameters (``None`` otherwise), and :func:`run_u8` runs one kernel on uint8 masks ``(B, C, H,
  W)`` with a list of per-sample parameters, so that registry entries sharing a kernel (``shift_10``,
  ``scale_up``, ``rotate_30``, ...) run as one call;
* :func:`is_builtin`: whether a function is one of :mod:`.functional`'s corruptions, which take uint8 masks
  as they are and a ``backend`` argument (custom corruptions get the caller's dtype and no ``backend``).

Example:
    >>> import torch
    >>> from qg_lightning.quality.corruptions import functional as F
    >>> kernel, params = plan_of(F.shift, {"max_fraction": 0.2})
    >>> kernel is plan_of(F.rotate, {"max_degrees": 30.0})[0], is_builtin(F.shift), plan_of(F.convex_hull, {})
    (True, True, None)
    >>> kernel, _ = plan_of(F.dilation, {"kernel": 5})  # erosion, opening and closing share it
    >>> masks = torch.zeros(2, 1, 16, 16, dtype=torch.uint8)
    >>> masks[..., 4:12, 4:12] = 1
    >>> run_u8(masks, kernel, {"op": [0.0, 1.0], "kernel": [5.0, 5.0]}, None, "auto").sum((1, 2, 3)).tolist()
    [100, 36]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from torch import Tensor

from qg_lightning.quality.corruptions import _plans as P
from qg_lightning.quality.corruptions import functional as F
from qg_lightning.quality.corruptions._base import (
    BACKENDS,
    Backend,
    Kernel,
    check_backend,
    check_masks,
    finish,
    from_u8,
    row_counts,
    run_u8,
    to_u8,
)
from qg_lightning.quality.corruptions._plans import Plan

__all__ = [
    "BACKENDS",
    "PLANS",
    "Backend",
    "Kernel",
    "Plan",
    "check_backend",
    "check_masks",
    "finish",
    "from_u8",
    "is_builtin",
    "plan_of",
    "row_counts",
    "run_u8",
    "to_u8",
]

PLANS: Mapping[Callable[..., Tensor], Callable[..., Plan]] = MappingProxyType(
    {
        F.erosion: lambda kernel=5: P.plan_morph(1, kernel),
        F.dilation: lambda kernel=5: P.plan_morph(0, kernel),
        F.opening: lambda kernel=5: P.plan_morph(2, kernel),
        F.closing: lambda kernel=5: P.plan_morph(3, kernel),
        F.inverted: lambda: P.plan_catastrophic(0),
        F.empty: lambda: P.plan_catastrophic(1),
        F.full: lambda: P.plan_catastrophic(2),
        F.random_noise: lambda p=0.5: P.plan_catastrophic(3, p),
        F.keep_largest_component: lambda: P.plan_components(0),
        F.drop_random_component: lambda: P.plan_components(1),
        F.holes: P.plan_holes,
        F.islands: P.plan_islands,
        F.holes_and_islands: P.plan_holes_and_islands,
        F.shift: P.plan_shift,
        F.scale: P.plan_scale,
        F.rotate: P.plan_rotate,
        F.random_affine: P.plan_affine,
        F.gaussian_blob: P.plan_blob,
        F.circle: P.plan_circle,
        F.polygon_approximation: P.plan_polygon,
        F.smoothing: P.plan_smoothing,
        F.elastic_warp: P.plan_elastic,
        F.grid_distortion: P.plan_grid,
    }
)
"""Public function -> ``plan(**params) -> (kernel, per-sample params)``: calling the function with ``params``
is ``run(masks, *plan(**params), generator, backend)``."""

_BUILTINS: frozenset[Callable[..., Tensor]] = frozenset(
    getattr(F, name)
    for name in F.__all__
    if name not in ("BACKENDS", "REFERENCE_SIZE", "Backend", "scaled_radius")
)


def plan_of(fn: Callable[..., Tensor], params: Mapping[str, Any]) -> Plan | None:
    """``(kernel, params)`` of built-in corruption ``fn`` called with ``params``, or ``None`` when ``fn`` has no
    kernel with per-sample parameters (a custom function, or a built-in the sampler calls as it is)."""
    plan = PLANS.get(fn)
    return None if plan is None else plan(**params)


def is_builtin(fn: Callable[..., Tensor]) -> bool:
    """Whether ``fn`` is one of :mod:`.functional`'s corruptions (takes uint8 masks and ``backend``)."""
    return fn in _BUILTINS

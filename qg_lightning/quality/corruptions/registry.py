"""Read-only registries of the corruption recipe in METHOD.md ("Training masks").

Each registry maps a name to a frozen :class:`CorruptionSpec` (function, relative weight, family, parameters):

* :data:`MAIN`: the main registry (the ``single`` and ``chained`` categories),
* :data:`HEAVY`: heavy corruptions (all weight 1),
* :data:`CATASTROPHIC`: inverted / empty / full / random,
* :data:`BLOB`: crude blobs an early model outputs (Gaussian blob, larger Gaussian blob, circle, convex hull,
  bounding box) with their main-registry weights,
* :data:`MULTICLASS`: **(ours)** ``class_swap``, mixed into the main draws when masks have several classes.

Sizes are pixels at 224 x 224 and are scaled to the mask size by the functions themselves.

The registries cannot be changed. To add your own corruption, build a new dict and hand it to the sampler::

    from qg_lightning.quality import MAIN, CorruptionSampler, CorruptionSpec

    def speckle(masks, *, generator=None, amount=0.01):
        ...  # pure: (B, C, H, W) {0, 1} -> same shape and dtype

    sampler = CorruptionSampler(main=dict(MAIN, speckle=CorruptionSpec("speckle", speckle, 1.0, "custom",
                                                                         {"amount": 0.02})))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from qg_lightning._validation import is_number
from qg_lightning.quality.corruptions import functional as F

__all__ = [
    "BLOB",
    "CATASTROPHIC",
    "HEAVY",
    "MAIN",
    "MULTICLASS",
    "CorruptionSpec",
    "all_corruptions",
    "get_corruption",
]


@dataclass(frozen=True, eq=False)
class CorruptionSpec:
    """One named corruption: ``fn(masks, generator=..., **params)`` drawn with relative ``weight``.

    Attributes:
        name: registry key (e.g. ``"erosion_5"``).
        fn: pure function ``(masks (B, C, H, W), *, generator=None, **params) -> masks`` of the same
        shape/dtype. weight: relative draw weight inside its registry (>= 0).
        family: group label (``"morphology"``, ``"shape"``, ``"boundary"``, ``"structure"``, ``"geometry"``,
            ``"blob"``, ``"catastrophic"``, ``"multiclass"`` or your own). Chained draws skip ``"blob"``.
        params: keyword arguments for ``fn`` (stored read-only).

    Example:
        >>> spec = CorruptionSpec("erosion_5", F.erosion, 1.0, "morphology", {"kernel": 5})
        >>> masks = torch.zeros(1, 1, 16, 16)
        >>> masks[..., 4:12, 4:12] = 1
        >>> spec(masks).sum().item()
        36.0
    """

    name: str
    fn: Callable[..., Tensor]
    weight: float
    family: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"`name` must be a non-empty string, got {self.name!r}.")
        if not callable(self.fn):
            raise TypeError(
                f"`fn` of corruption {self.name!r} must be callable, got {type(self.fn).__name__}."
            )
        if not is_number(self.weight):
            raise TypeError(f"`weight` of corruption {self.name!r} must be a number, got {self.weight!r}.")
        if not math.isfinite(self.weight) or self.weight < 0:
            raise ValueError(
                f"`weight` of corruption {self.name!r} must be finite and >= 0, got {self.weight!r}."
            )
        if not isinstance(self.family, str) or not self.family:
            raise ValueError(
                f"`family` of corruption {self.name!r} must be a non-empty string, got {self.family!r}."
            )
        if not isinstance(self.params, Mapping):
            raise TypeError(f"`params` of corruption {self.name!r} must be a mapping, got {self.params!r}.")
        object.__setattr__(self, "weight", float(self.weight))
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def __call__(
        self, masks: Tensor, *, generator: torch.Generator | None = None, backend: str | None = None
    ) -> Tensor:
        """Apply the corruption to ``masks`` ``(B, C, H, W)``.

        ``backend`` (``"auto"``, ``"opencv"`` or ``"torch"``, see :data:`~.functional.BACKENDS`) is handed to
        ``fn`` when given; the built-in functions take it, a custom ``fn`` need not (leave it ``None``).
        """
        if backend is None:
            return self.fn(masks, generator=generator, **self.params)
        return self.fn(masks, generator=generator, backend=backend, **self.params)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CorruptionSpec):
            return NotImplemented
        return (self.name, self.fn, self.weight, self.family, dict(self.params)) == (
            other.name,
            other.fn,
            other.weight,
            other.family,
            dict(other.params),
        )

    def __hash__(self) -> int:
        return hash((self.name, self.fn, self.weight, self.family, repr(sorted(self.params.items()))))


def _registry(*specs: CorruptionSpec) -> Mapping[str, CorruptionSpec]:
    return MappingProxyType({spec.name: spec for spec in specs})


_S = CorruptionSpec

# blob family, shared by MAIN and BLOB
_GAUSSIAN_BLOB = _S("gaussian_blob", F.gaussian_blob, 1.0, "blob", {"std_factor": 1.0})
_GAUSSIAN_BLOB_LARGE = _S("gaussian_blob_large", F.gaussian_blob, 0.7, "blob", {"std_factor": 1.2})
_CIRCLE = _S("circle", F.circle, 0.8, "blob")
_CONVEX_HULL = _S("convex_hull", F.convex_hull, 1.0, "shape")
_BBOX_FILL = _S("bbox_fill", F.bounding_box, 0.5, "shape")

MAIN: Mapping[str, CorruptionSpec] = _registry(
    # morphology
    _S("erosion_5", F.erosion, 1.0, "morphology", {"kernel": 5}),
    _S("erosion_7", F.erosion, 1.0, "morphology", {"kernel": 7}),
    _S("erosion_9", F.erosion, 0.8, "morphology", {"kernel": 9}),
    _S("dilation_5", F.dilation, 1.0, "morphology", {"kernel": 5}),
    _S("dilation_7", F.dilation, 1.0, "morphology", {"kernel": 7}),
    _S("dilation_9", F.dilation, 0.8, "morphology", {"kernel": 9}),
    _S("opening_5", F.opening, 0.5, "morphology", {"kernel": 5}),
    _S("closing_5", F.closing, 0.5, "morphology", {"kernel": 5}),
    # shape approximation
    _S("ellipse", F.fitted_ellipse, 1.0, "shape"),
    _S("polygon_3", F.polygon_approximation, 0.5, "shape", {"vertices": 3}),
    _S("polygon_5", F.polygon_approximation, 0.8, "shape", {"vertices": 5}),
    _S("polygon_8", F.polygon_approximation, 0.8, "shape", {"vertices": 8}),
    _CONVEX_HULL,
    _BBOX_FILL,
    # boundary
    _S("jagged_3", F.jagged_band, 1.0, "boundary", {"kernel": 3}),
    _S("jagged_5", F.jagged_band, 1.0, "boundary", {"kernel": 5}),
    _S("smooth_11", F.smoothing, 0.8, "boundary", {"kernel": 11}),
    _S("smooth_15", F.smoothing, 0.8, "boundary", {"kernel": 15}),
    _S("elastic_30", F.elastic_warp, 1.0, "boundary", {"alpha": 30.0, "sigma": 4.0}),
    _S("elastic_60", F.elastic_warp, 0.8, "boundary", {"alpha": 60.0, "sigma": 5.0}),
    _S("grid_5", F.grid_distortion, 1.0, "boundary", {"num_steps": 5, "distort_limit": 0.2}),
    _S("grid_8", F.grid_distortion, 0.7, "boundary", {"num_steps": 8, "distort_limit": 0.4}),
    # structure
    _S("holes_small", F.holes, 1.0, "structure", {"count": 2, "radius": (3.0, 8.0)}),
    _S("holes_large", F.holes, 0.8, "structure", {"count": 3, "radius": (8.0, 15.0)}),
    _S("islands", F.islands, 1.0, "structure", {"count": 2, "radius": (3.0, 8.0)}),
    _S(
        "holes_islands",
        F.holes_and_islands,
        1.0,
        "structure",
        {"holes": 2, "islands": 2, "radius": (5.0, 15.0)},
    ),
    _S("keep_largest", F.keep_largest_component, 0.8, "structure"),
    _S("drop_component", F.drop_random_component, 0.5, "structure"),
    _S("rect_dropout", F.rectangular_dropout, 0.8, "structure", {"fraction": (0.1, 0.3)}),
    # geometry
    _S("shift_10", F.shift, 1.0, "geometry", {"max_fraction": 0.1}),
    _S("shift_20", F.shift, 0.8, "geometry", {"max_fraction": 0.2}),
    _S("shift_30", F.shift, 0.5, "geometry", {"max_fraction": 0.3}),
    _S("scale_down", F.scale, 1.0, "geometry", {"factor": (0.75, 0.9)}),
    _S("scale_up", F.scale, 1.0, "geometry", {"factor": (1.1, 1.25)}),
    _S("rotate_15", F.rotate, 1.0, "geometry", {"max_degrees": 15.0}),
    _S("rotate_30", F.rotate, 0.7, "geometry", {"max_degrees": 30.0}),
    _S(
        "affine",
        F.random_affine,
        0.8,
        "geometry",
        {"scale": (0.9, 1.1), "max_shift": 0.1, "max_degrees": 15.0},
    ),
    # blob
    _GAUSSIAN_BLOB,
    _GAUSSIAN_BLOB_LARGE,
    _CIRCLE,
)
"""Main registry: METHOD.md's names, sizes (pixels at 224 px) and relative weights."""

HEAVY: Mapping[str, CorruptionSpec] = _registry(
    _S("erosion_11", F.erosion, 1.0, "morphology", {"kernel": 11}),
    _S("dilation_11", F.dilation, 1.0, "morphology", {"kernel": 11}),
    _S("shift_40", F.shift, 1.0, "geometry", {"max_fraction": 0.4}),
    _S("scale_shrink", F.scale, 1.0, "geometry", {"factor": (0.5, 0.7)}),
    _S("scale_grow", F.scale, 1.0, "geometry", {"factor": (1.4, 1.6)}),
    _S("grid_12", F.grid_distortion, 1.0, "boundary", {"num_steps": 12, "distort_limit": 0.6}),
    _S("holes_heavy", F.holes, 1.0, "structure", {"count": 5, "radius": (10.0, 20.0)}),
)
"""Heavy registry (all weight 1)."""

CATASTROPHIC: Mapping[str, CorruptionSpec] = _registry(
    _S("inverted", F.inverted, 1.0, "catastrophic"),
    _S("empty", F.empty, 0.5, "catastrophic"),
    _S("full", F.full, 0.5, "catastrophic"),
    _S("random", F.random_noise, 0.3, "catastrophic", {"p": 0.5}),
)
"""Catastrophic registry."""

BLOB: Mapping[str, CorruptionSpec] = _registry(
    _GAUSSIAN_BLOB, _GAUSSIAN_BLOB_LARGE, _CIRCLE, _CONVEX_HULL, _BBOX_FILL
)
"""Blob registry: the crude blobs of the ``blob`` category, weighted as in the main registry."""

MULTICLASS: Mapping[str, CorruptionSpec] = _registry(
    _S("class_swap", F.class_swap, 1.0, "multiclass", {"radius": (0.15, 0.35)}),
)
"""**(ours)** Corruptions added to the main draws only when masks have several foreground classes."""

_ALL_REGISTRIES: tuple[tuple[str, Mapping[str, CorruptionSpec]], ...] = (
    ("MAIN", MAIN),
    ("HEAVY", HEAVY),
    ("CATASTROPHIC", CATASTROPHIC),
    ("BLOB", BLOB),
    ("MULTICLASS", MULTICLASS),
)


def all_corruptions() -> Mapping[str, CorruptionSpec]:
    """Every built-in corruption by name (read-only), across all registries.

    Example:
        >>> len(all_corruptions()), "erosion_5" in all_corruptions()
        (52, True)
    """
    merged: dict[str, CorruptionSpec] = {}
    for _, registry in _ALL_REGISTRIES:
        merged.update(registry)
    return MappingProxyType(merged)


def get_corruption(name: str) -> CorruptionSpec:
    """Look up a built-in corruption by name.

    Raises:
        KeyError: if ``name`` is unknown; the message lists every valid name.

    Example:
        >>> get_corruption("dilation_7").params["kernel"]
        7
    """
    registry = all_corruptions()
    if name not in registry:
        raise KeyError(
            f"Unknown corruption {name!r}. Valid names: {sorted(registry)}. To add your own, pass "
            "`main=dict(MAIN, my_name=CorruptionSpec(...))` to CorruptionSampler."
        )
    return registry[name]

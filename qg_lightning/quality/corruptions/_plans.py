"""Layer 3 of the corruption engine: plans, from a public function's arguments to a kernel call.

A plan validates the public arguments (errors name them) and returns ``(kernel, params)``: the kernel of
:mod:`._kernels` and its per-sample parameters as scalars. The public functions run their plan on the masks;
:mod:`.engine` maps each public function to its plan, so that the sampler can merge registry entries that share
a kernel into one call.

Example:
    >>> kernel, params = plan_morph(1, 5)
    >>> kernel.__name__, params
    ('k_morph', {'op': 1.0, 'kernel': 5.0})
"""

from __future__ import annotations

import math

from qg_lightning._validation import check_int, check_number
from qg_lightning.quality.corruptions._base import Kernel, check_range
from qg_lightning.quality.corruptions._kernels import (
    k_blob,
    k_catastrophic,
    k_components,
    k_elastic,
    k_geometry,
    k_grid,
    k_morph,
    k_polygon,
    k_smooth,
    k_spots,
)

__all__ = [
    "Plan",
    "plan_affine",
    "plan_blob",
    "plan_catastrophic",
    "plan_circle",
    "plan_components",
    "plan_elastic",
    "plan_grid",
    "plan_holes",
    "plan_holes_and_islands",
    "plan_islands",
    "plan_morph",
    "plan_polygon",
    "plan_rotate",
    "plan_scale",
    "plan_shift",
    "plan_smoothing",
    "plan_spots",
]

Plan = tuple[Kernel, dict]
"""``(kernel, params)``: a kernel of :mod:`._kernels` and its parameters (name -> float)."""


def plan_catastrophic(kind: int, p: float = 0.5) -> Plan:
    """``kind`` 0 inverted, 1 empty, 2 full, 3 coin flips with foreground probability ``p``."""
    return k_catastrophic, {"kind": float(kind), "p": check_number(p, "p", low=0.0, high=1.0)}


def plan_morph(op: int, kernel: int = 5) -> Plan:
    """``op`` 0 dilation, 1 erosion, 2 opening, 3 closing with a square ``kernel`` (pixels at 224 px)."""
    return k_morph, {"op": float(op), "kernel": float(check_int(kernel, "kernel", minimum=1))}


def plan_polygon(vertices: int = 5) -> Plan:
    return k_polygon, {"vertices": float(check_int(vertices, "vertices", minimum=3))}


def plan_smoothing(kernel: int = 11) -> Plan:
    return k_smooth, {"kernel": float(check_int(kernel, "kernel", minimum=1))}


def plan_elastic(alpha: float = 30.0, sigma: float = 4.0) -> Plan:
    return k_elastic, {
        "alpha": check_number(alpha, "alpha", low=0.0),
        "sigma": check_number(sigma, "sigma", low=1e-3),
    }


def plan_grid(num_steps: int = 5, distort_limit: float = 0.2) -> Plan:
    return k_grid, {
        "num_steps": float(check_int(num_steps, "num_steps", minimum=1)),
        "distort_limit": check_number(distort_limit, "distort_limit", low=0.0, high=0.99),
    }


def plan_spots(holes: int = 0, islands: int = 0, radius: tuple[float, float] = (3.0, 8.0)) -> Plan:
    lo, hi = check_range(radius, "radius", 0.0, math.inf)
    return k_spots, {
        "holes": float(check_int(holes, "holes", minimum=0)),
        "islands": float(check_int(islands, "islands", minimum=0)),
        "r_lo": lo,
        "r_hi": hi,
    }


def plan_holes(count: int = 2, radius: tuple[float, float] = (3.0, 8.0)) -> Plan:
    return plan_spots(holes=check_int(count, "count", minimum=1), radius=radius)


def plan_islands(count: int = 2, radius: tuple[float, float] = (3.0, 8.0)) -> Plan:
    return plan_spots(islands=check_int(count, "count", minimum=1), radius=radius)


def plan_holes_and_islands(
    holes: int = 2, islands: int = 2, radius: tuple[float, float] = (5.0, 15.0)
) -> Plan:
    return plan_spots(holes, islands, radius)


def plan_components(mode: int) -> Plan:
    """``mode`` 0 keeps the largest component, 1 drops a random one."""
    return k_components, {"mode": float(mode)}


def _geometry(
    centroid: bool, scale: tuple[float, float], max_degrees: float, max_shift: float, whole: bool
) -> Plan:
    return k_geometry, {
        "centroid": float(centroid),
        "scale_lo": scale[0],
        "scale_hi": scale[1],
        "max_degrees": max_degrees,
        "max_shift": max_shift,
        "whole": float(whole),
    }


def plan_shift(max_fraction: float = 0.1) -> Plan:
    return _geometry(
        False, (1.0, 1.0), 0.0, check_number(max_fraction, "max_fraction", low=0.0, high=1.0), True
    )


def plan_scale(factor: tuple[float, float] = (0.75, 0.9)) -> Plan:
    return _geometry(True, check_range(factor, "factor", 1e-3, math.inf), 0.0, 0.0, True)


def plan_rotate(max_degrees: float = 15.0) -> Plan:
    return _geometry(
        True, (1.0, 1.0), check_number(max_degrees, "max_degrees", low=0.0, high=180.0), 0.0, True
    )


def plan_affine(
    scale: tuple[float, float] = (0.9, 1.1), max_shift: float = 0.1, max_degrees: float = 15.0
) -> Plan:
    return _geometry(
        False,
        check_range(scale, "scale", 1e-3, math.inf),
        check_number(max_degrees, "max_degrees", low=0.0, high=180.0),
        check_number(max_shift, "max_shift", low=0.0, high=1.0),
        False,
    )


def plan_blob(std_factor: float = 1.0) -> Plan:
    return k_blob, {"std_factor": check_number(std_factor, "std_factor", low=1e-3), "isotropic": 0.0}


def plan_circle() -> Plan:
    return k_blob, {"std_factor": 1.0, "isotropic": 1.0}

"""Mask corruptions for training the quality predictor: pure batched functions and read-only registries.

Public API: the corruption functions of :mod:`.functional` (all re-exported here) and the registries of
:mod:`.registry`. Every function takes ``backend`` (:data:`BACKENDS`): ``"auto"`` (OpenCV / NumPy per mask for
CPU tensors, batched torch otherwise), ``"torch"`` (the batched path CUDA tensors take, also on CPU) or
``"opencv"`` (CPU tensors only). Both paths make the same random draws and agree pixel for pixel up to float
rounding ties; there is no global switch.

Layout (each layer imports only the ones above it):

=====================  =============================================================================
``_base.py``           validation, the ``uint8`` mask plumbing, backends, random draws, row / column
                       counts, and the kernel runner (``run``, ``run_u8``)
``_torch_ops.py``      batched torch primitives on ``uint8`` ``(N, H, W)``: morphology, moments,
                       row-interval painting, gathers and warps, blurs
``_cv_ops.py``         the OpenCV / NumPy versions for CPU tensors, and the constants they build once
                       (``functools.lru_cache``, bounded, read-only arrays)
``_kernels.py``        one kernel per corruption kind with per-sample parameters,
                       ``kernel(x, p, q, generator, opencv)``
``_direct.py``         the pixel work of corruptions without per-sample parameters (ellipse, hull,
                       bounding box, jagged band, rectangular dropout, class swap)
``_plans.py``          public arguments -> ``(kernel, params)``, with the argument checks
``functional.py``      the public functions: docstrings, checks, one call into the layers above
``registry.py``        the read-only registries of METHOD.md's recipe
``engine.py``          the internal interface for :class:`~qg_lightning.quality.sampling.CorruptionSampler`
=====================  =============================================================================

Internal interface. Code outside this package imports only public names, and from :mod:`.engine` its
documented internals: the mask plumbing (``check_masks``, ``to_u8``, ``from_u8``, ``finish``,
``row_counts``), ``plan_of(fn, params)`` (``(kernel, params)`` of a built-in corruption that has a kernel),
``run_u8`` (one kernel call on uint8 masks with per-sample parameters: how the sampler merges registry
entries that share a kernel) and ``is_builtin`` (built-ins take uint8 masks and ``backend`` as they are).

Implementation notes (measured on one CPU thread with ``benchmarks/corruptions.py``):

* Internally masks are ``uint8`` ``{0, 1}`` tensors ``(N, H, W)`` with ``N = B * C``: bitwise ops on bytes
  are several times faster than ``float32`` ops and broadcasting ``uint8`` ops stay vectorised (``bool`` and
  ``torch.where`` ones do not); counts use byte lanes of 64-bit word sums (``sum(dtype=...)`` on ``uint8``
  first copies the whole tensor).
* Morphology: separable shifted ORs (``O(log k)`` passes per axis with van Herk style doubling); CPU
  ``max_pool2d`` is 50-100x slower.
* Shapes given by parameters (disks, ellipses, rectangles, convex polygons, convex hulls) are one
  ``[lo, hi]`` interval per row, painted by copying windows of a 0/1 ramp (no broadcast comparisons).
* Warps: whole-pixel shifts copy rows (``index_select`` over an ``unfold`` view); scalings and grid
  distortions gather rows, then columns; rotations, affine maps and elastic warps gather per pixel.
* Connected components (:func:`keep_largest_component`, :func:`drop_random_component`) have no cheap batched
  form: they loop over samples with ``cv2.connectedComponents`` inside one helper on every backend.
* CPU tensors (``backend="auto"``): the pixel work of the heavy kernels (morphology, blur, warps, disks,
  row-interval shapes, moments) runs per mask with OpenCV / NumPy, which on one CPU thread is several times
  cheaper than the batched torch ops on the sampler's small sub-batches (a torch op costs 3-10 us however
  small its input). Every random parameter is still drawn with torch from ``generator``, batched and in the
  same order, so the two paths make the same draws.
* Constants that depend only on the size or on a parameter value (ramp windows, pixel grids, moment bases,
  the hull's directions, Gaussian taps) are computed once per value (bounded ``lru_cache``); masks are
  stacked with gap rows so that one OpenCV morphology call serves a whole sub-batch.
* Most corruptions are thin wrappers around a few kernels taking per-sample parameters; the sampler runs all
  registry entries that share a kernel (e.g. ``shift_10``, ``scale_up`` and ``rotate_30``) as one call,
  because on CPU the cost of a call on a small sub-batch is dominated by the number of tensor operations, not
  by the pixels. Work runs under ``torch.inference_mode``; results are ordinary tensors.

Example:
    >>> from qg_lightning.quality.corruptions import MAIN, erosion
    >>> MAIN["erosion_5"].params["kernel"], erosion.__name__
    (5, 'erosion')
"""

from qg_lightning.quality.corruptions.functional import (
    BACKENDS,
    REFERENCE_SIZE,
    Backend,
    bounding_box,
    circle,
    class_swap,
    closing,
    convex_hull,
    dilation,
    drop_random_component,
    elastic_warp,
    empty,
    erosion,
    fitted_ellipse,
    full,
    gaussian_blob,
    grid_distortion,
    holes,
    holes_and_islands,
    identity,
    inverted,
    islands,
    jagged_band,
    keep_largest_component,
    opening,
    polygon_approximation,
    random_affine,
    random_noise,
    rectangular_dropout,
    rotate,
    scale,
    scaled_radius,
    shift,
    smoothing,
)
from qg_lightning.quality.corruptions.registry import (
    BLOB,
    CATASTROPHIC,
    HEAVY,
    MAIN,
    MULTICLASS,
    CorruptionSpec,
    all_corruptions,
    get_corruption,
)

__all__ = [
    "BACKENDS",
    "BLOB",
    "CATASTROPHIC",
    "HEAVY",
    "MAIN",
    "MULTICLASS",
    "REFERENCE_SIZE",
    "Backend",
    "CorruptionSpec",
    "all_corruptions",
    "bounding_box",
    "circle",
    "class_swap",
    "closing",
    "convex_hull",
    "dilation",
    "drop_random_component",
    "elastic_warp",
    "empty",
    "erosion",
    "fitted_ellipse",
    "full",
    "gaussian_blob",
    "get_corruption",
    "grid_distortion",
    "holes",
    "holes_and_islands",
    "identity",
    "inverted",
    "islands",
    "jagged_band",
    "keep_largest_component",
    "opening",
    "polygon_approximation",
    "random_affine",
    "random_noise",
    "rectangular_dropout",
    "rotate",
    "scale",
    "scaled_radius",
    "shift",
    "smoothing",
]

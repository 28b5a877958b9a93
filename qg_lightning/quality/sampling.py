"""Variable-quality training masks: category draw -> corrupted masks + Dice targets (Phase 1 of [0]).

:class:`CorruptionSampler` turns a batch of ground-truth foreground masks into candidate masks of every
quality, following METHOD.md ("Training masks"): per sample one category is drawn with
:data:`CATEGORY_PROBS`, then

* ``identity``: the ground truth itself (quality 1),
* ``single``: one main-registry corruption, drawn in proportion to its weight,
* ``chained``: 2-3 distinct main-registry corruptions (blob family excluded), applied in sequence,
* ``cross_image``: the ground truth of another mask in the pool, uniformly among the 20 % closest in
  foreground area,
* ``heavy`` / ``catastrophic`` / ``blob``: one corruption from that registry,

and the target is the per-class Dice of the candidate against the input (:func:`dice_target`).

Speed: samples are grouped by corruption and each group runs as one call on its sub-batch (per step of a
chain); built-in corruptions that share an implementation (e.g. all shifts, scalings and rotations) are merged
into one call with per-sample parameters (through :mod:`qg_lightning.quality.corruptions.engine`, the engine's
interface for this module). On CPU the pixel work runs per mask with OpenCV / NumPy unless ``backend="torch"``
(parameters are still drawn with torch, see :mod:`qg_lightning.quality.corruptions`), sub-batches are gathered
and scattered with NumPy, and the fixed cost of a call (a few dozen small tensor operations) is amortised
better by larger batches.

References:
    [0] Abhishek & Hamarneh, "Quality-Guided Semi-Supervised Learning for Medical Image Segmentation",
    arXiv:2606.01753, 2026.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor

from qg_lightning._validation import check_fraction, check_number
from qg_lightning.quality.corruptions.engine import (
    Backend,
    check_backend,
    check_masks,
    finish,
    from_u8,
    is_builtin,
    plan_of,
    row_counts,
    run_u8,
    to_u8,
)
from qg_lightning.quality.corruptions.registry import (
    BLOB,
    CATASTROPHIC,
    HEAVY,
    MAIN,
    MULTICLASS,
    CorruptionSpec,
)

__all__ = [
    "CATEGORIES",
    "CATEGORY_PROBS",
    "CorruptionResult",
    "CorruptionSampler",
    "check_category_probs",
    "dice_target",
]

CATEGORIES: tuple[str, ...] = (
    "identity",
    "single",
    "chained",
    "cross_image",
    "heavy",
    "catastrophic",
    "blob",
)
"""Category names; ``CorruptionResult.category`` holds indices into this tuple."""

CATEGORY_PROBS: Mapping[str, float] = MappingProxyType(
    {
        "identity": 0.20,
        "single": 0.28,
        "chained": 0.18,
        "cross_image": 0.10,
        "heavy": 0.12,
        "catastrophic": 0.05,
        "blob": 0.07,
    }
)
"""Default category probabilities (METHOD.md)."""

_IDENTITY, _SINGLE, _CHAINED, _CROSS, _HEAVY, _CATASTROPHIC, _BLOB = range(len(CATEGORIES))
_DRAWN = (_SINGLE, _HEAVY, _CATASTROPHIC, _BLOB, _CHAINED)
"""Categories whose corruptions are drawn from a registry, in the order of their draws."""


def dice_target(candidate: Tensor, truth: Tensor) -> Tensor:
    """Per-class Dice between hard candidate and ground-truth foreground masks.

    ``Dice = 2 |A n B| / (|A| + |B|)`` per sample and foreground channel. Rules for empty masks (METHOD.md):
    Dice(empty, empty) = 1.0; empty against non-empty = 0.0. Float masks are binarised at 0.5. Per class of a
    multi-class mask this means: a class absent from both candidate and truth has target 1.0 (nothing to get
    wrong); a class the candidate paints where the truth has none, or misses where it has some, 0.0. These
    are the targets the quality predictor trains on (``docs/predictor.md``, "Multi-class masks: absent
    classes").

    Args:
        candidate: ``(B, C, H, W)`` float / bool / uint8 masks.
        truth: ``(B, C, H, W)`` masks of the same shape.

    Returns:
        ``(B, C)`` float32 Dice in ``[0, 1]``.

    Example:
        >>> truth = torch.zeros(3, 1, 4, 4)
        >>> truth[:2, :, :2] = 1
        >>> candidate = torch.zeros(3, 1, 4, 4)
        >>> candidate[0, :, :1] = 1
        >>> dice_target(candidate, truth)
        tensor([[0.6667],
                [0.0000],
                [1.0000]])
        >>> truth3 = torch.zeros(1, 2, 4, 4); truth3[:, 0, :2] = 1  # class 2 absent from the truth
        >>> dice_target(truth3, truth3), dice_target(torch.ones(1, 2, 4, 4) - truth3, truth3)
        (tensor([[1., 1.]]), tensor([[0., 0.]]))
    """
    check_masks(candidate, "candidate")
    check_masks(truth, "truth")
    if candidate.shape != truth.shape:
        raise ValueError(
            f"`candidate` and `truth` must have the same shape, got {tuple(candidate.shape)} and "
            f"{tuple(truth.shape)}."
        )
    return _dice_u8(to_u8(candidate), to_u8(truth))


def _area(x: Tensor) -> Tensor:
    """Foreground pixels per sample and channel of uint8 ``(B, C, H, W)`` -> float32 ``(B, C)``."""
    b, c, h, w = x.shape
    if x.device.type == "cpu" and x.is_contiguous() and x.numel() > 0:  # OpenCV counts ~2x faster
        counts = [cv2.countNonZero(m) for m in x.numpy().reshape(b * c, h, w)]
        return torch.from_numpy(np.array(counts, dtype=np.float32)).view(b, c)
    return row_counts(x.reshape(b * c, h, w)).sum(1).view(b, c)


def _dice_u8(
    candidate: Tensor, truth: Tensor, *, overwrite_truth: bool = False, truth_area: Tensor | None = None
) -> Tensor:
    """Dice of uint8 masks; ``overwrite_truth`` reuses ``truth``'s memory for the intersection (no
    allocation); ``truth_area`` is ``_area(truth)`` when the caller already has it."""
    denom = _area(candidate) + (_area(truth) if truth_area is None else truth_area)
    inter = _area(truth.bitwise_and_(candidate) if overwrite_truth else candidate & truth)
    return torch.where(denom > 0, 2 * inter / denom.clamp_min(1), 1.0)


def _schedule(sequences: list[list[int]], keys: list[tuple]) -> list[list[tuple[int, int]]]:
    """Order the calls: each call applies one group key to every sample whose *next* op has that key.

    Two deterministic schedules are built and the one with fewer calls is returned: step by step (all first
    ops, then all second ops, ...) and greedy (repeatedly the key that no pending sequence needs again later,
    then the most common). Returns ``[(sample, op), ...]`` per call; every sample's ops stay in order.
    """

    def by_step() -> list[list[tuple[int, int]]]:
        calls = []
        for step in range(max((len(seq) for seq in sequences), default=0)):
            groups: dict[tuple, list[tuple[int, int]]] = {}
            for i, seq in enumerate(sequences):
                if step < len(seq):
                    groups.setdefault(keys[seq[step]], []).append((i, seq[step]))
            calls += [groups[key] for key in sorted(groups)]
        return calls

    def greedy() -> list[list[tuple[int, int]]]:
        pos = [0] * len(sequences)
        ready: dict[tuple, list[tuple[int, int]]] = {}  # key -> samples whose next op has it
        later: dict[tuple, int] = {}  # key -> pending ops after the next ones
        for i, seq in enumerate(sequences):
            if seq:
                ready.setdefault(keys[seq[0]], []).append((i, seq[0]))
            for op in seq[1:]:
                later[keys[op]] = later.get(keys[op], 0) + 1
        calls = []
        while ready:
            key = min(ready, key=lambda k: (later.get(k, 0), -len(ready[k]), k))
            group = ready.pop(key)
            calls.append(group)
            for i, _ in group:
                pos[i] += 1
                seq = sequences[i]
                if pos[i] < len(seq):
                    nxt = keys[seq[pos[i]]]
                    later[nxt] -= 1
                    ready.setdefault(nxt, []).append((i, seq[pos[i]]))
        return calls

    first, second = by_step(), greedy()
    return second if len(second) < len(first) else first


@dataclass(frozen=True)
class CorruptionResult:
    """Output of :class:`CorruptionSampler`.

    Attributes:
        masks: corrupted masks ``(B, C, H, W)``, hard ``{0, 1}``, same dtype as the input masks.
        quality: ``(B, C)`` float32 Dice of ``masks`` against the input masks (the training target).
        category: ``(B,)`` long indices into :data:`CATEGORIES`.
        name: per sample, the corruption(s) applied: ``"identity"``, ``"cross_image"``, a registry name, or
            names joined by ``"+"`` for chains.
    """

    masks: Tensor
    quality: Tensor
    category: Tensor
    name: list[str]

    @property
    def category_names(self) -> list[str]:
        """Category name per sample."""
        return [CATEGORIES[i] for i in self.category.tolist()]


def _check_registry(registry: Mapping[str, CorruptionSpec], arg: str) -> Mapping[str, CorruptionSpec]:
    if not isinstance(registry, Mapping):
        raise TypeError(
            f"`{arg}` must be a mapping of name -> CorruptionSpec, got {type(registry).__name__}."
        )
    for key, spec in registry.items():
        if not isinstance(key, str) or not isinstance(spec, CorruptionSpec):
            raise TypeError(
                f"`{arg}` must map names (str) to CorruptionSpec, got {key!r}: {type(spec).__name__}. "
                "Wrap your function as CorruptionSpec(name, fn, weight, family, params)."
            )
    return MappingProxyType(dict(registry))


def check_category_probs(probs: Mapping[str, float] | None, *, name: str = "probs") -> dict[str, float]:
    """Validate category probabilities and return them for every category of :data:`CATEGORIES`, in order.

    Keys must be category names (missing ones count as 0); values finite and >= 0, summing to 1 within 1e-6.

    Args:
        probs: category -> probability, or ``None`` for :data:`CATEGORY_PROBS`.
        name: the argument name used in error messages (e.g. ``"category_probs"`` in a config).

    Raises:
        TypeError: ``probs`` is not a mapping.
        ValueError: an unknown category, a negative or non-finite value, or a sum other than 1; the message
            names ``name``, the values received and the default.

    Example:
        >>> check_category_probs({"identity": 0.5, "heavy": 0.5})["heavy"]
        0.5
        >>> check_category_probs({"identity": 0.5}, name="category_probs")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: `category_probs` must sum to 1 (within 1e-6), got 0.50000000 from ...
    """
    probs = CATEGORY_PROBS if probs is None else probs
    if not isinstance(probs, Mapping):
        raise TypeError(f"`{name}` must be a mapping category -> probability, got {type(probs).__name__}.")
    unknown = sorted(set(probs) - set(CATEGORIES))
    if unknown:
        raise ValueError(
            f"`{name}` has unknown categories {unknown}; valid categories are {list(CATEGORIES)}."
        )
    values = []
    for cat in CATEGORIES:
        p = probs.get(cat, 0.0)
        values.append(check_number(p, f"{name}[{cat!r}]", low=0, finite=True))
    if abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(
            f"`{name}` must sum to 1 (within 1e-6), got {sum(values):.8f} from "
            f"{dict(zip(CATEGORIES, values, strict=True))}. Default: {dict(CATEGORY_PROBS)}."
        )
    return dict(zip(CATEGORIES, values, strict=True))


class CorruptionSampler:
    """Draw one corruption category per mask and return corrupted masks with their Dice targets.

    Args:
        probs: probability per category (keys from :data:`CATEGORIES`; missing keys count as 0). Must be
            non-negative and sum to 1 (within 1e-6). Default :data:`CATEGORY_PROBS`.
        main: main registry for ``single`` and ``chained`` draws. Default :data:`~.registry.MAIN`. Add your
        own
            corruption with ``main=dict(MAIN, my_name=CorruptionSpec(...))``.
        heavy: registry of the ``heavy`` category. Default :data:`~.registry.HEAVY`.
        catastrophic: registry of the ``catastrophic`` category. Default :data:`~.registry.CATASTROPHIC`.
        blob: registry of the ``blob`` category. Default :data:`~.registry.BLOB`.
        multiclass: corruptions added to ``main`` when masks have several foreground channels (``C > 1``).
            Default :data:`~.registry.MULTICLASS` (``class_swap``); pass ``{}`` to disable.
        chain_length: inclusive range of the number of distinct corruptions in a chain. Chains skip specs of
            family ``"blob"`` and every name in ``blob``.
        cross_image_fraction: ``cross_image`` picks uniformly among this fraction of the pool closest in
            foreground area (at least one mask).
        backend: where built-in corruptions do their pixel work (:data:`~.corruptions.BACKENDS`):
            ``"auto"`` (OpenCV / NumPy per mask for CPU masks, batched torch otherwise), ``"torch"`` (the
            batched path, also on CPU) or ``"opencv"`` (CPU masks only). Both paths make the same draws.

    Registry keys are the reported names. Built-in corruptions run on ``uint8`` masks internally; custom
    functions receive masks in the dtype of the input masks. The work runs under ``torch.inference_mode``
    (cheaper small tensor ops); the returned tensors are ordinary tensors.

    Example:
        >>> g = torch.Generator().manual_seed(6)
        >>> masks = torch.zeros(4, 1, 32, 32)
        >>> masks[:, :, 8:24, 8:24] = 1
        >>> result = CorruptionSampler()(masks, generator=g)
        >>> result.masks.shape, result.quality.shape
        (torch.Size([4, 1, 32, 32]), torch.Size([4, 1]))
        >>> result.category_names
        ['chained', 'catastrophic', 'heavy', 'single']
        >>> result.name
        ['erosion_9+holes_islands+holes_small', 'full', 'holes_heavy', 'jagged_5']
        >>> result.quality.squeeze(1)
        tensor([0.8449, 0.4000, 0.8918, 0.8648])
    """

    def __init__(
        self,
        probs: Mapping[str, float] | None = None,
        *,
        main: Mapping[str, CorruptionSpec] | None = None,
        heavy: Mapping[str, CorruptionSpec] | None = None,
        catastrophic: Mapping[str, CorruptionSpec] | None = None,
        blob: Mapping[str, CorruptionSpec] | None = None,
        multiclass: Mapping[str, CorruptionSpec] | None = None,
        chain_length: tuple[int, int] = (2, 3),
        cross_image_fraction: float = 0.2,
        backend: Backend = "auto",
    ) -> None:
        self.probs: Mapping[str, float] = MappingProxyType(check_category_probs(probs))

        self.main = _check_registry(MAIN if main is None else main, "main")
        self.heavy = _check_registry(HEAVY if heavy is None else heavy, "heavy")
        self.catastrophic = _check_registry(
            CATASTROPHIC if catastrophic is None else catastrophic, "catastrophic"
        )
        self.blob = _check_registry(BLOB if blob is None else blob, "blob")
        self.multiclass = _check_registry(MULTICLASS if multiclass is None else multiclass, "multiclass")

        try:
            lo, hi = (int(v) for v in chain_length)
        except (TypeError, ValueError):
            raise ValueError(
                f"`chain_length` must be a pair (min, max) of integers, got {chain_length!r}."
            ) from None
        if not 1 <= lo <= hi:
            raise ValueError(f"`chain_length` must satisfy 1 <= min <= max, got {chain_length!r}.")
        self.chain_length = (lo, hi)
        self.cross_image_fraction = check_fraction(cross_image_fraction, "cross_image_fraction")
        self.backend: Backend = check_backend(backend)

        for cat, registry, arg in (
            ("single", self.main, "main"),
            ("heavy", self.heavy, "heavy"),
            ("catastrophic", self.catastrophic, "catastrophic"),
            ("blob", self.blob, "blob"),
        ):
            if self.probs[cat] > 0 and not any(spec.weight > 0 for spec in registry.values()):
                raise ValueError(
                    f"Category {cat!r} has probability {self.probs[cat]} but `{arg}` has no corruption with "
                    "positive weight. Add corruptions or set its probability to 0."
                )
        self._setups: dict[tuple, Any] = {}  # draw tables per batch composition (see _setup), probs
        # (kernel, params) of every built-in corruption that can share a call, computed once
        self._plans = {
            id(spec): self._plan(spec)
            for registry in (self.main, self.heavy, self.catastrophic, self.blob, self.multiclass)
            for spec in registry.values()
        }
        if self.probs["chained"] > 0 and len(self._chain_names(self.main)) < lo:
            raise ValueError(
                f"`chained` needs at least {lo} main corruptions outside the blob family with positive "
                "weight, "
                f"found {self._chain_names(self.main)}. Lower `chain_length` or set probs['chained'] = 0."
            )

    @staticmethod
    def _plan(spec: CorruptionSpec) -> tuple | None:
        """``(kernel, params)`` for a built-in corruption that can share a call with others, else ``None``."""
        return plan_of(spec.fn, spec.params)

    def _chain_names(self, main: Mapping[str, CorruptionSpec]) -> list[str]:
        return [
            name
            for name, spec in main.items()
            if spec.weight > 0 and spec.family != "blob" and name not in self.blob
        ]

    def _setup(self, multiclass: bool, device: torch.device, present: tuple[bool, ...]) -> tuple:
        """Draw tables for a batch whose categories of :data:`_DRAWN` are ``present`` (cached per key).

        Returns ``(ops, registries, chain, plans, keys)``: ``ops`` lists ``(name, spec)`` in order of first
        use (registry order, categories in the order of :data:`_DRAWN`), which fixes the op ids and hence the
        call schedule; ``registries`` holds ``(category, weights, op ids)`` per present registry category;
        ``chain`` is ``(weights, op ids, min length, max length)`` or ``None``; ``plans`` and ``keys`` give
        each op's shared-call plan and group key.
        """
        main = dict(self.main, **self.multiclass) if multiclass else dict(self.main)
        ops: list[tuple[str, CorruptionSpec]] = []
        op_ids: dict[tuple[str, int], int] = {}

        def op_id(name: str, spec: CorruptionSpec) -> int:
            key = (name, id(spec))
            if key not in op_ids:
                op_ids[key] = len(ops)
                ops.append((name, spec))
            return op_ids[key]

        registries = []
        for cat, registry, used in zip(
            _DRAWN[:4], (main, self.heavy, self.catastrophic, self.blob), present[:4], strict=True
        ):
            if used:
                names = list(registry)
                weights = torch.tensor([registry[n].weight for n in names], device=device)
                registries.append((cat, weights, [op_id(n, registry[n]) for n in names]))
        chain = None
        if present[4]:
            names = self._chain_names(main)
            lo, hi = self.chain_length
            hi = min(hi, len(names))
            lo = min(lo, hi)
            weights = torch.tensor([main[n].weight for n in names], device=device)
            chain = (weights, [op_id(n, main[n]) for n in names], lo, hi)
        plans = [self._plans[id(spec)] for _, spec in ops]
        keys = [(plan[0].__name__, -1) if plan is not None else ("", op) for op, plan in enumerate(plans)]
        return ops, registries, chain, plans, keys

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(probs={dict(self.probs)}, main={len(self.main)}, "
            f"heavy={len(self.heavy)}, catastrophic={len(self.catastrophic)}, blob={len(self.blob)}, "
            f"multiclass={len(self.multiclass)}, "
            f"chain_length={self.chain_length}, cross_image_fraction={self.cross_image_fraction}, "
            f"backend={self.backend!r})"
        )

    def __call__(
        self, masks: Tensor, *, generator: torch.Generator | None = None, pool: Tensor | None = None
    ) -> CorruptionResult:
        """Corrupt ``masks`` and compute their Dice targets.

        Args:
            masks: ground-truth foreground masks ``(B, C, H, W)`` (float ``{0, 1}``, bool or uint8).
            generator: source of randomness (on the masks' device); the same seed gives the same result.
            pool: ground-truth masks ``(P, C, H, W)`` for ``cross_image``. Default: the batch itself,
            excluding
                the sample's own mask. With fewer than two candidates, ``cross_image`` falls back to
                ``single``.

        Returns:
            A :class:`CorruptionResult`.
        """
        check_masks(masks)
        if pool is not None:
            check_masks(pool, "pool")
            if pool.shape[1:] != masks.shape[1:]:
                raise ValueError(
                    f"`pool` must be masks (P, C, H, W) with the same (C, H, W) as `masks` "
                    f"{tuple(masks.shape[1:])}, got {tuple(pool.shape)}."
                )
        b, c = masks.shape[:2]
        if b == 0:
            empty_quality = torch.ones(0, c, device=masks.device)
            return CorruptionResult(masks.clone(), empty_quality, torch.zeros(0, dtype=torch.long), [])
        with torch.inference_mode():  # no autograd bookkeeping: many small ops get cheaper
            out, quality, category, names = self._corrupt(masks, generator, pool)
        return CorruptionResult(finish(out, masks.dtype), quality.clone(), category.clone(), names)

    def _corrupt(
        self, masks: Tensor, generator: torch.Generator | None, pool: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor, list[str]]:
        x = to_u8(masks)
        b, c, h, w = x.shape
        device = x.device
        probs = self._setups.get(("probs", device))
        if probs is None:
            probs = self._setups[("probs", device)] = torch.tensor(
                [self.probs[cat] for cat in CATEGORIES], device=device
            )
        category = torch.multinomial(probs, b, replacement=True, generator=generator)

        # cross-image: the ground truth of an area-similar pool mask
        cur = x.clone()  # the candidates, updated in place group by group
        cur_np = cur.numpy() if cur.device.type == "cpu" else None  # shares memory with `cur`
        cross_idx = (category == _CROSS).nonzero().flatten()
        pool_u8 = x if pool is None else to_u8(pool)
        n_pool = pool_u8.shape[0]
        if len(cross_idx) > 0 and (n_pool < 2 or (pool is None and b < 2)):
            category[cross_idx] = _SINGLE
            cross_idx = cross_idx[:0]
        x_area = _area(x)  # (B, C): for the pool distance and the Dice denominator
        if len(cross_idx) > 0:
            own_area = x_area.sum(1)
            pool_area = own_area if pool is None else _area(pool_u8).sum(1)
            own_area = own_area.index_select(0, cross_idx)
            distance = (pool_area[None, :] - own_area[:, None]).abs()
            available = n_pool
            if pool is None:
                distance[torch.arange(len(cross_idx), device=device), cross_idx] = math.inf
                available -= 1
            k = max(1, math.ceil(self.cross_image_fraction * available))
            nearest = distance.topk(k, dim=1, largest=False).indices  # (n_cross, k)
            pick = torch.randint(0, k, (len(cross_idx), 1), generator=generator, device=device)
            chosen = nearest.gather(1, pick).flatten()
            if cur_np is not None:  # NumPy's row gather / scatter are ~10x cheaper than torch's on CPU
                cur_np[cross_idx.numpy()] = pool_u8.numpy()[chosen.numpy()]
            else:
                cur[cross_idx] = pool_u8[chosen]

        # corruption draws: per sample, the sequence of op ids into `ops` (plain lists: cheaper than tensor
        # indexing for a few dozen samples)
        categories = category.tolist()
        present = tuple(cat in categories for cat in _DRAWN)
        setup = self._setups.get((c > 1, device, present))
        if setup is None:
            setup = self._setups[(c > 1, device, present)] = self._setup(c > 1, device, present)
        ops, registries, chain, plans, keys = setup
        sequences: list[list[int]] = [[] for _ in range(b)]
        for cat, weights, ids in registries:
            rows = [i for i, c in enumerate(categories) if c == cat]
            drawn = torch.multinomial(weights, len(rows), replacement=True, generator=generator).tolist()
            for i, d in zip(rows, drawn, strict=True):
                sequences[i] = [ids[d]]
        if chain is not None:
            rows = [i for i, c in enumerate(categories) if c == _CHAINED]
            weights, ids, lo, hi = chain
            lengths = torch.randint(lo, hi + 1, (len(rows),), generator=generator, device=device).tolist()
            drawn = torch.multinomial(
                weights.expand(len(rows), -1), hi, replacement=False, generator=generator
            ).tolist()
            for i, length, d in zip(rows, lengths, drawn, strict=True):
                sequences[i] = [ids[j] for j in d[:length]]

        # apply: one call per group of samples whose next corruption shares a kernel (built-in corruptions
        # with the same implementation run together with per-sample parameters) or is the same corruption
        for group in _schedule(sequences, keys):
            group_rows = [i for i, _ in group]
            if cur_np is not None:  # NumPy's row gather / scatter are ~10x cheaper than torch's on CPU
                sub = torch.from_numpy(cur_np[group_rows])
            else:
                rows = torch.tensor(group_rows, device=device)
                sub = cur.index_select(0, rows)
            plan = plans[group[0][1]]
            if plan is not None:
                params = {name: [plans[op][1][name] for _, op in group] for name in plan[1]}
                out = run_u8(sub, plan[0], params, generator, self.backend)
            else:
                spec = ops[group[0][1]][1]
                if is_builtin(spec.fn):
                    out = spec(sub, generator=generator, backend=self.backend)
                else:  # custom corruption: hand it the caller's dtype
                    out = to_u8(spec(from_u8(sub, masks.dtype), generator=generator))
            if cur_np is not None:
                cur_np[group_rows] = out.numpy()
            else:
                cur.index_copy_(0, rows, out)

        names_out = []
        for cat, seq in zip(categories, sequences, strict=True):
            if cat == _IDENTITY:
                names_out.append("identity")
            elif cat == _CROSS:
                names_out.append("cross_image")
            else:
                names_out.append("+".join(ops[op][0] for op in seq))
        # float input: `x` is our private copy (not a view of `masks`), so the Dice may reuse its memory
        quality = _dice_u8(cur, x, overwrite_truth=masks.is_floating_point(), truth_area=x_area)
        return cur, quality, category, names_out

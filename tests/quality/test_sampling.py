"""Tests for qg_lightning.quality.sampling (CorruptionSampler, dice_target)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from qg_lightning.quality import (
    BLOB,
    CATASTROPHIC,
    CATEGORIES,
    CATEGORY_PROBS,
    HEAVY,
    MAIN,
    CorruptionResult,
    CorruptionSampler,
    CorruptionSpec,
    dice_target,
)


def _disks(radii: list[float], size: int = 32) -> torch.Tensor:
    """(B, 1, S, S) disks with the given radii (pixels), centred."""
    out = np.zeros((len(radii), size, size), np.uint8)
    for i, r in enumerate(radii):
        cv2.circle(out[i], (size // 2, size // 2), int(r), 1, -1)
    return torch.from_numpy(out).float().unsqueeze(1)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------------------
# dice_target
# ----------------------------------------------------------------------------------------------------------


def test_dice_target_rules() -> None:
    truth = torch.zeros(4, 2, 8, 8)
    truth[0, 0, :4] = 1  # 32 px
    truth[1, 1, :2] = 1
    candidate = torch.zeros(4, 2, 8, 8)
    candidate[0, 0, :2] = 1  # 16 px inside the truth
    candidate[2, 0, :1] = 1  # predicted where the truth is empty
    dice = dice_target(candidate, truth)
    assert dice.shape == (4, 2) and dice.dtype == torch.float32
    assert dice[0, 0].item() == pytest.approx(2 * 16 / 48)
    assert dice[0, 1].item() == 1.0  # empty vs empty
    assert dice[1, 1].item() == 0.0  # empty candidate vs non-empty truth
    assert dice[2, 0].item() == 0.0  # non-empty candidate vs empty truth
    assert torch.equal(dice[3], torch.ones(2))


def test_dice_target_matches_a_reference() -> None:
    g = _gen()
    a = (torch.rand(3, 1, 24, 40, generator=g) > 0.5).float()
    b = (torch.rand(3, 1, 24, 40, generator=g) > 0.5).float()
    expected = 2 * (a * b).sum((2, 3)) / (a.sum((2, 3)) + b.sum((2, 3)))
    assert torch.allclose(dice_target(a, b), expected)
    assert torch.allclose(dice_target(a.bool(), b.to(torch.uint8)), expected)


def test_dice_target_validates() -> None:
    with pytest.raises(ValueError, match="same shape"):
        dice_target(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match="candidate"):
        dice_target(torch.zeros(4, 4), torch.zeros(4, 4))


# ----------------------------------------------------------------------------------------------------------
# constructor
# ----------------------------------------------------------------------------------------------------------


def test_default_probabilities() -> None:
    assert CATEGORIES == ("identity", "single", "chained", "cross_image", "heavy", "catastrophic", "blob")
    assert dict(CATEGORY_PROBS) == {
        "identity": 0.20, "single": 0.28, "chained": 0.18, "cross_image": 0.10, "heavy": 0.12,
        "catastrophic": 0.05, "blob": 0.07,
    }  # fmt: skip
    assert math.isclose(sum(CATEGORY_PROBS.values()), 1.0)
    with pytest.raises(TypeError):
        CATEGORY_PROBS["identity"] = 1.0  # type: ignore[index]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"probs": {"identity": 1.2, "single": -0.2}}, "probs"),
        ({"probs": {"identity": 0.5}}, "sum to 1"),
        ({"probs": {"identity": 0.5, "bogus": 0.5}}, "bogus"),
        ({"probs": {"identity": 0.5, "heavy": 0.5}, "heavy": {}}, "heavy"),
        ({"chain_length": (3, 2)}, "chain_length"),
        ({"chain_length": (0, 2)}, "chain_length"),
        ({"cross_image_fraction": 0.0}, "cross_image_fraction"),
        ({"main": {"e": MAIN["erosion_5"], "c": MAIN["circle"]}}, "chained"),
        ({"backend": "cuda"}, "backend"),
    ],
)
def test_constructor_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CorruptionSampler(**kwargs)


def test_constructor_type_errors() -> None:
    with pytest.raises(TypeError, match="main"):
        CorruptionSampler(main={"x": lambda m: m})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="probs"):
        CorruptionSampler(probs=[0.2, 0.8])  # type: ignore[arg-type]
    assert "CorruptionSampler(" in repr(CorruptionSampler())


# ----------------------------------------------------------------------------------------------------------
# outputs
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bool, torch.uint8])
def test_outputs(dtype: torch.dtype) -> None:
    masks = _disks([4, 6, 8, 10, 12, 5, 7, 9] * 2).to(dtype)
    before = masks.clone()
    result = CorruptionSampler()(masks, generator=_gen())
    assert isinstance(result, CorruptionResult)
    assert result.masks.shape == masks.shape and result.masks.dtype == dtype
    assert bool(((result.masks == 0) | (result.masks == 1)).all())
    assert result.quality.shape == (16, 1) and result.quality.dtype == torch.float32
    assert bool(((result.quality >= 0) & (result.quality <= 1)).all())
    assert result.category.shape == (16,) and result.category.dtype == torch.long
    assert len(result.name) == 16 and len(result.category_names) == 16
    assert torch.equal(masks, before)  # the input is never modified
    assert torch.allclose(result.quality, dice_target(result.masks, masks))
    assert not result.masks.is_inference() and not result.quality.is_inference()
    result.quality.mul_(1)  # ordinary tensors: in-place updates are allowed


def test_names_follow_categories() -> None:
    masks = _disks(list(range(3, 15)) * 10)
    result = CorruptionSampler()(masks, generator=_gen(1))
    chain_ok = {n for n, s in MAIN.items() if s.family != "blob" and n not in BLOB}
    seen = set()
    for i, (cat, name) in enumerate(zip(result.category_names, result.name, strict=True)):
        seen.add(cat)
        if cat == "identity":
            assert name == "identity"
            assert torch.equal(result.masks[i], masks[i]) and result.quality[i].item() == 1.0
        elif cat == "cross_image":
            assert name == "cross_image"
        elif cat == "single":
            assert name in MAIN
        elif cat == "chained":
            parts = name.split("+")
            assert 2 <= len(parts) <= 3 and len(set(parts)) == len(parts)
            assert set(parts) <= chain_ok
        elif cat == "heavy":
            assert name in HEAVY
        elif cat == "catastrophic":
            assert name in CATASTROPHIC
        else:
            assert cat == "blob" and name in BLOB
    assert seen == set(CATEGORIES)


def test_seeded() -> None:
    masks = _disks([5, 7, 9, 11] * 4)
    sampler = CorruptionSampler()
    a, b = sampler(masks, generator=_gen(3)), sampler(masks, generator=_gen(3))
    assert torch.equal(a.masks, b.masks) and torch.equal(a.quality, b.quality) and a.name == b.name
    c = sampler(masks, generator=_gen(4))
    assert a.name != c.name or not torch.equal(a.masks, c.masks)


def test_cpu_path_matches_torch_path() -> None:
    """CPU masks take the OpenCV / NumPy path; the batched torch path (CUDA's) makes the same draws."""
    masks = _disks([5, 7, 9, 11, 6, 8, 10, 12] * 3, size=48)
    cpu = CorruptionSampler()(masks, generator=_gen(11))
    reference = CorruptionSampler(backend="torch")(masks, generator=_gen(11))
    assert cpu.name == reference.name and torch.equal(cpu.category, reference.category)
    assert float((cpu.quality - reference.quality).abs().max()) <= 0.02
    assert float((cpu.masks != reference.masks).float().mean()) <= 0.01


def test_category_frequencies() -> None:
    """Category draws match the probabilities within 4 standard deviations."""
    n = 4000
    masks = torch.zeros(n, 1, 8, 8)
    masks[:, :, 2:6, 2:6] = 1
    result = CorruptionSampler()(masks, generator=_gen(7))
    counts = torch.bincount(result.category, minlength=len(CATEGORIES)).float()
    for i, cat in enumerate(CATEGORIES):
        p = CATEGORY_PROBS[cat]
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(counts[i].item() - n * p) <= 4 * sigma, (cat, counts[i].item(), n * p)


def test_single_category_and_custom_probabilities() -> None:
    masks = _disks([5, 8, 11, 6])
    result = CorruptionSampler({"identity": 1.0})(masks, generator=_gen())
    assert torch.equal(result.masks, masks) and bool((result.quality == 1).all())
    result = CorruptionSampler({"catastrophic": 1.0})(masks, generator=_gen())
    assert set(result.name) <= set(CATASTROPHIC)


def test_chain_length_is_respected() -> None:
    masks = _disks([5, 8, 11, 6] * 8)
    result = CorruptionSampler({"chained": 1.0}, chain_length=(3, 3))(masks, generator=_gen())
    assert all(len(name.split("+")) == 3 for name in result.name)


# ----------------------------------------------------------------------------------------------------------
# cross-image
# ----------------------------------------------------------------------------------------------------------


def test_cross_image_picks_area_similar_masks() -> None:
    masks = _disks(list(range(2, 22)), size=48)  # strictly increasing areas
    areas = masks.sum((1, 2, 3))
    result = CorruptionSampler({"cross_image": 1.0})(masks, generator=_gen())
    assert set(result.category_names) == {"cross_image"}
    k = math.ceil(0.2 * 19)  # among the 20 % closest of the other 19 masks
    for i in range(20):
        matches = [j for j in range(20) if torch.equal(result.masks[i], masks[j])]
        assert matches and i not in matches, "must be the ground truth of another sample"
        distance = (areas - areas[i]).abs()
        distance[i] = math.inf
        allowed = set(distance.argsort()[:k].tolist())
        assert matches[0] in allowed, (i, matches, allowed)


def test_cross_image_with_a_pool_and_fallback() -> None:
    masks = _disks([6, 9])
    pool = _disks([3, 6, 10, 14])
    result = CorruptionSampler({"cross_image": 1.0})(masks, generator=_gen(), pool=pool)
    for i in range(2):
        assert any(torch.equal(result.masks[i], p) for p in pool)
    one = CorruptionSampler({"cross_image": 1.0})(masks[:1], generator=_gen())  # nothing else in the batch
    assert one.category_names == ["single"] and one.name[0] in MAIN
    tiny_pool = CorruptionSampler({"cross_image": 1.0})(masks, generator=_gen(), pool=pool[:1])
    assert tiny_pool.category_names == ["single", "single"]
    with pytest.raises(ValueError, match="pool"):
        CorruptionSampler()(masks, pool=torch.zeros(2, 1, 8, 8))


# ----------------------------------------------------------------------------------------------------------
# multi-class, custom registries, edge cases
# ----------------------------------------------------------------------------------------------------------


def test_multiclass_masks() -> None:
    a = _disks([8] * 12)[:, 0]
    b = torch.zeros_like(a)
    b[:, :, 24:] = 1
    b = b * (1 - a)
    masks = torch.stack([a, b], 1)  # (12, 2, 32, 32), exclusive
    sampler = CorruptionSampler()
    result = sampler(masks, generator=_gen(2))
    assert result.masks.shape == masks.shape and result.quality.shape == (12, 2)
    assert bool((result.masks.sum(1) <= 1).all())
    swap = {"class_swap": sampler.multiclass["class_swap"]}
    swaps = CorruptionSampler({"single": 1.0}, main=swap, multiclass={})
    swapped = swaps(masks, generator=_gen())
    assert set(swapped.name) == {"class_swap"}
    assert torch.equal(swapped.masks.sum(1), masks.sum(1))


def test_class_swap_joins_main_only_for_multiclass() -> None:
    binary = _disks([6] * 200, size=16)
    result = CorruptionSampler({"single": 1.0})(binary, generator=_gen())
    assert "class_swap" not in result.name


def test_custom_corruption() -> None:
    seen = {}

    def thicken(masks: torch.Tensor, *, generator: torch.Generator | None = None, amount: int = 1):
        seen["dtype"] = masks.dtype
        return torch.nn.functional.max_pool2d(masks, 2 * amount + 1, 1, amount)

    main = dict(MAIN, thicken=CorruptionSpec("thicken", thicken, 1000.0, "custom", {"amount": 2}))
    before = dict(MAIN)
    masks = _disks([5, 8, 11, 6])
    result = CorruptionSampler({"single": 1.0}, main=main)(masks, generator=_gen())
    assert "thicken" in result.name and seen["dtype"] == torch.float32
    i = result.name.index("thicken")
    assert torch.equal(result.masks[i], thicken(masks[i : i + 1], amount=2)[0])
    assert dict(MAIN) == before


def test_empty_masks_and_empty_batch() -> None:
    masks = torch.zeros(64, 1, 16, 16)
    result = CorruptionSampler()(masks, generator=_gen())
    assert result.masks.shape == masks.shape
    # an empty truth scores 1 while the candidate stays empty, else 0
    assert bool(((result.quality == 0) | (result.quality == 1)).all())
    none = CorruptionSampler()(torch.zeros(0, 1, 8, 8), generator=_gen())
    assert none.masks.shape == (0, 1, 8, 8) and none.quality.shape == (0, 1) and none.name == []

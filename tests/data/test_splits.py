"""Tests for qg_lightning.data.splits: reproducible seeded splits, labeled subsets and split files."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from qg_lightning.data.splits import Split, load_split, make_split

IDS = [f"case{i:03d}" for i in range(40)]


def test_same_seed_same_split_any_listing_order() -> None:
    shuffled = IDS[:]
    random.Random(7).shuffle(shuffled)
    a = make_split(IDS, seed=3, n_labeled=5)
    b = make_split(shuffled, seed=3, n_labeled=5)
    c = make_split(tuple(reversed(IDS)), seed=3, n_labeled=5)
    assert a == b == c


def test_different_seed_different_split() -> None:
    a = make_split(IDS, seed=0)
    b = make_split(IDS, seed=1)
    assert a.val != b.val and a.test != b.test


def test_pinned_split_is_stable_across_machines() -> None:
    """The split is a function of (sorted ids, seed) only; pin it so a numpy/platform change is noticed."""
    split = make_split([f"id{i:02d}" for i in range(10)], seed=0, val_fraction=0.2, test_fraction=0.2)
    assert (split.val, split.test) == (PINNED_VAL, PINNED_TEST)


PINNED_VAL = ["id04", "id06"]
PINNED_TEST = ["id02", "id07"]


def test_partition_sizes_and_disjointness() -> None:
    split = make_split(IDS, seed=0, val_fraction=0.15, test_fraction=0.25)
    assert (len(split.train), len(split.val), len(split.test)) == (24, 6, 10)
    parts = [set(split.train), set(split.val), set(split.test)]
    assert set().union(*parts) == set(IDS) and sum(map(len, parts)) == len(IDS)
    assert split.labeled == split.train and split.unlabeled == []
    assert all(getattr(split, key) == sorted(getattr(split, key)) for key in ("train", "val", "test"))


def test_zero_fractions_and_minimum_one() -> None:
    split = make_split(IDS[:5], seed=0, val_fraction=0.05, test_fraction=0.0)
    assert (len(split.train), len(split.val), len(split.test)) == (4, 1, 0)


def test_n_labeled_and_labeled_fraction() -> None:
    split = make_split(IDS, seed=0, n_labeled=7)
    assert len(split.labeled) == 7 and set(split.labeled) <= set(split.train)
    assert sorted(split.labeled + split.unlabeled) == split.train
    assert not set(split.labeled) & set(split.unlabeled)
    frac = make_split(IDS, seed=0, labeled_fraction=0.25)
    assert len(frac.labeled) == round(0.25 * len(frac.train))


def test_label_budget_keeps_val_test_and_nests() -> None:
    small = make_split(IDS, seed=5, n_labeled=4)
    large = make_split(IDS, seed=5, n_labeled=12)
    full = make_split(IDS, seed=5)
    assert small.val == large.val == full.val and small.test == large.test == full.test
    assert set(small.labeled) <= set(large.labeled)


def test_n_labeled_too_large_names_both_numbers() -> None:
    with pytest.raises(ValueError, match=r"n_labeled.*=29.*28 ids"):
        make_split(IDS, seed=0, n_labeled=29)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"val_fraction": -0.1}, "val_fraction"),
        ({"test_fraction": 1.2}, "test_fraction"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "val_fraction"),
        ({"labeled_fraction": 0.0}, "labeled_fraction"),
        ({"labeled_fraction": 1.5}, "labeled_fraction"),
        ({"n_labeled": 0}, "n_labeled"),
        ({"n_labeled": 3, "labeled_fraction": 0.5}, "labeled_fraction"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        make_split(IDS, seed=0, **kwargs)


def test_duplicates_and_too_few_ids() -> None:
    with pytest.raises(ValueError, match="duplicates.*'a'"):
        make_split(["a", "a", "b"], seed=0)
    with pytest.raises(ValueError, match="Too few ids"):
        make_split(["a", "b"], seed=0)


def test_round_trip_through_json(tmp_path: Path) -> None:
    split = make_split(IDS, seed=1, n_labeled=6)
    path = split.save(tmp_path / "sub" / "split.json")
    assert json.loads(path.read_text()) == split.to_dict()
    assert Split.from_dict(split.to_dict()) == split
    assert load_split(path, available=IDS) == split


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "split.json"
    path.write_text(json.dumps(data))
    return path


def test_split_file_overlapping_ids_are_listed(tmp_path: Path) -> None:
    path = _write(tmp_path, {"train": ["a", "b", "c"], "val": ["c", "d"], "test": ["d", "e"]})
    with pytest.raises(ValueError, match=r"split\.json.*train/val: 'c'.*val/test: 'd'"):
        load_split(path)


def test_split_file_unknown_ids_are_listed(tmp_path: Path) -> None:
    path = _write(tmp_path, {"train": ["a", "ghost1"], "val": ["b"], "test": ["ghost2"]})
    with pytest.raises(ValueError, match=r"2 id\(s\) are not in the dataset folder: 'ghost1', 'ghost2'"):
        load_split(path, available=["a", "b"])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"train": ["a"], "val": ["b"], "labeled": ["z"]}, "subset of 'train'.*'z'"),
        ({"train": ["a"], "validation": ["b"]}, "unknown key.*validation"),
        ({"train": ["a"]}, "missing key.*val"),
        ({"train": "a", "val": ["b"]}, "'train' must be a list"),
        ({"train": ["a", "b"], "val": ["c"], "labeled": ["a"], "unlabeled": ["c"]}, "'unlabeled' must be"),
        (["a", "b"], "JSON object"),
    ],
)
def test_split_file_content_errors(tmp_path: Path, data: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_split(_write(tmp_path, data))


def test_split_file_missing_or_invalid(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_split(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_split(tmp_path / "bad.json")


def test_split_file_labeled_and_override(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _write(tmp_path, {"train": ["a", "b", "c", "d"], "val": ["e"], "test": [], "labeled": ["a"]})
    split = load_split(path)
    assert split.labeled == ["a"] and split.unlabeled == ["b", "c", "d"]
    with caplog.at_level("WARNING"):
        over = load_split(path, n_labeled=2, seed=0)
    assert len(over.labeled) == 2 and "override" in caplog.text
    with pytest.raises(ValueError, match=r"n_labeled.*=5.*4 ids"):
        load_split(path, n_labeled=5)

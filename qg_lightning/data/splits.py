"""Seeded, reproducible train / val / test splits with a labeled subset of train.

A split depends only on the *set* of ids and the seed: ids are sorted before shuffling with a local
``numpy.random.Generator``, so the result is the same on every machine and for any file-listing order.
The train / val / test partition uses its own random stream, so changing the label budget (``n_labeled`` /
``labeled_fraction``) never changes val or test, and with the same seed a smaller labeled subset is
contained in a larger one (nested label budgets).

Example:
    >>> split = make_split([f"img{i}" for i in range(10)], seed=0, n_labeled=3)
    >>> len(split.train), len(split.val), len(split.test), len(split.labeled), len(split.unlabeled)
    (6, 2, 2, 3, 3)
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qg_lightning._validation import check_fraction, check_int, check_number

__all__ = ["SPLIT_KEYS", "Split", "load_split", "make_split"]

log = logging.getLogger(__name__)

SPLIT_KEYS: tuple[str, ...] = ("train", "val", "test", "labeled", "unlabeled")
_MAX_LISTED = 12
_STREAM_PARTITION = 0
_STREAM_LABELED = 1


def _listing(ids: Iterable[str]) -> str:
    ids = sorted(ids)
    shown = ", ".join(repr(i) for i in ids[:_MAX_LISTED])
    return shown + (f", ... ({len(ids)} in total)" if len(ids) > _MAX_LISTED else "")


@dataclass
class Split:
    """Ids of each part of a dataset split (every list sorted).

    Attributes:
        train: training ids (``labeled`` + ``unlabeled``).
        val: validation ids (model selection).
        test: held-out test ids.
        labeled: the part of ``train`` whose masks are used (default: all of train).
        unlabeled: the rest of ``train``, masks hidden from training (default: train minus labeled).
    """

    train: list[str]
    val: list[str]
    test: list[str]
    labeled: list[str] | None = None
    unlabeled: list[str] | None = None

    def __post_init__(self) -> None:
        if self.labeled is None:
            self.labeled = list(self.train)
        if self.unlabeled is None:
            labeled = set(self.labeled)
            self.unlabeled = [i for i in self.train if i not in labeled]

    def to_dict(self) -> dict[str, list[str]]:
        """Plain dict with the five id lists (what :meth:`save` writes)."""
        return {key: list(getattr(self, key)) for key in SPLIT_KEYS}

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "split") -> Split:
        """Build and check a split from a dict with ``train``, ``val`` and optional ``test``, ``labeled``,
        ``unlabeled``.

        Missing ``labeled`` means all of train is labeled; missing ``unlabeled`` is train minus labeled.

        Raises:
            ValueError: unknown keys, missing ``train`` / ``val``, lists that are not id strings, ids in more
                than one of train / val / test, ``labeled`` not within train, or a wrong ``unlabeled``.

        Example:
            >>> Split.from_dict({"train": ["a", "b"], "val": ["c"], "labeled": ["b"]}).unlabeled
            ['a']
        """
        if not isinstance(data, dict):
            raise ValueError(
                f"{source}: expected a JSON object with keys {list(SPLIT_KEYS)}, got {type(data).__name__}."
            )
        unknown = sorted(set(data) - set(SPLIT_KEYS))
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; allowed keys are {list(SPLIT_KEYS)}.")
        missing = [key for key in ("train", "val") if key not in data]
        if missing:
            raise ValueError(
                f"{source}: missing key(s) {missing}; a split needs 'train' and 'val' (and usually 'test')."
            )
        lists: dict[str, list[str]] = {}
        for key in SPLIT_KEYS:
            value = data.get(key)
            if value is None:
                continue
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{source}: '{key}' must be a list of id strings, got {value!r:.80}.")
            duplicates = sorted(v for v, c in Counter(value).items() if c > 1)
            if duplicates:
                raise ValueError(f"{source}: '{key}' lists these ids more than once: {_listing(duplicates)}.")
            lists[key] = sorted(value)
        train, val, test = set(lists["train"]), set(lists["val"]), set(lists.get("test", []))
        overlaps = {
            "train/val": train & val,
            "train/test": train & test,
            "val/test": val & test,
        }
        overlaps = {pair: ids for pair, ids in overlaps.items() if ids}
        if overlaps:
            detail = "; ".join(f"{pair}: {_listing(ids)}" for pair, ids in overlaps.items())
            raise ValueError(
                f"{source}: these ids are in more than one of train/val/test ({detail}). "
                "Each id must belong to exactly one part."
            )
        labeled = set(lists["labeled"]) if "labeled" in lists else set(train)
        outside = labeled - train
        if outside:
            raise ValueError(
                f"{source}: 'labeled' must be a subset of 'train'; not in train: {_listing(outside)}."
            )
        unlabeled = train - labeled
        if "unlabeled" in lists and set(lists["unlabeled"]) != unlabeled:
            raise ValueError(
                f"{source}: 'unlabeled' must be exactly train minus labeled; differs by "
                f"{_listing(set(lists['unlabeled']) ^ unlabeled)}. Remove 'unlabeled' to derive it."
            )
        return cls(
            train=sorted(train),
            val=sorted(val),
            test=sorted(test),
            labeled=sorted(labeled),
            unlabeled=sorted(unlabeled),
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the split as JSON (atomically: temp file then rename) and return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        os.replace(tmp, path)
        return path

    def check_ids(self, available: Iterable[str], *, source: str = "split") -> None:
        """Raise ``ValueError`` listing ids of the split that are not in ``available`` (e.g. the folder)."""
        available = set(available)
        unknown = set(self.train) | set(self.val) | set(self.test)
        unknown -= available
        if unknown:
            raise ValueError(
                f"{source}: {len(unknown)} id(s) are not in the dataset folder: {_listing(unknown)}. "
                "Fix the split file or add the missing image/mask pairs."
            )


def _check_labeled_args(n_labeled: int | None, labeled_fraction: float | None) -> None:
    if n_labeled is not None and labeled_fraction is not None:
        raise ValueError(
            f"Set only one of `n_labeled` ({n_labeled!r}) and `labeled_fraction` ({labeled_fraction!r}); "
            "leave both unset to label all of train."
        )
    check_int(n_labeled, "n_labeled", minimum=1, optional=True)
    check_fraction(labeled_fraction, "labeled_fraction", optional=True)


def _labeled_subset(
    train: Sequence[str], *, seed: int, n_labeled: int | None, labeled_fraction: float | None
) -> list[str]:
    """Seeded labeled subset of ``train`` (nested: the first n of one fixed permutation)."""
    train = sorted(train)
    if n_labeled is None and labeled_fraction is None:
        return train
    n = n_labeled if n_labeled is not None else max(1, int(round(labeled_fraction * len(train))))
    if n > len(train):
        raise ValueError(
            f"`n_labeled`={n} is larger than the training split ({len(train)} ids). "
            f"Use n_labeled <= {len(train)} or a smaller val/test fraction."
        )
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, _STREAM_LABELED])
    order = rng.permutation(len(train))
    return sorted(train[i] for i in order[:n])


def make_split(
    ids: Iterable[str],
    *,
    seed: int,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    n_labeled: int | None = None,
    labeled_fraction: float | None = None,
) -> Split:
    """Seeded train / val / test split of ``ids`` and a labeled subset of train.

    Args:
        ids: dataset ids (any order; duplicates are not allowed).
        seed: split seed.
        val_fraction: fraction of ids for validation, in ``[0, 1)``; rounded, at least 1 when > 0.
        test_fraction: fraction for test, in ``[0, 1)``; ``val_fraction + test_fraction < 1``.
        n_labeled: number of labeled training ids (the rest of train is unlabeled).
        labeled_fraction: fraction of train that is labeled, in ``(0, 1]`` (not with ``n_labeled``).

    Returns:
        The :class:`Split` (every list sorted).

    Raises:
        ValueError: fractions out of range, both ``n_labeled`` and ``labeled_fraction`` set, too few ids, or
            ``n_labeled`` larger than the training split.

    Example:
        >>> a = make_split(["c", "a", "b", "d", "e", "f"], seed=1, labeled_fraction=0.5)
        >>> b = make_split(["f", "e", "d", "c", "b", "a"], seed=1, labeled_fraction=0.5)
        >>> a == b, a.val, a.test
        (True, ['e'], ['a'])
    """
    ids = [str(i) for i in ids]
    duplicates = sorted(i for i, c in Counter(ids).items() if c > 1)
    if duplicates:
        raise ValueError(f"`ids` contains duplicates: {_listing(duplicates)}.")
    val_fraction = check_number(val_fraction, "val_fraction", low=0, high=1, high_open=True)
    test_fraction = check_number(test_fraction, "test_fraction", low=0, high=1, high_open=True)
    if val_fraction + test_fraction >= 1:
        raise ValueError(
            f"`val_fraction` + `test_fraction` must be < 1 so that some ids are left for training, got "
            f"{val_fraction} + {test_fraction}."
        )
    _check_labeled_args(n_labeled, labeled_fraction)
    ordered = sorted(ids)
    n = len(ordered)
    n_val = max(1, int(round(val_fraction * n))) if val_fraction > 0 else 0
    n_test = max(1, int(round(test_fraction * n))) if test_fraction > 0 else 0
    if n - n_val - n_test < 1:
        raise ValueError(
            f"Too few ids ({n}) for val_fraction={val_fraction} and test_fraction={test_fraction}: the "
            "training split would be empty. Add data or lower the fractions."
        )
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, _STREAM_PARTITION])
    order = rng.permutation(n)
    val = sorted(ordered[i] for i in order[:n_val])
    test = sorted(ordered[i] for i in order[n_val : n_val + n_test])
    train = sorted(ordered[i] for i in order[n_val + n_test :])
    labeled = _labeled_subset(train, seed=seed, n_labeled=n_labeled, labeled_fraction=labeled_fraction)
    labeled_set = set(labeled)
    return Split(
        train=train, val=val, test=test, labeled=labeled, unlabeled=[i for i in train if i not in labeled_set]
    )


def load_split(
    path: str | os.PathLike,
    *,
    available: Iterable[str] | None = None,
    seed: int = 0,
    n_labeled: int | None = None,
    labeled_fraction: float | None = None,
) -> Split:
    """Read a split JSON file, check it, and optionally draw the labeled subset.

    ``n_labeled`` / ``labeled_fraction``, when set, draw a seeded labeled subset of the file's train ids and
    override a ``labeled`` list in the file (with a warning).

    Args:
        path: JSON file ``{"train": [...], "val": [...], "test": [...], "labeled": [...]}``.
        available: ids present in the dataset folder; ids of the file missing from it are an error.
        seed: seed for the labeled subset.
        n_labeled: number of labeled training ids.
        labeled_fraction: fraction of labeled training ids.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: invalid JSON or content (see :meth:`Split.from_dict`), unknown ids, or ``n_labeled``
            too large.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     _ = Split(train=["a", "b", "c"], val=["d"], test=[]).save(Path(tmp) / "split.json")
        ...     load_split(Path(tmp) / "split.json", n_labeled=1, seed=0).labeled
        ['c']
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Split file '{path}' (argument `split_file`) does not exist.")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"Split file '{path}' is not valid JSON: {err}.") from None
    _check_labeled_args(n_labeled, labeled_fraction)
    split = Split.from_dict(data, source=f"Split file '{path}'")
    if available is not None:
        split.check_ids(available, source=f"Split file '{path}'")
        unused = set(available) - set(split.train) - set(split.val) - set(split.test)
        if unused:
            log.warning(
                "%d id(s) of the dataset are in no part of split file '%s'; they are not used: %s",
                len(unused),
                path,
                _listing(unused),
            )
    if n_labeled is not None or labeled_fraction is not None:
        if isinstance(data, dict) and "labeled" in data:
            log.warning("Split file '%s' has a 'labeled' list; n_labeled/labeled_fraction override it.", path)
        labeled = _labeled_subset(
            split.train, seed=seed, n_labeled=n_labeled, labeled_fraction=labeled_fraction
        )
        labeled_set = set(labeled)
        split = Split(
            train=split.train,
            val=split.val,
            test=split.test,
            labeled=labeled,
            unlabeled=[i for i in split.train if i not in labeled_set],
        )
    return split


def assign_folds(ids: Sequence[str], *, n_folds: int, seed: int) -> dict[str, int]:
    """Seeded assignment of ``ids`` to ``n_folds`` folds of (almost) equal size, independent of input order.

    Used for cross-fitted snapshot models: a weak model trained without fold ``f`` makes honest mistakes on
    the images of fold ``f``.

    Example:
        >>> folds = assign_folds(["a", "b", "c", "d"], n_folds=2, seed=0)
        >>> sorted(folds.values())
        [0, 0, 1, 1]
    """
    check_int(n_folds, "n_folds", minimum=2)
    ordered = sorted(set(ids))
    if len(ordered) < n_folds:
        raise ValueError(f"Cannot split {len(ordered)} ids into `n_folds`={n_folds} folds; use fewer folds.")
    perm = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 7919])).permutation(
        len(ordered)
    )
    return {ordered[j]: rank % n_folds for rank, j in enumerate(perm)}

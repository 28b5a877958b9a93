"""Seeded, resumable loading: ``derive_seed``, :class:`SeededSampler`, :class:`ResumableDataLoader` and
:class:`SegmentationDataset` (the determinism :mod:`qg_lightning.data.datamodule` describes lives here)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from qg_lightning._validation import check_in_channels, check_int, is_int
from qg_lightning.data.folder import (
    read_image,
    read_mask,
)
from qg_lightning.data.transforms import (
    reseed,
    weak_strong_views,
)
from qg_lightning.masks import check_num_classes

__all__ = ["ResumableDataLoader", "SeededSampler", "SegmentationDataset", "derive_seed"]

_STREAMS = {"labeled": 1, "unlabeled": 2, "val": 3, "test": 4, "predict": 5}


def derive_seed(seed: int, *keys: int) -> int:
    """Derive an independent 63-bit seed from a base ``seed`` and integer ``keys`` (the one seeding rule).

    Uses ``numpy.random.SeedSequence`` hashing, so nearby inputs give unrelated outputs on every platform.

    Example:
        >>> derive_seed(0, 1, 2) == derive_seed(0, 1, 2), derive_seed(0, 1, 2) == derive_seed(0, 2, 1)
        (True, False)
    """
    entropy = [int(seed) & 0xFFFFFFFFFFFFFFFF, *(int(k) & 0xFFFFFFFFFFFFFFFF for k in keys)]
    return int(np.random.SeedSequence(entropy).generate_state(2, np.uint64)[0] >> np.uint64(1))


class SeededSampler(DistributedSampler):
    """Yields ``(index, sample_seed)`` pairs: a seeded permutation and one augmentation seed per sample.

    Each ``__iter__`` is one pass; its draws come from ``derive_seed(seed, stream, epoch, pass)``, where
    ``pass`` counts the passes within the current epoch. The epoch is read from ``epoch_source`` when given
    (the data module passes the trainer's ``current_epoch``: Lightning creates the first iterator of a fit,
    and of a resumed fit, *before* it calls ``set_epoch``), otherwise from :meth:`set_epoch`.

    **Several processes.** With ``num_replicas = W > 1`` every rank draws the same global permutation and
    takes its own block of each *global batch* of ``W * batch_size`` samples: at step ``t`` rank ``r`` gets
    positions ``t*W*B + r*B ... t*W*B + (r+1)*B - 1``. So the union of the ranks' batches at a step is exactly
    the batch one process would see with ``batch_size = W * B``, every sample is seen at most once per pass
    across ranks (an incomplete last global batch is dropped; a dataset smaller than one global batch is
    repeated to fill it), and all ranks get the same number of batches. It subclasses
    :class:`~torch.utils.data.DistributedSampler` so that Lightning uses it as it is instead of wrapping it.

    **Resuming mid-epoch.** :meth:`resume` makes the next iteration in a given epoch continue a given pass
    after the samples a checkpoint had already trained on (:class:`ResumableDataLoader` computes both from
    the trainer's batch count), so a resumed fit sees exactly the remaining samples with their original
    augmentation seeds.

    Args:
        num_samples: dataset length.
        seed: base seed.
        stream: integer separating independent loaders (e.g. labeled vs unlabeled).
        shuffle: permute the indices (otherwise ``0..n-1`` in order, still with per-sample seeds).
        epoch_source: optional callable returning the current epoch (or ``None``: use ``set_epoch``).
        num_replicas: number of processes ``W`` sharing the data (1 = no sharding).
        rank: this process's rank in ``0..W-1``.
        batch_size: per-process batch size ``B`` (the unit of sharding and of :meth:`resume`).

    Example:
        >>> s = SeededSampler(4, seed=0)
        >>> first, second = list(s), list(s)
        >>> sorted(i for i, _ in first), first != second
        ([0, 1, 2, 3], True)
        >>> s.set_epoch(1); s.set_epoch(0); list(s) == first
        True
        >>> one = SeededSampler(8, seed=0, batch_size=4)
        >>> ranks = [SeededSampler(8, seed=0, batch_size=2, num_replicas=2, rank=r) for r in (0, 1)]
        >>> a, b = ([i for i, _ in r] for r in ranks)
        >>> [i for i, _ in one] == a[:2] + b[:2] + a[2:] + b[2:]
        True
    """

    def __init__(
        self,
        num_samples: int,
        *,
        seed: int,
        stream: int = 0,
        shuffle: bool = True,
        epoch_source: Callable[[], int | None] | None = None,
        num_replicas: int = 1,
        rank: int = 0,
        batch_size: int = 1,
    ) -> None:
        check_int(num_samples, "num_samples", minimum=0)
        check_int(num_replicas, "num_replicas", minimum=1)
        check_int(batch_size, "batch_size", minimum=1)
        if not is_int(rank) or not 0 <= rank < num_replicas:
            raise ValueError(f"`rank` must be an integer in [0, num_replicas={num_replicas}), got {rank!r}.")
        super().__init__(range(num_samples), num_replicas=num_replicas, rank=rank, shuffle=shuffle)
        self.num_samples = num_samples
        self.seed = int(seed)
        self.stream = int(stream)
        self.shuffle = shuffle
        self.epoch_source = epoch_source
        self.batch_size = batch_size
        self.epoch = 0
        self.passes = 0
        self._passes_epoch = 0
        self._resume: tuple[int, int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch (Lightning calls this before each training epoch); a new epoch restarts passes."""
        self.epoch = int(epoch)
        if self.epoch_source is None and self.epoch != self._passes_epoch:
            self._passes_epoch, self.passes = self.epoch, 0

    def _current_epoch(self) -> int:
        epoch = self.epoch_source() if self.epoch_source is not None else None
        return self.epoch if epoch is None else int(epoch)

    def resume(self, epoch: int, passes: int, skip: int) -> None:
        """One-shot: the next iteration in ``epoch`` is pass number ``passes`` and starts ``skip`` samples in."""
        self._resume = (int(epoch), int(passes), int(skip))

    def _positions(self) -> np.ndarray:
        """Positions of this rank's samples within the global permutation of one pass."""
        n, w, b = self.num_samples, self.num_replicas, self.batch_size
        if w == 1:
            return np.arange(n)
        group = w * b
        steps = max(n // group, 1 if n else 0)
        starts = np.arange(steps)[:, None] * group + self.rank * b + np.arange(b)[None, :]
        return starts.reshape(-1) % max(n, 1)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self._current_epoch()
        if epoch != self._passes_epoch:
            self._passes_epoch, self.passes = epoch, 0
        skip = 0
        if self._resume is not None:
            resume_epoch, passes, resume_skip = self._resume
            self._resume = None
            if resume_epoch == epoch:
                self.passes, skip = passes, resume_skip
        rng = np.random.default_rng(derive_seed(self.seed, self.stream, epoch, self.passes))
        self.passes += 1
        order = rng.permutation(self.num_samples) if self.shuffle else np.arange(self.num_samples)
        seeds = rng.integers(0, 2**63 - 1, size=self.num_samples, dtype=np.int64)
        positions = self._positions()[skip:]
        return iter([(int(order[p]), int(seeds[p])) for p in positions])

    def __len__(self) -> int:
        if self.num_replicas == 1:
            return self.num_samples
        return len(self._positions())


class ResumableDataLoader(DataLoader):
    """A :class:`~torch.utils.data.DataLoader` over a :class:`SeededSampler` that Lightning can checkpoint.

    Lightning stores ``state_dict()`` of every training loader in the checkpoint and, when a fit resumes in
    the middle of an epoch, calls ``load_state_dict`` before iterating: the loader then skips the batches the
    checkpoint had already trained on (counted by the trainer, so the fetcher's prefetched batch is not
    counted). Set :attr:`progress` to a callable returning ``(epoch, batches_trained_this_epoch)``; without
    it the state is empty and a resume starts the epoch from its first batch.
    """

    progress: Callable[[], tuple[int, int] | None] | None = None

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "batches"}`` of the attached trainer, or ``{}``."""
        state = self.progress() if self.progress is not None else None
        return {} if state is None else {"epoch": int(state[0]), "batches": int(state[1])}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Skip the already-trained batches of ``state_dict["epoch"]`` on the next pass of that epoch."""
        if state_dict and isinstance(self.sampler, SeededSampler) and len(self) > 0:
            passes, batches = divmod(int(state_dict["batches"]), len(self))
            self.sampler.resume(state_dict["epoch"], passes, batches * int(self.batch_size))


def _to_image_tensor(image: np.ndarray) -> torch.Tensor:
    """``uint8 (H, W, C)`` -> new ``float32 (C, H, W)`` in ``[0, 1]`` (never a view of a cached array)."""
    chw = np.array(image.transpose(2, 0, 1), dtype=np.float32, order="C", copy=True)
    return torch.from_numpy(chw).div_(255.0)


class SegmentationDataset(Dataset):
    """Images (and optionally masks) from file paths through an albumentations pipeline; reusable by any
    data module.

    Items are dicts: ``image`` ``float32 (C, H, W)`` in ``[0, 1]``, ``id`` ``str``, ``mask`` ``long (H, W)``
    in ``0..K-1`` when ``mask_paths`` is given, and ``image_strong`` when ``strong_transform`` is given (the
    strong view of the *transformed* image, same geometry; see
    :func:`~qg_lightning.data.transforms.weak_strong_views`).

    Args:
        image_paths: image files.
        mask_paths: mask files in the same order, or ``None`` for unlabeled images.
        ids: sample ids (default: file stems).
        in_channels: 1 or 3; images are converted.
        num_classes: K for reading masks (binary ``{0, 255}`` -> ``{0, 1}``).
        transform: pipeline applied to ``image`` (and ``mask``); ``None`` leaves sizes unchanged.
        strong_transform: image-only pipeline producing ``image_strong`` from the transformed image.
        cache: optional dict ``str(path) -> decoded array`` used (and filled) as an in-memory cache, e.g.
            ``FolderIndex.decoded``.
        seed: seed for plain integer indexing (``derive_seed(seed, index)``).
        mask_key: the item key of the mask (``"mask"``; the data module stores the hidden masks of unlabeled
            images under ``"true_mask"``, which no training loss reads).

    Index with an ``int`` or with an ``(index, sample_seed)`` pair from :class:`SeededSampler`.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     Image.new("RGB", (6, 4), (255, 0, 0)).save(f"{tmp}/a.png")
        ...     Image.new("L", (6, 4), 255).save(f"{tmp}/m.png")
        ...     item = SegmentationDataset([f"{tmp}/a.png"], [f"{tmp}/m.png"], ids=["a"])[0]
        ...     item["image"].shape, item["image"].amax().item(), item["mask"].unique().tolist(), item["id"]
        (torch.Size([3, 4, 6]), 1.0, [1], 'a')
    """

    def __init__(
        self,
        image_paths: Sequence[str | os.PathLike],
        mask_paths: Sequence[str | os.PathLike] | None = None,
        *,
        ids: Sequence[str] | None = None,
        in_channels: int = 3,
        num_classes: int = 2,
        transform: A.Compose | None = None,
        strong_transform: A.Compose | None = None,
        cache: MutableMapping[str, np.ndarray] | None = None,
        seed: int = 0,
        mask_key: str = "mask",
    ) -> None:
        self.image_paths = [Path(p) for p in image_paths]
        self.mask_paths = None if mask_paths is None else [Path(p) for p in mask_paths]
        if self.mask_paths is not None and len(self.mask_paths) != len(self.image_paths):
            raise ValueError(
                f"`mask_paths` has {len(self.mask_paths)} entries but `image_paths` has "
                f"{len(self.image_paths)}; give one mask per image, in the same order."
            )
        self.ids = [p.stem for p in self.image_paths] if ids is None else [str(i) for i in ids]
        if len(self.ids) != len(self.image_paths):
            raise ValueError(
                f"`ids` has {len(self.ids)} entries but `image_paths` has {len(self.image_paths)}."
            )
        check_in_channels(in_channels)
        self.in_channels = in_channels
        self.num_classes = check_num_classes(num_classes)
        self.transform = transform
        self.strong_transform = strong_transform
        self.cache = cache
        self.seed = int(seed)
        self.mask_key = str(mask_key)

    def __len__(self) -> int:
        return len(self.image_paths)

    def _load(self, path: Path, *, is_mask: bool) -> np.ndarray:
        key = str(path)
        if self.cache is not None and key in self.cache:
            return self.cache[key]
        array = read_mask(path, self.num_classes) if is_mask else read_image(path, self.in_channels)
        if self.cache is not None:
            self.cache[key] = array
        return array

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        if isinstance(index, tuple):
            index, sample_seed = index
        else:
            sample_seed = derive_seed(self.seed, index)
        image = self._load(self.image_paths[index], is_mask=False)
        mask = self._load(self.mask_paths[index], is_mask=True) if self.mask_paths is not None else None
        if self.transform is not None:
            reseed(self.transform, sample_seed)
        if self.strong_transform is not None:
            reseed(self.strong_transform, derive_seed(sample_seed, 1))
            weak = self.transform if self.transform is not None else A.Compose([], strict=True)
            out = weak_strong_views(image, weak, self.strong_transform, mask=mask)
        elif self.transform is not None:
            out = self.transform(image=image, mask=mask) if mask is not None else self.transform(image=image)
        else:
            out = {"image": image, "mask": mask}
        item: dict[str, Any] = {"image": _to_image_tensor(out["image"]), "id": self.ids[index]}
        if "image_strong" in out:
            item["image_strong"] = _to_image_tensor(out["image_strong"])
        if mask is not None:
            item[self.mask_key] = torch.from_numpy(
                np.array(out["mask"], dtype=np.int64, order="C", copy=True)
            )
        return item

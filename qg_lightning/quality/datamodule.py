"""``QualityDataModule``: (image, candidate mask, target quality) samples for training the quality predictor.

Training data (METHOD.md, "Training masks"), generated fresh every epoch from the *labeled* training images:

1. every labeled image appears ``samples_per_image`` times per epoch (K = 50 in the paper);
2. spatial augmentation (flips, rotation up to ``max_rotation`` degrees) is applied jointly to the image, its
   ground truth and its snapshot masks;
3. with probability ``p_weak`` the candidate is the (warped) prediction of a uniformly chosen snapshot model
   allowed for that image (binarised at a threshold drawn from ``snapshot_threshold`` when that is a range;
   with ``snapshot_appearance``, predicted on the plain image or one of its fixed colour-cast copies),
   otherwise one draw of :class:`~qg_lightning.quality.sampling.CorruptionSampler`;
4. the target is the per-class Dice of the candidate against the (warped) truth (a class absent from both:
   1.0; one painted where the truth has none, or missed: 0.0);
5. image-only photometric augmentation (a snapshot mask's image gets its copy's cast, if any).

Steps 2-5 run batched on the training device in :meth:`QualityDataModule.on_after_batch_transfer`, with a
``torch.Generator`` seeded from ``(seed, epoch, batch, rank)``; the loader itself only gathers cached ``uint8``
tensors (images are decoded and resized once). Snapshot predictions are computed once per snapshot and image
at set-up and warped with the image, so a snapshot mask costs no network pass per sample.

Validation and test candidates are generated once from a fixed seed (``eval_candidates_per_image`` synthetic
corruptions of each validation / test image, no augmentation), so every epoch sees the same set; the predictor
never trains on these images.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import cv2
import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from qg_lightning._standalone import standalone
from qg_lightning._validation import check_bool, check_int, is_number
from qg_lightning.data import SemiSupervisedDataModule, derive_seed, read_image, read_mask
from qg_lightning.data.folder import check_mask_folder
from qg_lightning.masks import check_num_classes, foreground_from_labels
from qg_lightning.quality.augment import (
    IMAGE_PADDINGS,
    apply_appearance,
    apply_spatial,
    apply_spatial_masks,
    check_appearance,
    draw_appearance,
    draw_spatial,
    noise_window,
    photometric,
    quantized_normal_,
)
from qg_lightning.quality.sampling import CATEGORIES, CorruptionSampler, check_category_probs, dice_target
from qg_lightning.quality.snapshots import (
    find_snapshots,
    load_snapshot,
    predict_snapshot_masks,
    predict_snapshot_probs,
    threshold_snapshot_probs,
)

__all__ = ["QUALITY_CATEGORIES", "QualityDataModule", "load_resized"]

log = logging.getLogger(__name__)

QUALITY_CATEGORIES: tuple[str, ...] = (*CATEGORIES, "snapshot")
"""Category names of quality samples: the corruption categories plus ``"snapshot"`` (a weak model's mask)."""
_SNAPSHOT = len(CATEGORIES)
#: ``snapshot_flips``: the dims flipped for each test-time variant of a snapshot prediction (none first)
_FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))


def load_resized(
    image_paths: Sequence[Path], mask_paths: Sequence[Path] | None, *, size: int, in_channels: int,
    num_classes: int, decoded: Mapping[str, np.ndarray] | None = None,
) -> tuple[Tensor, Tensor | None]:  # fmt: skip
    """Decode and resize images to ``uint8 (N, C, size, size)`` (area) and masks to ``uint8 (N, size, size)``
    label maps (nearest). ``decoded`` is an optional cache of already decoded arrays keyed by path."""
    decoded = decoded or {}
    images = np.empty((len(image_paths), size, size, in_channels), dtype=np.uint8)
    for i, p in enumerate(image_paths):
        arr = decoded.get(str(p))
        arr = read_image(p, in_channels) if arr is None else arr
        res = cv2.resize(arr, (size, size), interpolation=cv2.INTER_AREA)
        images[i] = res.reshape(size, size, in_channels)
    masks = None
    if mask_paths is not None:
        masks = np.empty((len(mask_paths), size, size), dtype=np.uint8)
        for i, p in enumerate(mask_paths):
            arr = decoded.get(str(p))
            arr = read_mask(p, num_classes) if arr is None else arr
            masks[i] = cv2.resize(arr, (size, size), interpolation=cv2.INTER_NEAREST)
    img_t = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    return img_t, (torch.from_numpy(masks) if masks is not None else None)


class _TrainSet(Dataset):
    """Index ``i`` -> labeled image ``i % N``; batched fetch through ``__getitems__``. Snapshot masks are not
    gathered here: only each sample's chosen one is, from the cached table, once the choice is drawn."""

    def __init__(self, images: Tensor, labels: Tensor, allowed: Tensor | None, repeats: int) -> None:
        self.images, self.labels, self.allowed, self.repeats = images, labels, allowed, repeats

    def __len__(self) -> int:
        return self.images.shape[0] * self.repeats

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Tensor]:
        # index_select, not ``x[idx]``: advanced indexing of uint8 batches is ~30x slower on CPU
        idx = torch.as_tensor(list(indices), dtype=torch.long) % self.images.shape[0]
        # gathered as (N, H, W, C), so a channels-last cache gives a channels-last batch
        images = self.images.permute(0, 2, 3, 1).index_select(0, idx).permute(0, 3, 1, 2)
        out = {"image_u8": images, "labels": self.labels.index_select(0, idx), "index": idx}
        if self.allowed is not None:
            # (B, S): which snapshots may serve each sample
            out["allowed"] = self.allowed.index_select(0, idx)
        return out

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}


class _EvalSet(Dataset):
    def __init__(self, tensors: dict[str, Tensor]) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return next(iter(self.tensors.values())).shape[0]

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Tensor]:
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        return {k: v.index_select(0, idx) for k, v in self.tensors.items()}

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {k: v[index] for k, v in self.tensors.items()}


def _check_threshold(value: float | Sequence[float] | None) -> tuple[float, float] | None:
    """``snapshot_threshold`` as a ``(lo, hi)`` range in (0, 1), or ``None`` for hard snapshot masks."""
    if value is None:
        return None
    items = [value] if is_number(value) else value
    ok = isinstance(items, Sequence) and not isinstance(items, str) and len(items) in (1, 2)
    ok = ok and all(is_number(v) and 0 < v < 1 for v in items)
    if not ok or items[0] > items[-1]:
        raise ValueError(
            f"`snapshot_threshold` must be null, a number in (0, 1) or a range [lo, hi] with 0 < lo <= hi < 1, "
            f"got {value!r}. Example: [0.2, 0.8] binarises each snapshot mask at a random threshold."
        )
    return float(items[0]), float(items[-1])


def _identity_collate(batch: Any) -> Any:
    return batch


class _EpochPermutation(Sampler[int]):
    """A new seeded permutation each epoch (``set_epoch`` is called by Lightning)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(derive_seed(self.seed, 11, self.epoch))
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


class QualityDataModule(L.LightningDataModule):
    """Candidate masks with their true Dice, for training and evaluating a :class:`QualityPredictor`.

    The folder, split and labeled subset are exactly those of
    :class:`~qg_lightning.data.SemiSupervisedDataModule` with the same arguments and seed, so a predictor
    trained here never sees the masks an SSL run treats as unlabeled, nor its validation or test images.

    Args:
        root, synthetic_images, synthetic_size, split_file, num_classes, in_channels, image_size,
        val_fraction, test_fraction, n_labeled, labeled_fraction, seed, skip_bad: as in
            ``SemiSupervisedDataModule``. ``num_classes`` is never inferred from the masks: a mask value
            outside ``0..num_classes-1`` (other than binary 255) fails the folder check at set-up, before any
            training, with the file named.
        mask_dir: mask sub-folder of ``root`` (default ``masks``), e.g. ``masks_3class`` to train on a second
            set of masks of the same images without copying files (with ``num_classes: 3``). Checked here:
            a ``root`` without that sub-folder raises ``FileNotFoundError`` naming both.
        samples_per_image: candidates per labeled image per epoch (K; paper 50).
        batch_size: batch size (paper 32).
        eval_candidates_per_image: fixed synthetic candidates per validation / test image (5).
        p_weak: probability that a training candidate is a snapshot model's mask (release 0.05).
        snapshots: snapshot files or folders (from :class:`~qg_lightning.quality.SnapshotCallback`): a list,
            or one path.
        snapshot_policy: ``"heldout"`` uses a snapshot only on images it did not train on (honest errors;
            needs snapshots trained on other folds), ``"all"`` uses every snapshot on every image (the release).
        snapshot_threshold: how snapshot predictions become masks. ``None`` (default): the snapshot's own hard
            mask (0.5 / argmax), as the release. A number ``t``: foreground where the snapshot's foreground
            probability is at least ``t``. A range ``[lo, hi]``: ``t`` is drawn uniformly per sample, so each
            snapshot yields many masks that differ where it was unsure, e.g. ``[0.2, 0.8]``.
        snapshot_appearance: number of colour-cast copies of each training image that every snapshot also
            predicts (``0``, the default, turns it off). Each copy has its own fixed exponent and channel gains,
            drawn once from the ``gamma`` / ``channel_gain`` ranges (so one of those must be above 0). A snapshot
            candidate then comes from the plain image or one of its copies, uniformly, and the sample's image
            gets that copy's cast instead of a random one (the plain image: none). So a snapshot mask always
            shows the errors the snapshot makes on the very image the predictor sees, also under a cast. Costs
            ``1 + snapshot_appearance`` times the snapshot predictions at set-up and their memory.
        snapshot_flips: every snapshot also predicts each training image (and each cast copy) flipped
            horizontally, vertically and both ways, each prediction flipped back: test-time-augmented variants,
            so one snapshot gives four slightly different masks of its own errors per image. A snapshot
            candidate comes from one of them, uniformly. Costs 4 times the snapshot predictions at set-up and
            their memory.
        category_probs: corruption category probabilities (default METHOD.md's).
        max_rotation: spatial augmentation rotation range in degrees (20).
        image_padding: what a rotated image shows outside its original frame: ``"zeros"`` (default) black,
            like the mask there, or ``"border"`` its edge pixels repeated (a polyp at the edge is then smeared
            into the corner while the mask says background; also slower on CPU).
        photometric: image-only brightness/contrast/saturation/noise after corruption.
        gamma: with ``photometric``, also raise each image to a random exponent in
            ``[1 / (1 + gamma), 1 + gamma]`` first (``0``, the default, turns it off; e.g. ``0.2``).
        channel_gain: with ``photometric``, also scale each channel by a random gain in
            ``[1 - channel_gain, 1 + channel_gain]`` first (a colour cast; ``0``, the default, turns it off).
            These two imitate another light source or camera; ``benchmarks/appearance_shift.py`` measures what
            they buy on colour-shifted images.
        noise_reuse: consecutive training batches that take their Gaussian noise from one bank of fresh
            standard normal values (twice a batch's size, a random window per batch;
            :func:`~qg_lightning.quality.augment.noise_window`). The noise draw is one of the largest costs of a
            batch on one CPU thread; 8 (default) draws a quarter as many values per batch (a bank of two
            batches every eighth batch). Each batch's noise is still independent per pixel; ``1`` draws fresh
            noise for every batch. On CPU the values are normal quantised to 256 levels
            (:func:`~qg_lightning.quality.augment.quantized_normal_`, about 5x cheaper to draw).
        num_workers: loader workers (gathering cached tensors is cheap; 0 is usually fastest).

    Batches are dicts: ``image`` float ``(B, C, H, W)`` in ``[0, 1]``, ``candidate`` float ``(B, K-1, H, W)``
    hard, ``quality`` float ``(B, K-1)``, ``category`` long ``(B,)`` indexing :data:`QUALITY_CATEGORIES`;
    training batches also carry ``truth`` float ``(B, K-1, H, W)``, the augmented ground truth (for the
    predictor's optional error-map loss).
    """

    def __init__(
        self,
        root: str | None = None,
        synthetic_images: int = 300,
        synthetic_size: int = 128,
        split_file: str | None = None,
        num_classes: int = 2,
        in_channels: int = 3,
        image_size: int = 128,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        n_labeled: int | None = None,
        labeled_fraction: float | None = None,
        samples_per_image: int = 50,
        batch_size: int = 32,
        eval_candidates_per_image: int = 5,
        p_weak: float = 0.05,
        snapshots: list[str] | str | None = None,
        snapshot_policy: Literal["heldout", "all"] = "heldout",
        snapshot_threshold: float | list[float] | None = None,
        snapshot_appearance: int = 0,
        snapshot_flips: bool = False,
        category_probs: dict[str, float] | None = None,
        max_rotation: float = 20.0,
        image_padding: Literal["zeros", "border"] = "zeros",
        photometric: bool = True,
        gamma: float = 0.0,
        channel_gain: float = 0.0,
        noise_reuse: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        skip_bad: bool = False,
        mask_dir: str = "masks",
    ) -> None:
        super().__init__()
        check_num_classes(num_classes)
        check_mask_folder(root, mask_dir, key="data.init_args.mask_dir")
        for name, value, lo in (("samples_per_image", samples_per_image, 1), ("batch_size", batch_size, 1),
                                ("eval_candidates_per_image", eval_candidates_per_image, 1),
                                ("noise_reuse", noise_reuse, 1), ("num_workers", num_workers, 0),
                                ("snapshot_appearance", snapshot_appearance, 0)):  # fmt: skip
            check_int(value, name, minimum=lo)
        if not is_number(p_weak) or not 0.0 <= p_weak <= 1.0:
            raise ValueError(
                f"`p_weak` must be a probability in [0, 1], got {p_weak!r}. It is the share of training "
                "candidates that are snapshot masks (release 0.05; 0 = synthetic corruptions only)."
            )
        if p_weak > 0 and not snapshots:
            raise ValueError(
                f"`p_weak`={p_weak} needs snapshot masks: set `snapshots` to the snapshot files or folder written by "
                f"SnapshotCallback, or set `p_weak: 0` to train on synthetic corruptions only."
            )
        if snapshot_policy not in ("heldout", "all"):
            raise ValueError(f"`snapshot_policy` must be 'heldout' or 'all', got {snapshot_policy!r}.")
        check_appearance(gamma, channel_gain)
        if snapshot_appearance and not (photometric and (gamma > 0 or channel_gain > 0) and p_weak > 0):
            raise ValueError(
                f"`snapshot_appearance`={snapshot_appearance} casts the images that snapshots predict, so it needs "
                f"`photometric: true`, `gamma` or `channel_gain` above 0 (the ranges its casts are drawn from) and "
                f"`p_weak` above 0; got photometric={photometric}, gamma={gamma}, channel_gain={channel_gain}, "
                f"p_weak={p_weak}. Set those, or `snapshot_appearance: 0`."
            )
        check_bool(snapshot_flips, "snapshot_flips")
        if snapshot_flips and not p_weak > 0:
            raise ValueError(
                "`snapshot_flips: true` adds flipped variants of the snapshot masks, so it needs `p_weak` above 0 "
                f"and `snapshots`; got p_weak={p_weak}. Set those, or `snapshot_flips: false`."
            )
        self._snapshot_range = _check_threshold(snapshot_threshold)
        if not 0 <= max_rotation <= 180:
            raise ValueError(f"`max_rotation` must be in [0, 180] degrees, got {max_rotation}.")
        if image_padding not in IMAGE_PADDINGS:
            raise ValueError(
                f"`image_padding` must be one of {IMAGE_PADDINGS}, got {image_padding!r}: 'zeros' fills a rotated "
                "image's corners with black, 'border' with its edge pixels."
            )
        if snapshots is not None:
            items = [snapshots] if isinstance(snapshots, (str, Path)) else snapshots
            if not isinstance(items, Sequence):
                raise ValueError(f"`snapshots` must be a list of files or folders, got {snapshots!r}.")
            missing = [str(path) for path in items if not Path(path).exists()]
            if missing:
                raise FileNotFoundError(
                    f"`snapshots` (config key data.init_args.snapshots) lists paths that do not exist: "
                    f"{missing}. Give the snapshot files or folders written by SnapshotCallback "
                    "(see examples/configs/snapshots/), or remove `snapshots` and set `p_weak: 0`."
                )
        self.sampler = CorruptionSampler(check_category_probs(category_probs, name="category_probs"))
        self.save_hyperparameters()
        self.source = standalone(  # its own hyper-parameters, also under LightningCLI
            SemiSupervisedDataModule,
            root=root, synthetic_images=synthetic_images, synthetic_size=synthetic_size, split_file=split_file,
            num_classes=num_classes, in_channels=in_channels, image_size=image_size, val_fraction=val_fraction,
            test_fraction=test_fraction, n_labeled=n_labeled, labeled_fraction=labeled_fraction,
            use_unlabeled=False, seed=seed, skip_bad=skip_bad, mask_dir=mask_dir,
        )  # fmt: skip
        self.train_data: dict[str, Tensor] = {}
        self.eval_data: dict[str, dict[str, Tensor]] = {}
        self.snapshot_info: list[dict[str, Any]] = []
        self._batch_counter = 0
        self._counter_epoch = 0
        self._noise_bank: Tensor | None = None
        # (exponent (1 + V, N), gains (1 + V, N, C)) of each training image's casts; row 0 is the plain image
        self._appearance: tuple[Tensor, Tensor] | None = None

    @property
    def split(self):
        """The split in use (after ``setup``)."""
        return self.source.split

    def prepare_data(self) -> None:
        self.source.prepare_data()

    # ------------------------------------------------------------------------------------------ set-up
    def setup(self, stage: str | None = None) -> None:
        if not self.train_data:
            self._build()
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            self.source._write_split(trainer)

    def _build(self) -> None:
        hp = self.hparams
        self.source.setup()
        index, split = self.source.index, self.source.split
        decoded = index.decoded

        def load(ids: list[str]) -> tuple[Tensor, Tensor]:
            images, labels = load_resized(
                [index.image_paths[i] for i in ids], [index.mask_paths[i] for i in ids], size=hp.image_size,
                in_channels=hp.in_channels, num_classes=hp.num_classes, decoded=decoded,
            )  # fmt: skip
            return images, labels

        train_ids = list(split.labeled)
        images, labels = load(train_ids)
        # channels-last, so that the CPU warp packs each RGB sample with one cv2.cvtColor (augment notes)
        self.train_data = {"images": images.contiguous(memory_format=torch.channels_last), "labels": labels}
        self.train_ids = train_ids
        if hp.p_weak > 0:
            self._build_snapshots(images, train_ids)
        for stage, ids, stream in (("val", split.val, 21), ("test", split.test, 22)):
            if ids:
                self.eval_data[stage] = self._fixed_candidates(*load(list(ids)), list(ids), stream)
        casts = (
            f" (on the plain images and {hp.snapshot_appearance} cast copies)"
            if hp.snapshot_appearance
            else ""
        )
        casts += ", each also on 3 flips of the image" if hp.snapshot_flips else ""
        rank_zero_info(
            f"QualityDataModule: {len(train_ids)} training images x {hp.samples_per_image} candidates/epoch, "
            f"{len(split.val)} val and {len(split.test)} test images x {hp.eval_candidates_per_image} fixed "
            f"candidates, p_weak={hp.p_weak} with {len(self.snapshot_info)} snapshots{casts}"
        )

    def _build_snapshots(self, images: Tensor, train_ids: list[str]) -> None:
        hp = self.hparams
        paths = find_snapshots(hp.snapshots)
        masks, allowed = [], []
        x = images.float().div(255.0)
        n, c = x.shape[:2]
        views = 1 + hp.snapshot_appearance
        if views > 1:  # fixed casts, the same on every rank and in every run with this seed
            g = torch.Generator().manual_seed(derive_seed(hp.seed, 41))
            exponent, gain = draw_appearance(
                (views - 1) * n, c, gamma=hp.gamma, channel_gain=hp.channel_gain, generator=g
            )
            self._appearance = (torch.cat([torch.ones(n), exponent]).view(views, n),
                                torch.cat([torch.ones(n, c), gain]).view(views, n, c))  # fmt: skip
        predict = predict_snapshot_masks if self._snapshot_range is None else predict_snapshot_probs
        flips = _FLIPS if hp.snapshot_flips else ((),)
        for path in paths:
            snap = load_snapshot(path, in_channels=hp.in_channels, num_classes=hp.num_classes)
            per_view = []  # view v * F + f: cast copy v (0: the plain image), flip f, flipped back
            for v in range(views):
                cast = x if v == 0 else apply_appearance(x, self._appearance[0][v], self._appearance[1][v])
                for dims in flips:
                    out = predict(snap.net, cast.flip(dims) if dims else cast, hp.num_classes)
                    per_view.append(out.flip(dims) if dims else out)
            masks.append(torch.stack(per_view))
            if hp.snapshot_policy == "heldout":
                allowed.append(torch.tensor([i not in snap.train_ids for i in train_ids]))
            else:
                allowed.append(torch.ones(len(train_ids), dtype=torch.bool))
            self.snapshot_info.append({"path": str(path), "epoch": snap.epoch, "fold": snap.fold})
        # (V * S, N, K-1, H, W) uint8 masks or probabilities, view v of snapshot s at v * S + s (V = views
        # times flips; a cast copy's flips are consecutive views, so plane // (F * S) is the cast copy)
        self.train_data["snapshots"] = torch.stack(masks, dim=1).flatten(0, 1)
        allowed = torch.stack(allowed, dim=1)  # (N, S)
        self.train_data["allowed"] = allowed.repeat(1, views * len(flips))  # (N, V * S), the columns above
        n_without = int((~allowed.any(1)).sum())
        if n_without == len(train_ids):
            raise ValueError(
                f"No snapshot may be used on any training image with snapshot_policy='heldout': every snapshot in "
                f"{hp.snapshots} was trained on these images. Train snapshots on other folds of the labeled data "
                f"(see the README), or set `snapshot_policy: all`."
            )
        if n_without:
            log.warning(
                "%d training images have no held-out snapshot; they get synthetic candidates only.", n_without
            )

    def _fixed_candidates(
        self, images: Tensor, labels: Tensor, ids: list[str], stream: int
    ) -> dict[str, Tensor]:
        hp = self.hparams
        g = torch.Generator().manual_seed(derive_seed(hp.seed, stream))
        truth = foreground_from_labels(labels.long(), hp.num_classes)
        reps = hp.eval_candidates_per_image
        cands, quals, cats = [], [], []
        for _ in range(reps):
            result = self.sampler(truth, generator=g)
            cands.append(result.masks.to(torch.uint8))
            quals.append(result.quality)
            cats.append(result.category)
        n = images.shape[0]
        order = torch.arange(n).repeat(reps)
        return {
            "image_u8": images.index_select(0, order),
            "candidate_u8": torch.cat(cands),
            "quality": torch.cat(quals),
            "category": torch.cat(cats),
            "labels": labels.index_select(0, order),
            "index": order,
        }

    # --------------------------------------------------------------------------------------- loaders
    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        data = self.train_data
        dataset = _TrainSet(data["images"], data["labels"], data.get("allowed"), hp.samples_per_image)
        self._batch_counter = 0
        return DataLoader(
            dataset, batch_size=hp.batch_size, sampler=_EpochPermutation(len(dataset), hp.seed), drop_last=True,
            collate_fn=_identity_collate, num_workers=hp.num_workers,
        )  # fmt: skip

    def _eval_loader(self, stage: str) -> DataLoader | list:
        if stage not in self.eval_data:
            return []
        return DataLoader(_EvalSet(self.eval_data[stage]), batch_size=self.hparams.batch_size, shuffle=False,
                          collate_fn=_identity_collate, num_workers=self.hparams.num_workers)  # fmt: skip

    def val_dataloader(self) -> DataLoader | list:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader | list:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader | list:
        """The fixed test candidates, as for ``test``: ``predict`` returns their predicted quality, ``(B, K-1)``
        per batch, in order. To score your own folder of masks, use ``qg-lightning score``."""
        return self._eval_loader("test")

    # --------------------------------------------------------------------------- batched generation
    def _generator(self, device: torch.device) -> torch.Generator:
        trainer = getattr(self, "trainer", None)
        epoch = trainer.current_epoch if trainer is not None else 0
        rank = trainer.global_rank if trainer is not None else 0
        if epoch != self._counter_epoch:  # batch counter restarts every epoch
            self._counter_epoch, self._batch_counter = epoch, 0
        g = torch.Generator(device=device)
        g.manual_seed(derive_seed(self.hparams.seed, 31, epoch, self._batch_counter, rank))
        self._batch_counter += 1
        return g

    def _noise(
        self, shape: torch.Size, device: torch.device, generator: torch.Generator, index: int
    ) -> Tensor:
        """Standard normal noise of ``shape`` for batch ``index`` of the epoch (``noise_reuse`` batches per bank).

        The bank (twice a batch's size, or one batch's with ``noise_reuse`` 1) is redrawn from the batch's own
        generator at every ``noise_reuse``-th batch of an epoch, so the noise depends only on the seed, the epoch
        and the batch index (like the rest of the batch). Values come from :func:`quantized_normal_` (256
        normal levels, about 5x cheaper than ``normal_`` on CPU). A redraw refills the bank's memory in place
        when its size fits: a fresh allocation of that size costs about as much again in page faults on CPU.
        Nothing outside this method keeps a window: :func:`photometric` reads it into a new tensor.
        """
        reuse = self.hparams.noise_reuse
        size = math.prod(shape) * (1 if reuse == 1 else 2)
        bank = self._noise_bank
        redraw = index % reuse == 0
        if bank is None or bank.device != device or bank.numel() < size or (redraw and bank.numel() != size):
            bank = self._noise_bank = torch.empty(size, device=device)
            redraw = True
        if redraw:
            quantized_normal_(bank, generator=generator)
        return noise_window(bank, shape, generator=generator)

    def make_training_batch(
        self, raw: Mapping[str, Tensor], *, generator: torch.Generator, batch_index: int | None = None
    ) -> dict[str, Tensor]:
        """Turn gathered ``uint8`` tensors into a training batch (steps 2-5 of the module docstring).

        ``batch_index``: the batch's index in its epoch; the noise bank is redrawn at every ``noise_reuse``-th
        index and reused in between. ``None`` (default) redraws it, so the batch depends on ``raw`` and
        ``generator`` alone (slower; the Trainer passes the index).

        ``raw`` holds ``image_u8``, ``labels`` and ``index`` (each sample's row in the training cache), and, with
        snapshots, ``allowed``; each snapshot candidate is read from the cache at its image's row.
        """
        hp = self.hparams
        if batch_index is None:
            batch_index = 0
        images = raw["image_u8"]  # warped in uint8 (cheaper on CPU), then converted to [0, 1] float
        labels = raw["labels"]
        b = images.shape[0]
        device = images.device
        params = draw_spatial(b, max_rotation=hp.max_rotation, device=device, generator=generator)
        snaps = self.train_data.get("snapshots")  # (S, N, K-1, H, W) cache; one plane per sample is read
        # (rows, exponents, gains) of the snapshot samples whose mask came from a cast copy of their image
        snap_appearance = None
        warped = apply_spatial(params, images, labels.unsqueeze(1), image_padding=hp.image_padding)
        images = warped[0]  # uint8 until the photometric jitter (or the plain conversion) makes it float
        truth = foreground_from_labels(
            warped[1].squeeze(1), hp.num_classes, dtype=torch.uint8
        )  # the sampler's
        result = self.sampler(truth, generator=generator)
        candidate, quality = result.masks, result.quality
        category = result.category.clone()
        if snaps is not None:
            s = snaps.shape[0]
            allowed = raw["allowed"].float()
            use = (torch.rand(b, device=device, generator=generator) < hp.p_weak) & (allowed.sum(1) > 0)
            if use.any():
                weights = torch.where(allowed.sum(1, keepdim=True) > 0, allowed, torch.ones_like(allowed))
                choice = torch.multinomial(weights, 1, generator=generator).squeeze(1)
                # each sample's chosen snapshot, read from the cache by index_select (uint8 fancy indexing is
                # slow on CPU) and warped alone: the values of warping all S and picking, at a fraction of the cost
                rows = (choice * snaps.shape[1] + raw["index"]).to(snaps.device)
                picked = snaps.flatten(0, 1).index_select(0, rows).to(device)
                picked = apply_spatial_masks(params, picked)
                if self._snapshot_range is None:
                    picked = picked.float()
                else:
                    lo, hi = self._snapshot_range
                    t = lo + (hi - lo) * torch.rand(b, device=device, generator=generator)
                    picked = threshold_snapshot_probs(picked, t)
                if self._appearance is not None:  # the cast of the image copy the chosen mask came from
                    view = choice // (s // (1 + hp.snapshot_appearance))
                    image = raw["index"]
                    exponents, gains = (table.to(device) for table in self._appearance)
                    snap_appearance = (use, exponents[view, image], gains[view, image])
                candidate = torch.where(use.view(b, 1, 1, 1), picked, candidate.float())
                quality = torch.where(use.view(b, 1), dice_target(picked, truth), quality)
                category = torch.where(use, torch.full_like(category, _SNAPSHOT), category)
        candidate, truth = candidate.float(), truth.float()
        if hp.photometric:  # a uint8 batch: converted to float inside, with the 1/255 folded in
            noise = self._noise(images.shape, device, generator, batch_index)
            appearance = None
            if self._appearance is not None:
                exponent, gain = draw_appearance(b, images.shape[1], gamma=hp.gamma, channel_gain=hp.channel_gain,
                                                 device=device, generator=generator)  # fmt: skip
                if snap_appearance is not None:
                    from_copy, fixed_exponent, fixed_gain = snap_appearance
                    exponent = torch.where(from_copy, fixed_exponent, exponent)
                    gain = torch.where(from_copy.view(b, 1), fixed_gain, gain)
                appearance = (exponent, gain)
            images = photometric(images, gamma=hp.gamma, channel_gain=hp.channel_gain, generator=generator,
                                 noise=noise, appearance=appearance)  # fmt: skip
        else:
            images = images.float().div_(255.0)
        return {
            "image": images,
            "candidate": candidate,
            "quality": quality,
            "category": category,
            "truth": truth,
        }

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if not isinstance(batch, Mapping) or "image_u8" not in batch:
            return batch
        trainer = getattr(self, "trainer", None)
        if "candidate_u8" in batch:  # fixed validation / test candidates
            return {"image": batch["image_u8"].float().div(255.0), "candidate": batch["candidate_u8"].float(),
                    "quality": batch["quality"], "category": batch["category"], "labels": batch["labels"]}  # fmt: skip
        if trainer is not None and not trainer.training:
            return batch
        generator = self._generator(batch["image_u8"].device)
        return self.make_training_batch(batch, generator=generator, batch_index=self._batch_counter - 1)

    # ------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"split": self.source.split.to_dict()} if self.source.split is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.source.load_state_dict(state_dict)

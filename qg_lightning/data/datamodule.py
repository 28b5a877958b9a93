"""``SemiSupervisedDataModule``: labeled + unlabeled batches from a folder or the embedded synthetic data.

Batches (images ``float32`` in ``[0, 1]``, ``C = in_channels``):

* labeled: ``{"image": (B, C, H, W), "mask": long (B, H, W) in 0..K-1, "id": list[str]}``
* unlabeled: ``{"image": (B, C, H, W) weak view, "id": list[str]}`` plus ``"image_strong"`` (same
  geometry, strong photometric changes) when ``unlabeled_views="weak_strong"``. Masks of unlabeled images are
  not returned, except for analysis with ``unlabeled_true_masks=True``: then ``"true_mask"`` (same geometry as
  the weak view) carries the hidden mask of each unlabeled image, which only PL-oracle's weights and the
  pseudolabel diagnostics read (no training loss of any other method does).

``train_dataloader()`` always returns a lightning ``CombinedLoader`` in ``max_size_cycle`` mode, so a host
reads ``batch["labeled"]`` (and ``batch["unlabeled"]`` when there is unlabeled data and ``use_unlabeled``):
the epoch follows the longer loader and the shorter one cycles, as in the paper (32 labeled + 64 unlabeled).

Determinism (one place: this module). Every random augmentation of a training sample is drawn from a seed
carried *with its index*: :class:`SeededSampler` yields ``(index, sample_seed)`` pairs, and
:class:`SegmentationDataset` reseeds its albumentations pipeline with ``sample_seed`` (see
:func:`qg_lightning.data.transforms.reseed`) before transforming. The sampler derives the permutation and all
sample seeds of one pass from ``derive_seed(seed, stream, epoch, pass)``: ``stream`` separates the labeled and
unlabeled loaders, ``epoch`` is the trainer's ``current_epoch`` (or what ``set_epoch`` set, without a
trainer), ``pass`` counts re-iterations within an epoch (the shorter loader cycles under ``max_size_cycle``;
each cycle gets fresh draws). Consequences:

* the same ``seed`` gives the same batches and augmentations for any ``num_workers`` (workers only execute
  the draws, they do not make them), and no two workers repeat each other's "random" augmentations;
* on several processes every rank draws the same seeded list and takes its own block of each global batch
  (:class:`SeededSampler`), so the ranks together train on exactly the batches one process would see with
  ``W`` times the batch size, each sample at most once per pass; torch's own per-worker seed comes from a
  loader ``generator`` seeded with ``derive_seed(seed, stream, rank)``;
* resuming from a checkpoint replays the same epochs (the epoch enters the seed), and a checkpoint written
  mid-epoch resumes after the batches it had trained on (:class:`ResumableDataLoader`).

Plain integer indexing of a dataset (``dataset[i]``) uses ``derive_seed(seed, i)``: reproducible, the same
view each time.

Example:
    >>> import tempfile
    >>> from qg_lightning.data.synthetic import generate_synthetic_dataset
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     root = generate_synthetic_dataset(Path(tmp) / "d", n_images=20, image_size=32)
    ...     dm = SemiSupervisedDataModule(root=str(root), image_size=32, n_labeled=4, batch_size=2)
    ...     dm.setup("fit")
    ...     batch = next(iter(dm.train_dataloader()))[0]
    ...     batch["labeled"]["image"].shape, batch["labeled"]["mask"].dtype, batch["unlabeled"]["image"].shape
    (torch.Size([2, 3, 32, 32]), torch.int64, torch.Size([4, 3, 32, 32]))
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal, get_args

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import CombinedLoader, rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader

from qg_lightning._validation import (
    check_bool,
    check_fraction,
    check_in_channels,
    check_int,
    check_number,
    is_int,
)
from qg_lightning.data.folder import (
    DataValidationError,
    FolderIndex,
    scan_folder,
    scan_image_folder,
)
from qg_lightning.data.loading import (
    _STREAMS,
    ResumableDataLoader,
    SeededSampler,
    SegmentationDataset,
    derive_seed,
)
from qg_lightning.data.splits import Split, assign_folds, load_split, make_split
from qg_lightning.data.synthetic import default_synthetic_root, generate_synthetic_dataset
from qg_lightning.data.transforms import (
    AugmentName,
    build_strong_photometric,
    build_transforms,
)
from qg_lightning.masks import check_num_classes
from qg_lightning.runs import run_dir, stop_other_ranks

__all__ = [
    "SYNTHETIC_SEED",
    "ResumableDataLoader",
    "SeededSampler",
    "SegmentationDataset",
    "SemiSupervisedDataModule",
    "derive_seed",
]

log = logging.getLogger(__name__)

#: Seed of the embedded synthetic dataset (fixed: the data stays the same when the run's ``seed`` changes).
SYNTHETIC_SEED = 0
SPLIT_FILE_NAME = "split.json"
UnlabeledViews = Literal["weak", "weak_strong"]


def _check_choice(value: Any, name: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}, got {value!r}.")


class SemiSupervisedDataModule(L.LightningDataModule):
    """Labeled and unlabeled segmentation data for semi-supervised training (and plain supervised baselines).

    Args:
        root: dataset root in the standard layout (see :mod:`qg_lightning.data.folder`); ``None`` uses the
            embedded synthetic dataset, generated on first use under ``default_synthetic_root``.
        synthetic_images: number of synthetic image/mask pairs (only when ``root`` is None).
        synthetic_size: side of the synthetic images in pixels (only when ``root`` is None).
        split_file: JSON split file; default ``ROOT/split.json`` when it exists, else a seeded split.
        num_classes: K including background (2 = binary).
        in_channels: 1 (grayscale) or 3 (RGB); images are converted.
        image_size: side of the square network input; every pipeline resizes to it.
        val_fraction: validation fraction for a generated split.
        test_fraction: test fraction for a generated split.
        n_labeled: number of labeled training images (the rest of train becomes unlabeled).
        labeled_fraction: fraction of train that is labeled (not with ``n_labeled``); neither -> all labeled.
        use_unlabeled: ``False`` gives a plain supervised data module (only ``batch["labeled"]``).
        batch_size: labeled batch size.
        unlabeled_batch_size: unlabeled batch size (default ``2 * batch_size``).
        num_workers: DataLoader worker processes.
        seed: seed of the split and of every augmentation (see the module docstring).
        labeled_augment: pipeline for labeled training images: ``"none"``, ``"weak"`` or ``"strong"``.
        unlabeled_views: ``"weak"``, or ``"weak_strong"`` to add ``image_strong`` to unlabeled batches.
        skip_bad: skip bad files with a warning instead of failing validation.
        cache_images: keep decoded images and masks in memory (decoded once at their original size).
        pin_memory: DataLoader ``pin_memory``.
        fold: train on the labeled images *outside* this fold only (cross-fitted snapshot models, see
            :func:`~qg_lightning.data.splits.assign_folds`); ``None`` = all labeled images.
        n_folds: number of folds of the labeled set when ``fold`` is set.
        mask_dir: mask sub-folder of ``root`` (default ``masks``), e.g. ``masks_3class`` to train on a second
            set of masks of the same images without copying files.
        unlabeled_root: a folder of extra unlabeled images (no masks), e.g. another source's images as in the
            paper's protocol; added to the unlabeled set beside the train split's unlabeled part and
            ``ROOT/unlabeled``. Ids must not clash with the dataset's.
        unlabeled_true_masks: for analysis only: add each unlabeled image's hidden mask as ``"true_mask"``
            (needs every unlabeled image to come from the labeled folder's train split).

    Attributes:
        split: the :class:`~qg_lightning.data.splits.Split` in use (after ``setup``); also written as
            ``split.json`` into the run's log directory (``split_path``) on global rank 0.
        split_path: where ``split.json`` was written (None without a trainer).
        datasets: the :class:`SegmentationDataset` of each part: ``labeled``, ``unlabeled`` (when used),
            ``val`` and ``test``.
        index: the validated :class:`~qg_lightning.data.folder.FolderIndex`.

    Raises:
        ValueError: an argument is out of range (the message names it).
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
        use_unlabeled: bool = True,
        batch_size: int = 8,
        unlabeled_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        labeled_augment: Literal["none", "weak", "strong"] = "weak",
        unlabeled_views: Literal["weak", "weak_strong"] = "weak",
        skip_bad: bool = False,
        cache_images: bool = True,
        pin_memory: bool = False,
        fold: int | None = None,
        n_folds: int = 5,
        mask_dir: str = "masks",
        unlabeled_root: str | None = None,
        unlabeled_true_masks: bool = False,
    ) -> None:
        super().__init__()
        if root is not None and not isinstance(root, (str, os.PathLike)):
            raise ValueError(f"`root` must be a folder path (str) or None for synthetic data, got {root!r}.")
        if split_file is not None and not isinstance(split_file, (str, os.PathLike)):
            raise ValueError(f"`split_file` must be a path (str) or None, got {split_file!r}.")
        check_int(synthetic_images, "synthetic_images", minimum=4)
        check_int(synthetic_size, "synthetic_size", minimum=16)
        check_num_classes(num_classes)
        check_in_channels(in_channels)
        check_int(image_size, "image_size", minimum=8)
        for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            check_number(value, name, low=0, high=1, high_open=True)
        if val_fraction + test_fraction >= 1:
            raise ValueError(
                f"`val_fraction` + `test_fraction` must be < 1, got {val_fraction} + {test_fraction}."
            )
        check_int(n_labeled, "n_labeled", minimum=1, optional=True)
        check_fraction(labeled_fraction, "labeled_fraction", optional=True)
        if n_labeled is not None and labeled_fraction is not None:
            raise ValueError(
                f"Set only one of `n_labeled` ({n_labeled}) and `labeled_fraction` ({labeled_fraction}); "
                "leave both unset to label all of train."
            )
        check_int(batch_size, "batch_size", minimum=1)
        check_int(unlabeled_batch_size, "unlabeled_batch_size", minimum=1, optional=True)
        check_int(num_workers, "num_workers", minimum=0)
        check_int(seed, "seed")
        check_int(n_folds, "n_folds", minimum=2)
        if fold is not None and (not is_int(fold) or not 0 <= fold < n_folds):
            raise ValueError(f"`fold` must be None or an integer in [0, n_folds={n_folds}), got {fold!r}.")
        _check_choice(labeled_augment, "labeled_augment", get_args(AugmentName))
        if not isinstance(mask_dir, str) or not mask_dir or Path(mask_dir).name != mask_dir:
            raise ValueError(
                f"`mask_dir` must be the name of a mask folder inside `root` (e.g. 'masks_3class'), got "
                f"{mask_dir!r}."
            )
        if unlabeled_root is not None:
            if not isinstance(unlabeled_root, (str, os.PathLike)):
                raise ValueError(f"`unlabeled_root` must be a folder path or None, got {unlabeled_root!r}.")
            if not Path(unlabeled_root).expanduser().is_dir():
                raise FileNotFoundError(
                    f"`unlabeled_root`='{unlabeled_root}' does not exist or is not a folder. Pass a folder of "
                    "images without masks (e.g. another source's images), or leave it unset."
                )
        check_bool(unlabeled_true_masks, "unlabeled_true_masks")
        _check_choice(unlabeled_views, "unlabeled_views", get_args(UnlabeledViews))
        if root is None and num_classes != 2:
            rank_zero_warn(
                f"`num_classes`={num_classes} with the embedded synthetic data, whose masks are binary "
                "(background + lesion). Set `root` to a multi-class dataset or use num_classes=2."
            )
        self.save_hyperparameters()
        self.split: Split | None = None
        self.index: FolderIndex | None = None
        self.split_source: str = ""
        self.split_path: Path | None = None
        self.datasets: dict[str, SegmentationDataset] = {}
        self._cache: dict[str, np.ndarray] | None = None
        self._samplers: dict[str, SeededSampler] = {}
        self._resume_progress: dict[str, int] | None = None
        self.external_unlabeled: dict[str, Path] = {}

    # ------------------------------------------------------------------ paths and preparation
    @property
    def data_root(self) -> Path:
        """The dataset folder in use (``root`` or the synthetic cache folder)."""
        if self.hparams.root is not None:
            return Path(self.hparams.root).expanduser()
        hp = self.hparams
        return default_synthetic_root(hp.synthetic_images, hp.synthetic_size, SYNTHETIC_SEED)

    @property
    def unlabeled_batch_size(self) -> int:
        """Unlabeled batch size in use (``2 * batch_size`` unless set)."""
        hp = self.hparams
        return hp.unlabeled_batch_size if hp.unlabeled_batch_size is not None else 2 * hp.batch_size

    def prepare_data(self) -> None:
        """Generate the embedded synthetic dataset when ``root`` is None (fast no-op when it exists)."""
        if self.hparams.root is None:
            hp = self.hparams
            generate_synthetic_dataset(
                self.data_root,
                n_images=hp.synthetic_images,
                image_size=hp.synthetic_size,
                seed=SYNTHETIC_SEED,
            )

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str | None = None) -> None:
        """Validate the folder, build or load the split and the datasets; write ``split.json`` to the log dir.

        Runs the expensive part once; later calls (other stages) only (re)write ``split.json`` for the
        attached trainer.
        """
        if self.split is None:
            self._build()
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            self._write_split(trainer)

    def _build(self) -> None:
        hp = self.hparams
        self.prepare_data()  # idempotent; covers use without a Trainer
        root = self.data_root
        self.index = scan_folder(
            root,
            num_classes=hp.num_classes,
            in_channels=hp.in_channels,
            check=True,
            skip_bad=hp.skip_bad,
            keep_decoded=hp.cache_images,
            mask_dir=hp.mask_dir,
        )
        self._cache = self.index.decoded if hp.cache_images else None
        if hp.unlabeled_root is not None:
            self._scan_external_unlabeled()
        split_path = Path(hp.split_file).expanduser() if hp.split_file is not None else root / SPLIT_FILE_NAME
        if hp.split_file is not None or split_path.is_file():
            # With skip_bad, ids of skipped files are tolerated in the file and dropped from the split.
            skipped = {Path(rel).stem for rel in self.index.skipped} - set(self.index.ids)
            split = load_split(
                split_path,
                available=[*self.index.ids, *skipped],
                seed=hp.seed,
                n_labeled=hp.n_labeled,
                labeled_fraction=hp.labeled_fraction,
            )
            if skipped & (set(split.train) | set(split.val) | set(split.test)):
                rank_zero_warn(
                    f"skip_bad=True: removed the ids of skipped files from the split: {sorted(skipped)}"
                )
                split = Split(**{k: [i for i in v if i not in skipped] for k, v in split.to_dict().items()})
            self.split = split
            self.split_source = str(split_path)
        else:
            self.split = make_split(
                self.index.ids,
                seed=hp.seed,
                val_fraction=hp.val_fraction,
                test_fraction=hp.test_fraction,
                n_labeled=hp.n_labeled,
                labeled_fraction=hp.labeled_fraction,
            )
            self.split_source = f"make_split(seed={hp.seed})"
        self._build_datasets()
        rank_zero_info(f"SemiSupervisedDataModule: {self.describe()}")

    def _scan_external_unlabeled(self) -> None:
        """Index ``unlabeled_root`` (images without masks from another source) and check its ids."""
        hp, index = self.hparams, self.index
        assert index is not None
        paths, decoded = scan_image_folder(
            hp.unlabeled_root, in_channels=hp.in_channels, skip_bad=hp.skip_bad, keep_decoded=hp.cache_images
        )
        clash = sorted((set(paths) & set(index.ids)) | (set(paths) & set(index.unlabeled_paths)))
        if clash:
            raise DataValidationError(
                f"`unlabeled_root`='{hp.unlabeled_root}' has {len(clash)} image id(s) that also name images of "
                f"'{index.root}' (e.g. {clash[:3]}). Ids must be unique across the dataset and its unlabeled "
                "images: rename them, or remove the duplicates from one folder.",
                root=Path(hp.unlabeled_root),
            )
        self.external_unlabeled = paths
        if self._cache is not None:
            self._cache.update(decoded)

    @property
    def unlabeled_have_masks(self) -> bool:
        """Whether every unlabeled training image has a (hidden) mask: true when all of them were carved out
        of the labeled folder's train split, false when ``ROOT/unlabeled`` or ``unlabeled_root`` add images
        without masks. PL-oracle and the pseudolabel diagnostics need it (``unlabeled_true_masks``)."""
        split = self._require_setup()
        assert self.index is not None
        return bool(split.unlabeled) and not self.index.unlabeled_paths and not self.external_unlabeled

    def _build_datasets(self) -> None:
        hp = self.hparams
        index, split = self.index, self.split
        assert index is not None and split is not None  # set by _build
        if not split.labeled:
            raise ValueError(f"The split from {self.split_source} has no labeled training ids.")

        def labeled(ids: list[str], augment: str) -> SegmentationDataset:
            return SegmentationDataset(
                [index.image_paths[i] for i in ids],
                [index.mask_paths[i] for i in ids],
                ids=ids,
                in_channels=hp.in_channels,
                num_classes=hp.num_classes,
                transform=build_transforms(augment, hp.image_size, in_channels=hp.in_channels),
                cache=self._cache,
                seed=hp.seed,
            )

        self.datasets = {
            "labeled": labeled(self.training_labeled_ids, hp.labeled_augment),
            "val": labeled(split.val, "none"),
            "test": labeled(split.test, "none"),
        }
        external = self.external_unlabeled
        unlabeled_ids = list(split.unlabeled) + sorted(index.unlabeled_paths) + sorted(external)
        if hp.use_unlabeled and unlabeled_ids:
            paths = [index.image_paths[i] for i in split.unlabeled]
            paths += [index.unlabeled_paths[i] for i in sorted(index.unlabeled_paths)]
            paths += [external[i] for i in sorted(external)]
            true_masks = None
            if hp.unlabeled_true_masks:
                without = len(index.unlabeled_paths) + len(external)
                if without:
                    raise ValueError(
                        f"`unlabeled_true_masks=True` needs the mask of every unlabeled image, but {without} "
                        f"unlabeled image(s) come without one (ROOT/unlabeled: {len(index.unlabeled_paths)}, "
                        f"unlabeled_root: {len(external)}). PL-oracle and the pseudolabel diagnostics work "
                        "only when the unlabeled images are carved out of a labeled split (set "
                        "`labeled_fraction` or `n_labeled`); turn `unlabeled_true_masks` off otherwise."
                    )
                true_masks = [index.mask_paths[i] for i in split.unlabeled]
            strong = (
                build_strong_photometric(hp.image_size, in_channels=hp.in_channels)
                if hp.unlabeled_views == "weak_strong"
                else None
            )
            self.datasets["unlabeled"] = SegmentationDataset(
                paths,
                ids=unlabeled_ids,
                in_channels=hp.in_channels,
                num_classes=hp.num_classes,
                transform=build_transforms("weak", hp.image_size, in_channels=hp.in_channels),
                strong_transform=strong,
                cache=self._cache,
                seed=hp.seed,
                mask_paths=true_masks,
                mask_key="true_mask",
            )

    @property
    def training_labeled_ids(self) -> list[str]:
        """Labeled ids this module trains on: all of ``split.labeled``, or those outside ``fold``."""
        split = self._require_setup()
        fold = self.hparams.get("fold")
        if fold is None:
            return list(split.labeled)
        folds = assign_folds(split.labeled, n_folds=self.hparams.n_folds, seed=self.hparams.seed)
        return [i for i in split.labeled if folds[i] != fold]

    def _write_split(self, trainer: L.Trainer) -> None:
        assert self.split is not None
        path = run_dir(trainer) / SPLIT_FILE_NAME
        if trainer.is_global_zero:
            self.split.save(path)
            log.info("Wrote the split in use to %s", path)
        self.split_path = path

    # ------------------------------------------------------------------ info
    @property
    def label_ratio(self) -> float:
        """Labeled fraction of the training split (``len(labeled) / len(train)``)."""
        split = self._require_setup()
        return len(split.labeled) / max(1, len(split.train))

    def describe(self) -> dict[str, Any]:
        """Counts of the data in use (after ``setup``).

        Keys: ``root``, ``split_source``, ``n_pairs`` (valid pairs in the folder), ``n_train``, ``n_val``,
        ``n_test``, ``n_labeled``, ``n_unlabeled_train`` (train images whose masks are hidden),
        ``n_unlabeled_extra`` (``ROOT/unlabeled``), ``n_unlabeled_external`` (``unlabeled_root``),
        ``unlabeled_root``, ``mask_dir``, ``n_unlabeled_used`` (0 when ``use_unlabeled`` is False),
        ``label_ratio``, ``n_skipped`` (bad files skipped).
        """
        split = self._require_setup()
        assert self.index is not None
        unlabeled = self.datasets.get("unlabeled")
        return {
            "root": str(self.index.root),
            "split_source": self.split_source,
            "n_pairs": len(self.index.ids),
            "n_train": len(split.train),
            "n_val": len(split.val),
            "n_test": len(split.test),
            "n_labeled": len(split.labeled),
            "n_unlabeled_train": len(split.unlabeled),
            "n_unlabeled_extra": len(self.index.unlabeled_paths),
            "n_unlabeled_external": len(self.external_unlabeled),
            "unlabeled_root": str(self.hparams.unlabeled_root) if self.hparams.unlabeled_root else None,
            "mask_dir": self.hparams.mask_dir,
            "n_unlabeled_used": len(unlabeled) if unlabeled is not None else 0,
            "label_ratio": round(self.label_ratio, 4),
            "n_skipped": len(self.index.skipped),
        }

    def _require_setup(self) -> Split:
        if self.split is None:
            raise RuntimeError(
                "SemiSupervisedDataModule is not set up: call prepare_data() and setup() first."
            )
        return self.split

    # ------------------------------------------------------------------ loaders
    def _trainer_epoch(self) -> int | None:
        """The attached trainer's current epoch (restored on resume), or None without a trainer."""
        trainer = getattr(self, "trainer", None)
        return int(trainer.current_epoch) if trainer is not None else None

    def _rank(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(trainer.global_rank) if trainer is not None else 0

    def _world(self) -> tuple[int, int]:
        """``(world_size, global_rank)`` of the attached trainer (``(1, 0)`` without one)."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return int(trainer.world_size), int(trainer.global_rank)

    def _progress(self) -> tuple[int, int] | None:
        """``(epoch, batches trained in it)`` from the attached trainer's loop when it is inside an epoch (for
        mid-epoch resume), else None."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return None
        done = int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)
        total = trainer.num_training_batches
        if done <= 0 or (isinstance(total, (int, float)) and done >= total):
            return None  # at an epoch boundary: the next epoch starts from its first batch
        return int(trainer.current_epoch), done

    def _loader(self, name: str, batch_size: int, *, train: bool) -> DataLoader:
        hp = self.hparams
        dataset = self.datasets[name]
        stream = _STREAMS[name]
        world, rank = self._world()
        generator = torch.Generator().manual_seed(derive_seed(hp.seed, stream, rank))
        common: dict[str, Any] = {
            "num_workers": hp.num_workers,
            "pin_memory": hp.pin_memory,
            "persistent_workers": hp.num_workers > 0,
            "generator": generator,
        }
        if not train:
            return DataLoader(dataset, batch_size=batch_size, shuffle=False, **common)
        sampler = SeededSampler(
            len(dataset),
            seed=hp.seed,
            stream=stream,
            shuffle=True,
            epoch_source=self._trainer_epoch,
            num_replicas=world,
            rank=rank,
            batch_size=batch_size,
        )
        self._samplers[name] = sampler
        # One process: drop the last partial batch (when there is more than one batch). Several: the sampler
        # already yields whole batches of the global batch only.
        loader = ResumableDataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=world == 1 and len(dataset) > batch_size,
            **common,
        )
        loader.progress = self._progress
        return loader

    def train_dataloader(self) -> CombinedLoader:
        """``CombinedLoader({"labeled": ..., "unlabeled": ...}, mode="max_size_cycle")``.

        Only ``"labeled"`` when there is no unlabeled data or ``use_unlabeled`` is False. After
        ``load_state_dict`` of a checkpoint written mid-epoch, the first loaders built continue that epoch.
        """
        self._require_setup()
        loaders = {"labeled": self._loader("labeled", self.hparams.batch_size, train=True)}
        if "unlabeled" in self.datasets:
            loaders["unlabeled"] = self._loader("unlabeled", self.unlabeled_batch_size, train=True)
        if self._resume_progress is not None:
            for loader in loaders.values():
                loader.load_state_dict(self._resume_progress)
            self._resume_progress = None
        return CombinedLoader(loaders, mode="max_size_cycle")

    def _eval_loader(self, name: str) -> DataLoader | list:
        self._require_setup()
        if len(self.datasets[name]) == 0:
            return []
        return self._loader(name, self.hparams.batch_size, train=False)

    def val_dataloader(self) -> DataLoader | list:
        """Labeled validation batches, resize only (``[]`` when the split has no validation ids)."""
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader | list:
        """Labeled test batches, resize only (``[]`` when the split has no test ids)."""
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader | list:
        """Test images (``image``, ``id`` and ``mask``), resize only."""
        return self._eval_loader("test")

    def on_exception(self, exception: BaseException) -> None:
        """Under DDP, a failing launching rank stops the others (see :func:`~qg_lightning.runs.stop_other_ranks`)."""
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            stop_other_ranks(trainer, exception)

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        """The split in use and the position in the training epoch, so that a resumed run trains on the same
        ids and continues the epoch where the checkpoint was written."""
        state: dict[str, Any] = {"split": self.split.to_dict()} if self.split is not None else {}
        trainer = getattr(self, "trainer", None)
        fitting = trainer is not None and trainer.state.fn == "fit"
        if fitting and (progress := self._progress()) is not None:
            state["train_progress"] = {"epoch": progress[0], "batches": progress[1]}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Adopt the checkpoint's split (with a warning when it differs from the one built in ``setup``) and
        its position in the training epoch (applied to the next training loaders).

        The position is applied here rather than only through the loaders' own ``load_state_dict``:
        Lightning restores loader states only when it builds the training loaders after restoring the loops,
        which it does not when ``configure_optimizers`` reads ``trainer.estimated_stepping_batches`` (a
        warm-up / cosine schedule does).
        """
        self._resume_progress = state_dict.get("train_progress")
        stored = state_dict.get("split")
        if stored is None or self.index is None:
            return
        split = Split.from_dict(stored, source="checkpoint split")
        if self.split is not None and split == self.split:
            return
        split.check_ids(self.index.ids, source="checkpoint split")
        rank_zero_warn(
            "The checkpoint was trained on a different split than the one built from the current arguments; "
            "resuming with the checkpoint's split."
        )
        self.split = split
        self.split_source = "checkpoint"
        self._build_datasets()
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            self._write_split(trainer)

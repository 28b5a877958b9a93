"""``PredictorRecipe``: everything that makes a quality predictor, as one typed object; ``PredictorData``: the
images it learns from.

The defaults of :class:`PredictorRecipe` are the best recipe measured so far on Kvasir-SEG at CPU scale
(``benchmarks/RESULTS.md``, runs 13 and 19): cross-fitted snapshot models (3 folds of the labeled images,
random-init U-Net / ResNet-18 saved after epochs 1, 2 and 4) whose masks on images they did not train on make
half of the training candidates (``p_weak`` 0.5), each binarised at a threshold drawn from [0.2, 0.8]; a
random-init ResNet-18 predictor at 128 px with the error-map loss at weight 0.5, 4 candidates per labeled image
per epoch for 28 epochs (the checkpoint with the lowest validation loss is kept); a logit-linear calibration
fitted on the snapshot masks of the validation images; reports with flip test-time augmentation.
:meth:`PredictorRecipe.release` gives the authors' release settings for comparison.

:func:`~qg_lightning.quality.training.train_predictor` trains a recipe end to end;
``qg-lightning train-predictor`` is its command line.

Example:
    >>> recipe = PredictorRecipe()
    >>> recipe.p_weak, recipe.snapshot_threshold, recipe.error_map_weight
    (0.5, (0.2, 0.8), 0.5)
    >>> PredictorRecipe.release().p_weak
    0.05
    >>> recipe.replace(max_epochs=2).max_epochs
    2
    >>> PredictorRecipe.from_dict(recipe.to_dict()) == recipe
    True
    >>> PredictorRecipe(p_weak=1.5)
    Traceback (most recent call last):
    ...
    ValueError: `p_weak` must be a number in [0, 1], got 1.5. It is the share of training candidates that are snapshot masks (recipe 0.5, release 0.05).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from qg_lightning._validation import (
    check_bool,
    check_fraction,
    check_in_channels,
    check_int,
    check_number,
    is_int,
    is_number,
)
from qg_lightning.data.folder import check_mask_folder

__all__ = ["PredictorData", "PredictorRecipe", "fingerprint", "stage_fields"]

SnapshotPolicy = Literal["heldout", "all"]
Calibration = Literal["logit", "none"]
_CALIBRATIONS: tuple[str, ...] = ("logit", "none")


def _snapshot_model(spec: Any) -> tuple[str, str]:
    """``"ARCH:ENCODER"`` -> ``(arch, encoder)`` (smp names)."""
    arch, sep, encoder = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if not sep or not arch or not encoder:
        raise ValueError(
            f"`snapshot_models` takes ARCH:ENCODER items (segmentation_models_pytorch names, e.g. "
            f"'Unet:resnet18'), got {spec!r}."
        )
    return arch, encoder


def _as_tuple(value: Any) -> Any:
    """Lists (from JSON / YAML) as tuples, so a recipe stays hashable and compares equal after a round trip."""
    return tuple(value) if isinstance(value, list) else value


#: Labeled training images with which the recipe's lengths were measured (Kvasir-SEG's train split).
REFERENCE_LABELED = 448


@dataclass(frozen=True)
class PredictorRecipe:
    """How to train a quality predictor, end to end (defaults: the best recipe measured so far).

    Args:
        snapshot_folds: cross-fitted snapshot models: the labeled training images are cut into this many
            folds and one weak model per fold trains on the others, so its masks on its own fold carry honest
            errors (>= 2).
        snapshot_models: ``"ARCH:ENCODER"`` of the weak models (segmentation_models_pytorch names, random
            init); several give snapshot masks from several architectures (run 7: no gain).
        snapshot_epochs: epochs after which each weak model is saved (1-based); it trains for the largest.
        snapshot_label_fraction: train the weak models on this share of the labeled images only (then on the
            other folds of it); ``None`` (default) uses them all. Run 15: 0.33 taught the predictor that empty
            masks of a visible object are worth nothing, without changing the ranking of non-empty masks.
        snapshot_batch_size: weak-model batch size.
        snapshot_lr: weak-model learning rate.
        p_weak: share of training candidates that are snapshot masks (release 0.05; 0 = synthetic only).
        snapshot_policy: ``"heldout"`` serves a snapshot's masks only on images it did not train on;
            ``"all"`` on every image (the release).
        snapshot_threshold: ``(lo, hi)``: each snapshot mask binarised at a threshold drawn uniformly from the
            range; a number fixes the threshold; ``None`` keeps the hard masks (the release).
        error_map_weight: weight of the training-only error-map loss (0 = off; 3 was worse, run 18).
        backbone: predictor backbone (``qg_lightning.quality.backbones.BACKBONES``).
        pretrained: ImageNet weights for the backbone (must be in the local cache; nothing is downloaded).
        image_size: side of the square input of the weak models and the predictor, in pixels.
        samples_per_image: training candidates per labeled image per epoch.
        batch_size: predictor batch size.
        max_epochs: predictor epochs; the checkpoint with the lowest validation loss is kept.
        patience: stop after this many epochs without a lower validation loss (``None``: never).
        max_minutes: stop the predictor's training after this many minutes (``None``: no limit).
        channels_last: channels-last memory format (about 1.2x faster on CPU; same results).
        calibration: ``"logit"`` fits ``q' = sigmoid(scale * logit(q) + shift)`` on the snapshot masks of the
            validation images (neither the predictor nor the snapshots trained on them); ``"none"`` skips it.
        eval_candidates_per_image: synthetic candidates per validation image in the report.
        tta: the report also evaluates the final predictor with flip test-time augmentation (mean over four
            flips). Guidance itself runs the predictor without it.
        seed: seed of the predictor (initialisation, batches) and the report's synthetic candidates, and of
            the weak models unless ``snapshot_seed`` is set.
        snapshot_seed: seed of the weak models (``None``: ``seed``); set it to train predictor replicates with
            other seeds on the same snapshots.
        init_from: a quality predictor checkpoint (e.g. one trained at another centre) whose weights the
            predictor starts from instead of ``pretrained`` / random weights: fine-tuning on this data. Its
            ``backbone``, image channels and classes must match; an error-map head it lacks starts fresh, and
            its calibration is dropped (the calibration stage fits a new one). The measured fine-tunings kept
            the recipe's 28 epochs (FINDINGS §5.1). ``None`` (default) trains from scratch. Left out of
            :meth:`to_dict` when ``None``, so recipes saved before the field existed still compare equal.

    Raises:
        ValueError: a field is out of range; the message names it.
    """

    snapshot_folds: int = 3
    snapshot_models: tuple[str, ...] = ("Unet:resnet18",)
    snapshot_epochs: tuple[int, ...] = (1, 2, 4)
    snapshot_label_fraction: float | None = None
    snapshot_batch_size: int = 16
    snapshot_lr: float = 1e-3
    p_weak: float = 0.5
    snapshot_policy: SnapshotPolicy = "heldout"
    snapshot_threshold: tuple[float, float] | float | None = (0.2, 0.8)
    error_map_weight: float = 0.5
    backbone: str = "resnet18"
    pretrained: bool = False
    image_size: int = 128
    samples_per_image: int = 4
    batch_size: int = 32
    max_epochs: int = 28
    patience: int | None = None
    max_minutes: float | None = None
    channels_last: bool = True
    calibration: Calibration = "logit"
    eval_candidates_per_image: int = 5
    tta: bool = True
    seed: int = 0
    snapshot_seed: int | None = None
    init_from: str | None = None

    def __post_init__(self) -> None:
        for f in fields(self):  # lists from JSON / YAML become tuples
            object.__setattr__(self, f.name, _as_tuple(getattr(self, f.name)))
        if isinstance(self.init_from, os.PathLike):
            object.__setattr__(self, "init_from", os.fspath(self.init_from))
        if self.init_from is not None and (not isinstance(self.init_from, str) or not self.init_from.strip()):
            raise ValueError(
                f"`init_from` must be the path of a quality predictor checkpoint (.ckpt) or null, got "
                f"{self.init_from!r}."
            )
        check_int(self.snapshot_folds, "snapshot_folds", minimum=2)
        models = self.snapshot_models
        if not isinstance(models, tuple) or not models:
            raise ValueError(f"`snapshot_models` must be a non-empty list of ARCH:ENCODER, got {models!r}.")
        for spec in models:
            _snapshot_model(spec)
        epochs = self.snapshot_epochs
        if not isinstance(epochs, tuple) or not epochs or not all(is_int(e) and e >= 1 for e in epochs):
            raise ValueError(f"`snapshot_epochs` must be a non-empty list of epochs >= 1, got {epochs!r}.")
        if len(set(epochs)) != len(epochs):
            raise ValueError(f"`snapshot_epochs` must not repeat an epoch, got {epochs!r}.")
        check_fraction(self.snapshot_label_fraction, "snapshot_label_fraction", optional=True)
        check_int(self.snapshot_batch_size, "snapshot_batch_size", minimum=1)
        check_number(self.snapshot_lr, "snapshot_lr", low=0, low_open=True)
        check_number(
            self.p_weak,
            "p_weak",
            low=0,
            high=1,
            hint="It is the share of training candidates that are snapshot masks (recipe 0.5, release 0.05).",
        )
        if self.snapshot_policy not in ("heldout", "all"):
            raise ValueError(f"`snapshot_policy` must be 'heldout' or 'all', got {self.snapshot_policy!r}.")
        self._check_threshold()
        check_number(self.error_map_weight, "error_map_weight", low=0)
        from qg_lightning.quality.backbones import BACKBONE_ALIASES, BACKBONES, resolve_backbone_name

        try:
            resolve_backbone_name(self.backbone)
        except (KeyError, TypeError):
            raise ValueError(
                f"`backbone` must be one of {sorted(BACKBONES)} (aliases: {sorted(BACKBONE_ALIASES)}), "
                f"got {self.backbone!r}."
            ) from None
        for name in ("pretrained", "channels_last", "tta"):
            check_bool(getattr(self, name), name)
        check_int(self.image_size, "image_size", minimum=32)
        if self.image_size % 32:
            raise ValueError(
                f"`image_size` must be a multiple of 32 (the weak models' encoders downsample 32x), got "
                f"{self.image_size}. Example: 128."
            )
        check_int(self.samples_per_image, "samples_per_image", minimum=1)
        check_int(self.batch_size, "batch_size", minimum=1)
        check_int(self.max_epochs, "max_epochs", minimum=1)
        check_int(self.patience, "patience", minimum=1, optional=True)
        check_number(self.max_minutes, "max_minutes", low=0, low_open=True, optional=True)
        if self.calibration not in _CALIBRATIONS:
            raise ValueError(f"`calibration` must be one of {_CALIBRATIONS}, got {self.calibration!r}.")
        check_int(self.eval_candidates_per_image, "eval_candidates_per_image", minimum=0)
        check_int(self.seed, "seed")
        check_int(self.snapshot_seed, "snapshot_seed", optional=True)

    def _check_threshold(self) -> None:
        value = self.snapshot_threshold
        items = value if isinstance(value, tuple) else (value,)
        ok = value is None or (
            len(items) in (1, 2) and all(is_number(v) and 0 < v < 1 for v in items) and items[0] <= items[-1]
        )
        if not ok:
            raise ValueError(
                f"`snapshot_threshold` must be null, a number in (0, 1) or a range [lo, hi] with "
                f"0 < lo <= hi < 1, got {_plain(value)!r}. Recipe: [0.2, 0.8]."
            )

    @classmethod
    def release(cls, **changes: Any) -> PredictorRecipe:
        """The authors' release settings, for comparison: ``p_weak`` 0.05, every snapshot on every image, hard
        snapshot masks (no threshold), no error-map loss; the rest as the recipe (``changes`` override).

        Example:
            >>> r = PredictorRecipe.release()
            >>> r.p_weak, r.snapshot_policy, r.snapshot_threshold, r.error_map_weight
            (0.05, 'all', None, 0.0)
        """
        base = {"p_weak": 0.05, "snapshot_policy": "all", "snapshot_threshold": None, "error_map_weight": 0.0}
        return cls(**{**base, **changes})

    def scaled_to(self, n_labeled: int, *, reference: int = REFERENCE_LABELED) -> PredictorRecipe:
        """The recipe for ``n_labeled`` labeled images, with the training length it was measured with.

        The recipe's lengths are in epochs and candidates per image, measured with ``reference`` (448) labeled
        images. With fewer images the same settings train the weak models for a few optimizer steps only
        (near-empty snapshot masks) and show the predictor far fewer candidates. This copy multiplies the
        snapshot epochs and ``samples_per_image`` by ``reference / n_labeled`` (never below the recipe's,
        ``samples_per_image`` at most 64), so the weak models take about as many steps and the predictor sees
        about as many candidates as in the measured setting.

        Example:
            >>> r = PredictorRecipe().scaled_to(45)
            >>> r.snapshot_epochs, r.samples_per_image
            ((10, 20, 40), 40)
            >>> PredictorRecipe().scaled_to(448) == PredictorRecipe()
            True
        """
        check_int(n_labeled, "n_labeled", minimum=1)
        factor = max(1.0, reference / n_labeled)
        epochs = tuple(sorted({max(1, round(e * factor)) for e in self.snapshot_epochs}))
        samples = min(64, max(self.samples_per_image, round(self.samples_per_image * factor)))
        return self.replace(snapshot_epochs=epochs, samples_per_image=samples)

    def replace(self, **changes: Any) -> PredictorRecipe:
        """A copy with ``changes`` applied and validated; an unknown name raises ``ValueError`` listing the
        fields."""
        _check_names(type(self), changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON / YAML-ready dict (tuples as lists); ``init_from`` only when set.

        Example:
            >>> "init_from" in PredictorRecipe().to_dict()
            False
            >>> PredictorRecipe(init_from="g.ckpt").to_dict()["init_from"]
            'g.ckpt'
        """
        out = {f.name: _plain(getattr(self, f.name)) for f in fields(self)}
        if out["init_from"] is None:  # recipes saved before the field existed still compare equal
            del out["init_from"]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PredictorRecipe:
        """Build from :meth:`to_dict`'s output or a YAML mapping (missing keys take the defaults)."""
        if not isinstance(data, Mapping):
            raise ValueError(
                f"A recipe must be a mapping of field names to values, got {type(data).__name__}."
            )
        _check_names(cls, data)
        return cls(**dict(data))

    @property
    def fingerprint(self) -> str:
        """A short hash of every field (two recipes with the same fingerprint train the same predictor).

        Example:
            >>> PredictorRecipe().fingerprint == PredictorRecipe().fingerprint
            True
            >>> PredictorRecipe().fingerprint == PredictorRecipe(seed=1).fingerprint
            False
        """
        return fingerprint(self.to_dict())

    def init_checkpoint(self) -> Path:
        """The existing file ``init_from`` names.

        Raises:
            ValueError: ``init_from`` is not set.
            FileNotFoundError: no file there; the message names the field and what to give.
        """
        if self.init_from is None:
            raise ValueError("`init_from` is not set: the recipe trains the predictor from scratch.")
        path = Path(self.init_from).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"`init_from`: no quality predictor checkpoint at '{self.init_from}'; give the path of a "
                "`quality_predictor.ckpt` (e.g. the output of another `qg-lightning train-predictor` run)."
            )
        return path

    @property
    def snapshot_specs(self) -> list[tuple[str, str]]:
        """``snapshot_models`` as ``(arch, encoder)`` pairs."""
        return [_snapshot_model(spec) for spec in self.snapshot_models]

    @property
    def weak_model_seed(self) -> int:
        """The seed of the weak models: ``snapshot_seed``, else ``seed``."""
        return self.seed if self.snapshot_seed is None else self.snapshot_seed

    @property
    def needs_snapshots(self) -> bool:
        """Whether the recipe trains snapshot models (for training masks or for calibration)."""
        return self.p_weak > 0 or self.calibration != "none"


@dataclass(frozen=True)
class PredictorData:
    """The images a predictor learns from: a folder (or the embedded synthetic data), its split and the
    labeled subset. The predictor trains on the labeled training images only, is selected and calibrated on
    the validation images, and never sees the test images.

    Args:
        root: dataset folder in the standard layout (``images/``, ``masks/``); ``None`` uses the embedded
            synthetic data.
        split_file: JSON split (``train``/``val``/``test``, optional ``labeled``); default ``ROOT/split.json``
            when it exists, else a split seeded by ``split_seed``. A study passes its own split so the predictor
            trains on the study's labeled images only.
        split_seed: seed of a generated split (and of a labeled subset drawn from the split's train list).
        labeled_fraction: share of the training images that are labeled; ``None`` with ``n_labeled`` None
            keeps the split file's ``labeled`` list (all of train without one).
        n_labeled: number of labeled training images (not with ``labeled_fraction``).
        val_fraction, test_fraction: fractions of a generated split.
        in_channels: 1 (grayscale) or 3 (RGB).
        num_classes: K including background (2 = binary). Not inferred from the masks: every mask must hold
            binary {0, 255} / {0, 1} or class indices ``0..K-1``; a file with other values (e.g. a 3-class
            mask with ``num_classes`` 2) fails the folder check of the first stage, before any training, and
            the error names the file.
        synthetic_images, synthetic_size: the embedded synthetic data (only when ``root`` is None).
        skip_bad: skip unreadable files with a warning instead of failing.
        mask_dir: mask sub-folder of ``root`` (default ``masks``), e.g. ``masks_3class`` to learn from a
            second set of masks of the same images in place (with ``num_classes`` 3). It is part of the
            data's identity: a run cached with other masks is refused, not reused.

    Raises:
        FileNotFoundError: ``root``, ``root/mask_dir`` or ``split_file`` does not exist (checked before any
            work).
        ValueError: a field is out of range; the message names it.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as root:
        ...     Path(root, "masks_3class").mkdir()
        ...     data = PredictorData(root=root, mask_dir="masks_3class", num_classes=3)
        ...     data.datamodule_kwargs(128)["mask_dir"]
        'masks_3class'
    """

    root: str | None = None
    split_file: str | None = None
    split_seed: int = 0
    labeled_fraction: float | None = None
    n_labeled: int | None = None
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    in_channels: int = 3
    num_classes: int = 2
    synthetic_images: int = 300
    synthetic_size: int = 128
    skip_bad: bool = False
    mask_dir: str = "masks"

    def __post_init__(self) -> None:
        for name in ("root", "split_file"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))
            elif value is not None and not isinstance(value, str):
                raise ValueError(f"`{name}` must be a path or null, got {value!r}.")
        if self.root is not None and not Path(self.root).expanduser().is_dir():
            raise FileNotFoundError(
                f"`root` '{self.root}' is not a folder. Give a dataset folder in the standard layout "
                "(images/, masks/), or null for the embedded synthetic data."
            )
        check_mask_folder(self.root, self.mask_dir)
        if self.split_file is not None and not Path(self.split_file).expanduser().is_file():
            raise FileNotFoundError(f"`split_file` '{self.split_file}' does not exist. Check the path.")
        check_int(self.split_seed, "split_seed")
        check_fraction(self.labeled_fraction, "labeled_fraction", optional=True)
        check_int(self.n_labeled, "n_labeled", minimum=1, optional=True)
        if self.labeled_fraction is not None and self.n_labeled is not None:
            raise ValueError(
                f"Set only one of `n_labeled` ({self.n_labeled}) and `labeled_fraction` "
                f"({self.labeled_fraction})."
            )
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            check_number(value, name, low=0, high=1, high_open=True)
        check_in_channels(self.in_channels)
        check_int(self.num_classes, "num_classes", minimum=2)
        check_int(self.synthetic_images, "synthetic_images", minimum=4)
        check_int(self.synthetic_size, "synthetic_size", minimum=16)
        check_bool(self.skip_bad, "skip_bad")

    def replace(self, **changes: Any) -> PredictorData:
        """A copy with ``changes`` applied and validated."""
        _check_names(type(self), changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON / YAML-ready dict."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PredictorData:
        """Build from :meth:`to_dict`'s output or a YAML mapping (missing keys take the defaults)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"Data settings must be a mapping, got {type(data).__name__}.")
        _check_names(cls, data)
        return cls(**dict(data))

    def datamodule_kwargs(self, image_size: int) -> dict[str, Any]:
        """Keyword arguments of :class:`~qg_lightning.data.SemiSupervisedDataModule` (and
        :class:`~qg_lightning.quality.QualityDataModule`) for these images at ``image_size``."""
        return {
            "root": self.root,
            "synthetic_images": self.synthetic_images,
            "synthetic_size": self.synthetic_size,
            "split_file": self.split_file,
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "image_size": image_size,
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
            "n_labeled": self.n_labeled,
            "labeled_fraction": self.labeled_fraction,
            "seed": self.split_seed,
            "skip_bad": self.skip_bad,
            "mask_dir": self.mask_dir,
        }


def _check_names(cls: type, changes: Mapping[str, Any]) -> None:
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(changes) - set(names))
    if unknown:
        raise ValueError(f"Unknown {cls.__name__} field(s) {unknown}; the fields are {names}.")


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def fingerprint(values: Mapping[str, Any]) -> str:
    """A 16-hex-digit hash of a JSON-ready mapping (key order does not matter).

    Example:
        >>> fingerprint({"a": 1, "b": [2]}) == fingerprint({"b": [2], "a": 1})
        True
    """
    text = json.dumps(_plain_tree(values), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _plain_tree(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_tree(v) for v in value]
    return value


#: recipe fields each training stage depends on (a stage also depends on every earlier stage)
_STAGE_RECIPE_FIELDS: dict[str, tuple[str, ...]] = {
    "snapshots": (
        "snapshot_folds",
        "snapshot_models",
        "snapshot_epochs",
        "snapshot_label_fraction",
        "snapshot_batch_size",
        "snapshot_lr",
        "image_size",
        "snapshot_seed",
    ),
    "predictor": (
        "seed",
        "p_weak",
        "snapshot_policy",
        "snapshot_threshold",
        "error_map_weight",
        "backbone",
        "pretrained",
        "samples_per_image",
        "batch_size",
        "max_epochs",
        "patience",
        "max_minutes",
        "channels_last",
    ),  # fmt: skip
    "calibration": ("calibration",),
    "report": ("eval_candidates_per_image", "tta"),
}
STAGES: tuple[str, ...] = ("split", *_STAGE_RECIPE_FIELDS)


def stage_fields(
    stage: str, recipe: PredictorRecipe, data: PredictorData, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The settings a stage's cached output depends on: the data and the recipe fields of this stage and of
    every earlier one (``split`` < ``snapshots`` < ``predictor`` < ``calibration`` < ``report``), plus
    ``extra``. ``data.mask_dir`` is left out at its default (``masks``), so that runs cached before the field
    existed still match; any other mask folder is part of every stage's settings. A recipe's ``init_from``
    enters the predictor stage and later ones as the checkpoint's SHA-256 (the weights, not the path).

    Example:
        >>> sorted(stage_fields("split", PredictorRecipe(), PredictorData()))[:3]
        ['data.in_channels', 'data.labeled_fraction', 'data.n_labeled']
        >>> "recipe.p_weak" in stage_fields("snapshots", PredictorRecipe(), PredictorData())
        False
    """
    if stage not in STAGES:
        raise ValueError(f"`stage` must be one of {STAGES}, got {stage!r}.")
    out: dict[str, Any] = {f"data.{k}": v for k, v in data.to_dict().items()}
    if data.mask_dir == "masks":  # the default is left out: runs cached before `mask_dir` existed still match
        del out["data.mask_dir"]
    if data.root is not None:  # where the images are, not how the path was spelt
        out["data.root"] = str(Path(data.root).expanduser().resolve())
    if data.split_file is not None:
        out["data.split_file_sha256"] = _file_hash(Path(data.split_file).expanduser())
    recipe_dict = recipe.to_dict()
    for name in STAGES[1 : STAGES.index(stage) + 1]:
        out.update({f"recipe.{k}": recipe_dict[k] for k in _STAGE_RECIPE_FIELDS[name]})
    if "recipe.snapshot_seed" in out:  # the seed the weak models use, whichever field gave it
        out["recipe.snapshot_seed"] = recipe.weak_model_seed
    if recipe.init_from is not None and STAGES.index(stage) >= STAGES.index("predictor"):
        out["recipe.init_from_sha256"] = _file_hash(recipe.init_checkpoint())  # the weights, not the path
    out.update(dict(extra or {}))
    return out


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]

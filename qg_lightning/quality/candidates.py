"""Candidate masks with known truth for evaluating a quality predictor: synthetic draws of the corruption
recipe and the hard masks of real segmentation models (``--segmenter`` checkpoints).

:func:`make_candidate_set` builds a :class:`CandidateSet` from images and truths (e.g. from
:func:`load_evaluation_images`); :func:`~qg_lightning.quality.evaluation.evaluate_candidate_set` scores a
predictor on it. :func:`load_segmenter` reads a segmentation checkpoint back safely and
:func:`segment_images` runs it. Everything here is re-exported by :mod:`qg_lightning.quality.evaluation`.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from qg_lightning._validation import check_int
from qg_lightning.checkpoint import load_checkpoint
from qg_lightning.masks import foreground_from_labels, labels_from_logits
from qg_lightning.quality.sampling import CorruptionSampler

__all__ = [
    "SYNTHETIC",
    "CandidateSet",
    "load_evaluation_images",
    "load_segmenter",
    "make_candidate_set",
    "segment_images",
]

#: Source label of candidates made by the corruption recipe; any other label names a real segmentation model.
SYNTHETIC = "synthetic"


# ------------------------------------------------------------------------------------------ image helpers
def module_device(module: nn.Module) -> torch.device:
    """Device of the module's first parameter or buffer (CPU for a module without any)."""
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def as_float_images(images: Tensor) -> Tensor:
    """Float images in [0, 1] from ``uint8`` (divided by 255) or float images (as they are)."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


def check_images(images: Any, name: str = "images") -> Tensor:
    """``images`` if it is an ``(N, C, H, W)`` tensor; a ValueError naming ``name`` otherwise."""
    if not isinstance(images, Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"`{name}` must be a tensor (N, C, H, W), float in [0, 1] or uint8, got {shape}.")
    return images


# --------------------------------------------------------------------------------------- segmenters
@torch.no_grad()
def segment_images(
    net: nn.Module, images: Tensor, num_classes: int, *, batch_size: int = 16
) -> tuple[Tensor, np.ndarray, np.ndarray]:
    """Hard masks of a segmentation network and its per-image confidence baselines.

    Args:
        net: logits network (1 channel for binary, K otherwise), e.g. a segmenter's ``evaluation_network()``.
        images: ``(N, C, H, W)`` float in [0, 1] or ``uint8``.
        num_classes: K (2 = binary).
        batch_size: images per forward pass.

    Returns:
        ``(masks, max_probability, entropy)``: ``uint8 (N, K-1, H, W)`` hard foreground masks (threshold 0.5 /
        argmax), the mean over pixels of the winning class probability, and the mean pixel entropy in nats
        (over the K classes, background included).

    Example:
        >>> from qg_lightning.methods import build_segmenter
        >>> net = build_segmenter(in_channels=3, num_classes=2).eval()
        >>> masks, conf, ent = segment_images(net, torch.rand(2, 3, 32, 32), 2)
        >>> masks.shape, masks.dtype, conf.shape, bool(((conf >= 0.5) & (conf <= 1)).all())
        (torch.Size([2, 1, 32, 32]), torch.uint8, (2,), True)
    """
    check_images(images)
    device = module_device(net)
    was_training = net.training
    net.eval()
    masks, conf, ent = [], [], []
    try:
        for start in range(0, images.shape[0], batch_size):
            x = as_float_images(images[start : start + batch_size].to(device))
            logits = net(x).float()
            if logits.shape[1] == 1:
                p = torch.sigmoid(logits)
                probs = torch.cat([1 - p, p], dim=1)
            else:
                probs = torch.softmax(logits, dim=1)
            labels = labels_from_logits(logits, num_classes)
            masks.append(foreground_from_labels(labels, num_classes).to(torch.uint8).cpu())
            conf.append(probs.amax(dim=1).flatten(1).mean(1).cpu())
            ent.append((-(probs * probs.clamp_min(1e-12).log()).sum(1)).flatten(1).mean(1).cpu())
    finally:
        net.train(was_training)
    if not masks:
        empty = np.zeros(0)
        return torch.zeros((0, num_classes - 1, *images.shape[2:]), dtype=torch.uint8), empty, empty
    return torch.cat(masks), torch.cat(conf).double().numpy(), torch.cat(ent).double().numpy()


def _segmenter_classes() -> dict[str, type]:
    from qg_lightning import methods
    from qg_lightning.methods import SupervisedSegmenter

    out = {}
    for name in methods.__all__:
        obj = getattr(methods, name)
        if isinstance(obj, type) and issubclass(obj, SupervisedSegmenter):
            out[name] = obj
    return out


def load_segmenter(
    path: str | os.PathLike,
    *,
    in_channels: int | None = None,
    num_classes: int | None = None,
    map_location: str = "cpu",
) -> nn.Module:
    """The evaluation network of a segmentation checkpoint, in eval mode and frozen (``weights_only=True``).

    Accepts Lightning checkpoints of :class:`~qg_lightning.methods.SupervisedSegmenter` and of every host in
    :mod:`qg_lightning.methods` (the class is looked up by the name in the ``_class_path`` hyper-parameter the
    CLI records, only among those classes: nothing else is imported), plain ``{"state_dict",
    "hyper_parameters"}`` dicts of them, and snapshot files of
    :class:`~qg_lightning.quality.SnapshotCallback`.
    A checkpoint of another (custom) subclass is read as a ``SupervisedSegmenter``: only its ``model.*``
    weights are used, with a warning.

    Args:
        path: checkpoint file.
        in_channels: image channels of the data; must match the checkpoint.
        num_classes: K of the data; must match the checkpoint.
        map_location: device of the returned network.

    Returns:
        The network (``images [0, 1] (B, C, H, W) -> logits``), eval mode, ``requires_grad=False``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not a segmentation checkpoint, or ``in_channels`` / ``num_classes`` mismatch (named).

    Example:
        >>> import tempfile, pathlib
        >>> from qg_lightning.methods import SupervisedSegmenter
        >>> m = SupervisedSegmenter(in_channels=1)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     p = pathlib.Path(tmp) / "seg.ckpt"
        ...     torch.save({"state_dict": m.state_dict(), "hyper_parameters": dict(m.hparams)}, p)
        ...     net = load_segmenter(p, in_channels=1, num_classes=2)
        >>> type(net).__name__, net.training
        ('SegmentationNet', False)
    """
    from qg_lightning.methods import SupervisedSegmenter
    from qg_lightning.quality.snapshots import SNAPSHOT_FORMAT, load_snapshot

    ckpt = load_checkpoint(path, map_location="cpu", what="segmentation checkpoint")
    if ckpt.get("format") == SNAPSHOT_FORMAT:
        return load_snapshot(path, in_channels=in_channels, num_classes=num_classes).net.to(map_location)
    hparams = ckpt.get("hyper_parameters")
    state = ckpt.get("state_dict")
    hparams = dict(hparams) if isinstance(hparams, Mapping) else {}
    if not isinstance(state, Mapping) or not {"arch", "encoder_name"} <= set(hparams):
        kind = "a quality predictor" if "backbone" in hparams else "not a segmentation model"
        raise ValueError(
            f"'{path}' is not a segmentation checkpoint (it is {kind}: expected hyper-parameters 'arch' and "
            "'encoder_name' and a 'state_dict'). Pass checkpoints of qg_lightning segmenters "
            "(SupervisedSegmenter or an SSL host) or snapshot files to --segmenter."
        )
    ckpt_in, ckpt_k = hparams.get("in_channels", 3), hparams.get("num_classes", 2)
    problems = []
    if in_channels is not None and ckpt_in != in_channels:
        problems.append(f"in_channels={ckpt_in} but the data/predictor use in_channels={in_channels}")
    if num_classes is not None and ckpt_k != num_classes:
        problems.append(f"num_classes={ckpt_k} but the data/predictor use num_classes={num_classes}")
    if problems:
        raise ValueError(
            f"Segmentation checkpoint '{path}' does not fit: {'; '.join(problems)}. Use a segmenter "
            "trained on this kind of data (same image channels and classes)."
        )
    class_path = hparams.get("_class_path")
    classes = _segmenter_classes()
    name = class_path.rsplit(".", 1)[-1] if isinstance(class_path, str) else "SupervisedSegmenter"
    known = isinstance(class_path, str) and class_path.startswith("qg_lightning.") and name in classes
    cls = classes[name] if known else SupervisedSegmenter
    params = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in hparams.items() if k in params and k != "self" and not k.startswith("_")}
    kwargs["encoder_weights"] = None
    module = cls(**kwargs)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        model_state = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
        if known or not model_state:
            raise ValueError(
                f"Could not load the weights of segmentation checkpoint '{path}': {err}"
            ) from None
        try:
            module.model.load_state_dict(model_state, strict=True)
        except RuntimeError as err2:
            raise ValueError(
                f"Could not load the weights of segmentation checkpoint '{path}': {err2}"
            ) from None
        rank_zero_warn(
            f"Segmentation checkpoint '{path}' is of class {class_path or 'unknown'}; using its 'model.*' "
            "network as the evaluation network."
        )
    net = module.evaluation_network()
    return net.to(map_location).eval().requires_grad_(False)


# ------------------------------------------------------------------------------------------- candidates
@dataclass(frozen=True)
class CandidateSet:
    """Candidate masks with known truth, ready for :func:`~qg_lightning.quality.evaluation.evaluate_predictor`
    (see :func:`make_candidate_set`).

    Attributes:
        images: ``uint8 (N, C, H, W)`` one per image.
        truths: ``uint8 (N, K-1, H, W)`` ground-truth foreground masks.
        candidates: ``uint8 (M, K-1, H, W)`` candidate masks.
        image_index: ``long (M,)`` image of each candidate.
        sources: ``(M,)`` ``"synthetic"`` or the segmenter's name.
        categories: ``(M,)`` corruption category of synthetic candidates (None for real ones).
        corruptions: ``(M,)`` corruption name of synthetic candidates (None for real ones).
        ids: ``(M,)`` image id of each candidate.
        segmenter_scores: ``{"max_probability": (M,), "entropy": (M,)}`` (NaN for synthetic candidates), or
            None without segmenters.
    """

    images: Tensor
    truths: Tensor
    candidates: Tensor
    image_index: Tensor
    sources: list[str]
    categories: list[str | None]
    corruptions: list[str | None]
    ids: list[str]
    segmenter_scores: dict[str, np.ndarray] | None


def load_evaluation_images(
    index: Any, ids: Sequence[str], *, image_size: int, in_channels: int, num_classes: int
) -> tuple[Tensor, Tensor]:
    """Images ``uint8 (N, C, S, S)`` and truths ``uint8 (N, K-1, S, S)`` of ``ids`` from a
    :class:`~qg_lightning.data.folder.FolderIndex` (e.g. ``SemiSupervisedDataModule.index`` after ``setup``)."""
    from qg_lightning.quality.datamodule import load_resized

    images_u8, labels = load_resized(
        [index.image_paths[i] for i in ids],
        [index.mask_paths[i] for i in ids],
        size=image_size,
        in_channels=in_channels,
        num_classes=num_classes,
        decoded=index.decoded,
    )
    if labels is None:  # cannot happen: mask paths were given
        raise RuntimeError("load_resized returned no masks.")
    return images_u8, foreground_from_labels(labels.long(), num_classes).to(torch.uint8)


def make_candidate_set(
    images: Tensor,
    truths: Tensor,
    ids: Sequence[str],
    *,
    segmenters: Mapping[str, nn.Module] | None = None,
    num_classes: int = 2,
    candidates_per_image: int = 5,
    seed: int = 0,
    batch_size: int = 32,
) -> CandidateSet:
    """Synthetic candidates (``candidates_per_image`` draws of the corruption recipe per image, seeded by
    ``seed``) and each segmenter's hard masks of the same images, what ``qg-lightning evaluate-predictor``
    scores.

    Args:
        images: ``uint8 (N, C, H, W)`` images.
        truths: ``uint8 (N, K-1, H, W)`` ground-truth foreground masks.
        ids: ``(N,)`` image ids.
        segmenters: name -> logits network (e.g. :func:`load_segmenter`); their masks are "real" candidates.
        num_classes: K (2 = binary).
        candidates_per_image: synthetic candidates per image (0: real ones only).
        seed: seed of the synthetic draws.
        batch_size: images per segmenter forward pass.

    Raises:
        ValueError: no candidates at all, or ``candidates_per_image`` below 0.

    Example:
        >>> truths = torch.zeros(3, 1, 32, 32, dtype=torch.uint8); truths[:, :, 8:24, 8:24] = 1
        >>> images = torch.zeros(3, 3, 32, 32, dtype=torch.uint8)
        >>> cs = make_candidate_set(images, truths, ["a", "b", "c"], candidates_per_image=2)
        >>> cs.candidates.shape, cs.ids[:4], cs.sources[0]
        (torch.Size([6, 1, 32, 32]), ['a', 'b', 'c', 'a'], 'synthetic')
    """
    from qg_lightning.data import derive_seed

    segmenters = dict(segmenters or {})
    check_int(candidates_per_image, "candidates_per_image", minimum=0)
    if candidates_per_image == 0 and not segmenters:
        raise ValueError("Nothing to evaluate: `candidates_per_image` is 0 and no segmenter was given.")
    n = len(ids)
    cands, img_idx, sources, cats, names = [], [], [], [], []
    conf, ent = [], []
    if candidates_per_image:
        sampler = CorruptionSampler()
        g = torch.Generator().manual_seed(derive_seed(seed, 22))
        for _ in range(candidates_per_image):
            result = sampler(truths, generator=g)
            cands.append(result.masks.to(torch.uint8))
            img_idx.append(torch.arange(n))
            sources += [SYNTHETIC] * n
            cats += result.category_names
            names += list(result.name)
            conf.append(np.full(n, np.nan))
            ent.append(np.full(n, np.nan))
    for name, net in segmenters.items():
        masks, c, e = segment_images(net, images, num_classes, batch_size=batch_size)
        cands.append(masks)
        img_idx.append(torch.arange(n))
        sources += [name] * n
        cats += [None] * n
        names += [None] * n
        conf.append(c)
        ent.append(e)
    image_index = torch.cat(img_idx)
    scores = {"max_probability": np.concatenate(conf), "entropy": np.concatenate(ent)} if segmenters else None
    return CandidateSet(
        images=images,
        truths=truths,
        candidates=torch.cat(cands),
        image_index=image_index,
        sources=sources,
        categories=cats,
        corruptions=names,
        ids=[ids[i] for i in image_index.tolist()],
        segmenter_scores=scores,
    )

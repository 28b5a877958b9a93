"""The study's method registry: each method is a reference host plus optional quality guidance."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, get_args

from qg_lightning.guidance.functional import check_class_reduction

log = logging.getLogger(__name__)

Guidance = Literal["qw", "qar"]
Views = Literal["weak", "weak_strong"]
ClassReduction = Literal["mean", "min", "product"]


@dataclass(frozen=True)
class MethodSpec:
    """How one method of the study is built: a host from :mod:`qg_lightning.methods`, its settings, and the
    quality guidance (if any) attached through :class:`~qg_lightning.guidance.QualityReweightCallback`.

    Attributes:
        name: the method's name in tables (``"PL-QW"``).
        host: class name in :mod:`qg_lightning.methods` (``"PseudoLabelSegmenter"``).
        host_kwargs: host arguments specific to the method (e.g. ``{"weighting": "confidence"}``); the study
            adds the shared ones (architecture, optimiser, schedules).
        guidance: ``None`` (plain), ``"qw"`` (quality-weighted unsupervised loss) or ``"qar"`` (QAR).
        use_unlabeled: ``False`` for the supervised-only floor.
        unlabeled_views: ``"weak"`` or ``"weak_strong"`` (FixMatch / Mean Teacher students see a strong view).
        description: one line for the results.
        needs_true_masks: analysis-only methods that read the hidden masks of the unlabeled images
            (PL-oracle); skipped, with a note, when the unlabeled images have no masks.
        class_reduction: guided multi-class methods: how per-class qualities become one sample quality
            (``"mean"``, ``"min"`` or ``"product"``; :class:`~qg_lightning.guidance.QualityReweightCallback`).
    """

    name: str
    host: str
    host_kwargs: Mapping[str, Any] = field(default_factory=dict)
    guidance: Guidance | None = None
    use_unlabeled: bool = True
    unlabeled_views: Views = "weak"
    description: str = ""
    needs_true_masks: bool = False
    class_reduction: ClassReduction = "mean"

    def __post_init__(self) -> None:
        check_class_reduction(self.class_reduction, name=f"class_reduction` of method `{self.name}")
        if self.guidance not in (None, *get_args(Guidance)):
            raise ValueError(
                f"`guidance` of method {self.name!r} must be None, 'qw' or 'qar', got {self.guidance!r}."
            )
        if self.unlabeled_views not in get_args(Views):
            raise ValueError(
                f"`unlabeled_views` of method {self.name!r} must be 'weak' or 'weak_strong', "
                f"got {self.unlabeled_views!r}."
            )


def _spec(
    name: str,
    host: str,
    description: str,
    guidance: Guidance | None = None,
    views: Views = "weak",
    use_unlabeled: bool = True,
    needs_true_masks: bool = False,
    class_reduction: ClassReduction = "mean",
    **host_kwargs: Any,
) -> MethodSpec:
    return MethodSpec(
        name,
        host,
        MappingProxyType(dict(host_kwargs)),
        guidance,
        use_unlabeled,
        views,
        description,
        needs_true_masks,
        class_reduction,
    )


#: The method registry (read-only). Pass your own mapping to :func:`run_study` to add methods.
METHODS: Mapping[str, MethodSpec] = MappingProxyType(
    {
        "SUP": _spec(
            "SUP", "SupervisedSegmenter", "supervised only (labeled images), the floor", use_unlabeled=False
        ),
        "PL": _spec(
            "PL",
            "PseudoLabelSegmenter",
            "EMA-teacher pseudolabels, every pseudolabel counts",
            weighting="none",
        ),
        "PL-T": _spec(
            "PL-T",
            "PseudoLabelSegmenter",
            "pseudolabels, pixels with teacher confidence >= 0.9",
            weighting="threshold",
        ),
        "PL-C": _spec(
            "PL-C",
            "PseudoLabelSegmenter",
            "pseudolabels weighted by mean teacher confidence",
            weighting="confidence",
        ),
        "PL-QW": _spec(
            "PL-QW",
            "PseudoLabelSegmenter",
            "pseudolabels weighted by predicted quality (the method)",
            guidance="qw",
            weighting="none",
        ),
        "PL-QW-min": _spec(
            "PL-QW-min",
            "PseudoLabelSegmenter",
            "PL-QW, a sample's quality = its worst class's (multi-class; same as PL-QW for binary masks)",
            guidance="qw",
            class_reduction="min",
            weighting="none",
        ),
        "PL-QW-product": _spec(
            "PL-QW-product",
            "PseudoLabelSegmenter",
            "PL-QW, a sample's quality = the product of its classes' (multi-class; same as PL-QW for binary)",
            guidance="qw",
            class_reduction="product",
            weighting="none",
        ),
        "PL-oracle": _spec(
            "PL-oracle",
            "PseudoLabelSegmenter",
            "pseudolabels weighted by their TRUE Dice (analysis only: the ceiling of the weighting)",
            needs_true_masks=True,
            weighting="oracle",
        ),
        "QAR": _spec(
            "QAR",
            "QARSegmenter",
            "supervised + quality-aware regularisation on unlabeled images",
            guidance="qar",
            unsup_weight=0.0,
        ),
        "MT": _spec(
            "MT",
            "MeanTeacherSegmenter",
            "Mean Teacher consistency (weak -> strong view)",
            views="weak_strong",
        ),
        "MT-QW": _spec(
            "MT-QW",
            "MeanTeacherSegmenter",
            "Mean Teacher, consistency weighted by predicted quality",
            guidance="qw",
            views="weak_strong",
        ),
        "FixMatch": _spec(
            "FixMatch", "FixMatchSegmenter", "FixMatch weak-to-strong pseudolabels", views="weak_strong"
        ),
        "FixMatch-QW": _spec(
            "FixMatch-QW",
            "FixMatchSegmenter",
            "FixMatch, pseudolabels weighted by predicted quality",
            guidance="qw",
            views="weak_strong",
        ),
        "CPS": _spec("CPS", "CPSSegmenter", "cross pseudo supervision (two networks)"),
        "CPS-QW": _spec(
            "CPS-QW", "CPSSegmenter", "CPS, pseudolabels weighted by predicted quality", guidance="qw"
        ),
    }
)

#: The default method set of the study: the floor, plain pseudo-labelling and its two confidence baselines, the
#: two mechanisms, the oracle ceiling of the weighting (skipped where the unlabeled images have no masks), and
#: Mean Teacher with and without quality weights. FixMatch, CPS and their -QW variants are in the registry.
DEFAULT_METHODS: tuple[str, ...] = (
    "SUP",
    "PL",
    "PL-T",
    "PL-C",
    "PL-QW",
    "PL-oracle",
    "QAR",
    "MT",
    "MT-QW",
)

#: ``(plain host, guided variant)`` pairs compared over seeds; PL-C -> PL-QW is the key comparison.
PAIRS: tuple[tuple[str, str], ...] = (
    ("PL-C", "PL-QW"),
    ("PL-T", "PL-QW"),
    ("PL", "PL-QW"),
    ("PL-C", "PL-QW-min"),
    ("PL-C", "PL-QW-product"),
    ("SUP", "QAR"),
    ("MT", "MT-QW"),
    ("FixMatch", "FixMatch-QW"),
    ("CPS", "CPS-QW"),
)

"""Build a Lightning module inside other code as if it were built on its own."""

from __future__ import annotations

import contextvars
from typing import Any, TypeVar

T = TypeVar("T")


def standalone(cls: type[T], **kwargs: Any) -> T:
    """``cls(**kwargs)``, with ``save_hyperparameters()`` in its ``__init__`` recording its own arguments only.

    Lightning's ``save_hyperparameters()`` walks up every ``__init__`` frame of a module, so a module built
    inside another module's ``__init__`` also records the enclosing module's arguments. Under LightningCLI it
    records, instead of its own arguments, the configuration of the module the CLI is instantiating (the CLI
    hands that configuration down through a context variable), so that its own hyper-parameters are missing.
    This function's frame ends the walk, and the call runs in an empty ``contextvars.Context``.

    Example:
        >>> from qg_lightning.quality import QualityPredictor
        >>> standalone(QualityPredictor, backbone="resnet18", num_classes=3).hparams["num_classes"]
        3
    """
    return contextvars.Context().run(cls, **kwargs)

"""``standalone``: a module built inside other code records its own hyper-parameters only."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters_context

from qg_lightning._standalone import standalone


class Inner(L.LightningDataModule):
    def __init__(self, size: int = 8, cache: bool = True) -> None:
        super().__init__()
        self.save_hyperparameters()


class Outer(L.LightningDataModule):
    def __init__(self, size: int = 32, epochs: int = 3, use_standalone: bool = True) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.inner = standalone(Inner, cache=False) if use_standalone else Inner(cache=False)


def test_nested_module_records_only_its_own_arguments() -> None:
    outer = Outer(size=16)
    assert dict(outer.inner.hparams) == {"size": 8, "cache": False}
    assert dict(outer.hparams) == {"size": 16, "epochs": 3, "use_standalone": True}
    plain = Outer(size=16, use_standalone=False).inner.hparams  # what Lightning alone does
    assert plain["size"] == 16 and "epochs" in plain


def test_under_lightning_cli_the_outer_configuration_is_not_taken() -> None:
    """LightningCLI hands the configuration of the module it instantiates down through a context variable."""
    config = {"size": 64, "epochs": 5, "use_standalone": True, "_class_path": "tests.Outer"}
    with _given_hyperparameters_context(config, "lightning.pytorch.cli.instantiate_module"):
        outer = Outer(size=64, epochs=5)
    assert outer.hparams["_class_path"] == "tests.Outer"  # the CLI-built module keeps the CLI's record
    assert dict(outer.inner.hparams) == {"size": 8, "cache": False}

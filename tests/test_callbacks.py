"""ExactResume (random-number-generator states in checkpoints) and ModelCheckpoint (last.ckpt always latest)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from qg_lightning.callbacks import ExactResume, ModelCheckpoint, rng_state, set_rng_state
from qg_lightning.checkpoint import load_checkpoint


class NoisyModule(L.LightningModule):
    """Uses the global torch RNG in every step (dropout + noise), like user code might."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.dropout = torch.nn.Dropout(0.5)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        x = x + 0.1 * torch.randn_like(x)
        return self.dropout(self.layer(x)).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        (x,) = batch
        self.log("val/score", -self.layer(x).pow(2).mean())  # higher is better: decreases as it trains

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader() -> DataLoader:
    # an explicit generator, as qg_lightning's data modules use: a loader without one draws its base seed
    # from the global RNG each time an iterator is created, at points Lightning schedules differently when
    # it resumes
    data = TensorDataset(torch.linspace(-1, 1, 32).reshape(8, 4))
    return DataLoader(data, batch_size=2, generator=torch.Generator().manual_seed(0))


def _trainer(tmp: Path, epochs: int, callbacks: list) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp,
        callbacks=callbacks,
    )


def _fit(tmp: Path, epochs: int, *, exact: bool, ckpt: str | None = None) -> torch.Tensor:
    torch.manual_seed(0)
    model = NoisyModule()
    callbacks: list = [ModelCheckpoint(dirpath=tmp / "ckpt", save_last=True, monitor="val/score", mode="max")]
    if exact:
        callbacks.append(ExactResume())
    torch.manual_seed(123 if ckpt else 0)  # a resumed process starts from some other RNG state
    _trainer(tmp, epochs, callbacks).fit(model, _loader(), _loader(), ckpt_path=ckpt, weights_only=True)
    return model.layer.weight.detach().clone()


@pytest.mark.parametrize("exact", [True, False])
def test_resume_continues_the_random_stream_only_with_exact_resume(tmp_path: Path, exact: bool) -> None:
    reference = _fit(tmp_path / "a", 3, exact=exact)
    _fit(tmp_path / "b", 1, exact=exact)
    resumed = _fit(tmp_path / "b", 3, exact=exact, ckpt=str(tmp_path / "b" / "ckpt" / "last.ckpt"))
    assert torch.equal(resumed, reference) is exact


def test_rng_state_is_weights_only_loadable_and_restores_every_generator(tmp_path: Path) -> None:
    import random

    state = rng_state()
    torch.save(state, tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2] == again[2]


def test_last_ckpt_is_rewritten_even_when_the_monitored_value_does_not_improve(tmp_path: Path) -> None:
    class Worsening(NoisyModule):
        def validation_step(self, batch, batch_idx):
            self.log("val/score", -float(self.current_epoch))  # best at epoch 0, worse afterwards

    model = Worsening()
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True, monitor="val/score", mode="max")
    _trainer(tmp_path, 3, [checkpoint]).fit(model, _loader(), _loader())
    assert load_checkpoint(tmp_path / "last.ckpt")["global_step"] == 12  # not 4 (the best epoch)
    assert load_checkpoint(checkpoint.best_model_path)["global_step"] == 4

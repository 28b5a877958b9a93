import inspect
from pathlib import Path

import lightning as L
import pytest
import torch

from qg_lightning.data import DataValidationError, SemiSupervisedDataModule, generate_synthetic_dataset
from qg_lightning.masks import foreground_from_labels
from qg_lightning.methods import SupervisedSegmenter
from qg_lightning.quality.augment import quantized_normal_
from qg_lightning.quality.datamodule import QUALITY_CATEGORIES, QualityDataModule
from qg_lightning.quality.predictor import QualityPredictor
from qg_lightning.quality.sampling import dice_target
from qg_lightning.quality.snapshots import (
    SnapshotCallback,
    find_snapshots,
    load_snapshot,
    threshold_snapshot_probs,
)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return generate_synthetic_dataset(tmp_path_factory.mktemp("syn"), n_images=30, image_size=32, seed=5)


def _qdm(root, **kw):
    args = dict(
        root=str(root), image_size=32, samples_per_image=3, batch_size=8, p_weak=0.0, labeled_fraction=0.5
    )
    args.update(kw)
    return QualityDataModule(**args)


def test_split_matches_semi_supervised_datamodule(root):
    qdm = _qdm(root)
    qdm.setup("fit")
    ssl = SemiSupervisedDataModule(root=str(root), image_size=32, labeled_fraction=0.5)
    ssl.setup("fit")
    assert qdm.split == ssl.split
    assert qdm.train_ids == list(ssl.split.labeled)
    # the predictor never trains on validation/test images
    assert not set(qdm.train_ids) & (set(ssl.split.val) | set(ssl.split.test))


def test_inner_folder_module_records_only_its_own_arguments(root):
    """Lightning's ``save_hyperparameters`` would also take the enclosing ``__init__``'s arguments."""
    qdm = _qdm(root, batch_size=16)
    own = set(inspect.signature(SemiSupervisedDataModule.__init__).parameters) - {"self"}
    assert set(qdm.source.hparams) == own
    assert qdm.source.hparams["batch_size"] == 8  # its default, not the quality module's 16
    assert qdm.source.hparams["use_unlabeled"] is False and qdm.hparams["batch_size"] == 16


def test_training_batches_are_seeded_and_consistent(root):
    qdm = _qdm(root)
    qdm.setup("fit")
    raw = next(iter(qdm.train_dataloader()))
    a = qdm.make_training_batch(raw, generator=torch.Generator().manual_seed(3))
    b = qdm.make_training_batch(raw, generator=torch.Generator().manual_seed(3))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert a["image"].shape == (8, 3, 32, 32) and a["candidate"].shape == (8, 1, 32, 32)
    assert a["quality"].shape == (8, 1) and ((a["quality"] >= 0) & (a["quality"] <= 1)).all()
    assert set(a["candidate"].unique().tolist()) <= {0.0, 1.0}
    # the (augmented) truth travels with the batch and gives exactly the quality targets
    assert a["truth"].shape == a["candidate"].shape
    assert torch.allclose(dice_target(a["candidate"], a["truth"]), a["quality"])
    assert len(qdm.train_dataloader()) == len(qdm.train_ids) * 3 // 8
    # the cache and the gathered batch are channels-last (fast warps); what comes out is plain contiguous
    assert raw["image_u8"].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(raw["image_u8"], qdm.train_data["images"][raw["index"]])
    assert a["image"].is_contiguous() and a["image"].dtype == torch.float32


def test_noise_bank_is_reused_for_noise_reuse_batches_and_seeded(root):
    qdm = _qdm(root, noise_reuse=3)
    qdm.setup("fit")
    shape = torch.Size([8, 3, 32, 32])
    banks, pointers = [], []
    for index in range(7):
        noise = qdm._noise(shape, torch.device("cpu"), torch.Generator().manual_seed(index), index)
        assert noise.shape == shape
        banks.append(qdm._noise_bank.clone())
        pointers.append(qdm._noise_bank.data_ptr())
    assert torch.equal(banks[0], banks[2]) and torch.equal(banks[3], banks[5])
    assert not torch.equal(banks[2], banks[3]) and not torch.equal(banks[5], banks[6])
    assert banks[0].numel() == 2 * shape.numel()
    # a redraw refills the same memory (no new allocation) with the values a fresh draw would give
    assert len(set(pointers)) == 1
    for index in (0, 3, 6):
        fresh = quantized_normal_(
            torch.empty(2 * shape.numel()), generator=torch.Generator().manual_seed(index)
        )
        assert torch.equal(banks[index], fresh)
    # redrawn from the batch's own generator: the same index and seed give the same bank
    qdm._noise(shape, torch.device("cpu"), torch.Generator().manual_seed(3), 3)
    assert torch.equal(qdm._noise_bank, banks[3])
    assert abs(float(banks[0].mean())) < 0.05 and abs(float(banks[0].std()) - 1) < 0.05
    # through make_training_batch: same raw batch, generator and index give the same images
    raw = next(iter(qdm.train_dataloader()))
    a = qdm.make_training_batch(raw, generator=torch.Generator().manual_seed(1), batch_index=4)
    b = qdm.make_training_batch(raw, generator=torch.Generator().manual_seed(1), batch_index=4)
    assert torch.equal(a["image"], b["image"])
    # a redraw for a batch of another size gets a bank of its own size
    qdm._noise(torch.Size([4, 3, 32, 32]), torch.device("cpu"), torch.Generator().manual_seed(9), 9)
    assert qdm._noise_bank.numel() == 2 * 4 * 3 * 32 * 32


def test_noise_reuse_one_draws_fresh_noise_per_batch(root):
    qdm = _qdm(root, noise_reuse=1)
    qdm.setup("fit")
    shape = torch.Size([8, 3, 32, 32])
    banks, pointers = [], []
    for index in range(3):
        noise = qdm._noise(shape, torch.device("cpu"), torch.Generator().manual_seed(index), index)
        assert noise.data_ptr() == qdm._noise_bank.data_ptr()  # the whole bank, one batch's size
        banks.append(noise.clone())
        pointers.append(noise.data_ptr())
    assert len(set(pointers)) == 1 and qdm._noise_bank.numel() == shape.numel()
    assert not torch.equal(banks[0], banks[1]) and not torch.equal(banks[1], banks[2])
    fresh = quantized_normal_(torch.empty(shape), generator=torch.Generator().manual_seed(2))
    assert torch.equal(banks[2], fresh)
    raw = next(iter(qdm.train_dataloader()))
    batch = qdm.make_training_batch(raw, generator=torch.Generator().manual_seed(1))
    assert batch["image"].shape == (8, 3, 32, 32)


def test_eval_candidates_are_fixed_and_targets_correct(root):
    qdm = _qdm(root, eval_candidates_per_image=5)
    qdm.setup("fit")
    other = _qdm(root, eval_candidates_per_image=5)
    other.setup("fit")
    val = qdm.eval_data["val"]
    assert val["candidate_u8"].shape[0] == 5 * len(qdm.split.val)
    assert torch.equal(val["candidate_u8"], other.eval_data["val"]["candidate_u8"])
    truth = foreground_from_labels(val["labels"].long(), 2)
    assert torch.allclose(dice_target(val["candidate_u8"].float(), truth), val["quality"])
    batch = qdm.on_after_batch_transfer(next(iter(qdm.val_dataloader())), 0)
    assert batch["image"].dtype == torch.float32 and batch["image"].max() <= 1


def test_predict_returns_the_quality_of_every_test_candidate(root, tmp_path):
    """``predict`` (e.g. ``fit.py predict --ckpt_path ...``) scores the fixed test candidates, in order."""
    qdm = _qdm(root, eval_candidates_per_image=2)
    model = QualityPredictor(num_classes=2)
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )  # fmt: skip
    predicted = torch.cat(trainer.predict(model, datamodule=qdm))
    test = qdm.eval_data["test"]
    assert predicted.shape == (2 * len(qdm.split.test), 1) == test["quality"].shape
    batch = qdm.on_after_batch_transfer(next(iter(qdm.test_dataloader())), 0)
    model.eval()
    with torch.no_grad():
        expected = model(batch["image"], batch["candidate"])
    assert torch.allclose(predicted[: len(expected)], expected, atol=1e-6)


def test_invalid_arguments(root):
    with pytest.raises(ValueError, match="p_weak"):
        _qdm(root, p_weak=1.5)
    with pytest.raises(ValueError, match="snapshots"):
        _qdm(root, p_weak=0.5)
    with pytest.raises(ValueError, match="probs"):
        _qdm(root, category_probs={"identity": 0.5})
    with pytest.raises(ValueError, match="samples_per_image"):
        _qdm(root, samples_per_image=0)
    with pytest.raises(ValueError, match="noise_reuse"):
        _qdm(root, noise_reuse=0)
    with pytest.raises(ValueError, match="image_padding.*'reflect'"):
        _qdm(root, image_padding="reflect")
    with pytest.raises(ValueError, match="`channel_gain` must be"):
        _qdm(root, channel_gain=1.2)
    with pytest.raises(ValueError, match="`gamma` must be"):
        _qdm(root, gamma=-0.5)


def test_gamma_and_channel_gain_reach_the_photometric_jitter(root):
    """Off by default (the batch is unchanged); on, the images change and the masks and targets do not."""
    base = _qdm(root)
    base.setup("fit")
    raw = next(iter(base.train_dataloader()))
    plain = base.make_training_batch(raw, generator=torch.Generator().manual_seed(2))
    zero = _qdm(root, gamma=0.0, channel_gain=0.0)
    zero.setup("fit")
    assert torch.equal(
        zero.make_training_batch(raw, generator=torch.Generator().manual_seed(2))["image"], plain["image"]
    )
    warm = _qdm(root, gamma=0.3, channel_gain=0.2)
    warm.setup("fit")
    assert warm.hparams.gamma == 0.3 and warm.hparams.channel_gain == 0.2
    out = warm.make_training_batch(raw, generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(out["image"], plain["image"], atol=0.01)
    assert 0 <= float(out["image"].min()) and float(out["image"].max()) <= 1
    for key in ("candidate", "quality", "truth", "category"):
        assert torch.equal(out[key], plain[key]), key


def test_image_padding_reaches_the_warp(root):
    """Zero padding (default) blacks out what a rotation brings in from outside; ``border`` repeats edges."""
    raw = None
    out = {}
    for padding in ("zeros", "border"):
        qdm = _qdm(root, max_rotation=45.0, photometric=False, image_padding=padding)
        qdm.setup("fit")
        raw = raw if raw is not None else next(iter(qdm.train_dataloader()))
        raw["image_u8"][:] = 200  # a bright, flat image: only the padding can be dark
        out[padding] = qdm.make_training_batch(raw, generator=torch.Generator().manual_seed(0))["image"]
    assert qdm.hparams.image_padding == "border"
    assert torch.allclose(out["border"], torch.full_like(out["border"], 200 / 255))
    assert (out["zeros"] == 0).any() and (out["zeros"] == 0).float().mean() < 0.3


def test_snapshots_end_to_end(root, tmp_path):
    """Train a weak model with SnapshotCallback, then serve its masks as candidates."""
    dm = SemiSupervisedDataModule(root=str(root), image_size=32, labeled_fraction=0.5, use_unlabeled=False,
                                  batch_size=4)  # fmt: skip
    cb = SnapshotCallback(epochs=[1, 2], dirpath=str(tmp_path / "snaps"))
    trainer = L.Trainer(max_epochs=2, limit_train_batches=2, limit_val_batches=0, logger=False, callbacks=[cb], default_root_dir=str(tmp_path),
                        enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu")  # fmt: skip
    trainer.fit(SupervisedSegmenter(encoder_name="resnet18", lr=1e-3), datamodule=dm)
    files = find_snapshots(tmp_path / "snaps")
    assert [f.name for f in files] == ["snapshot_epoch001.pt", "snapshot_epoch002.pt"]
    snap = load_snapshot(files[0])
    assert snap.epoch == 1 and snap.train_ids == frozenset(dm.split.labeled)
    with pytest.raises(ValueError, match="num_classes"):
        load_snapshot(files[0], num_classes=3)

    # held-out policy: these snapshots trained on every labeled image, so none may be used
    with pytest.raises(ValueError, match="heldout"):
        _qdm(root, p_weak=1.0, snapshots=[str(tmp_path / "snaps")]).setup("fit")
    qdm = _qdm(root, p_weak=1.0, snapshots=[str(tmp_path / "snaps")], snapshot_policy="all")
    qdm.setup("fit")
    raw = next(iter(qdm.train_dataloader()))
    batch = qdm.make_training_batch(raw, generator=torch.Generator().manual_seed(0))
    assert (batch["category"] == QUALITY_CATEGORIES.index("snapshot")).all()


def _fold_snapshots(root, tmp_path, labeled_fraction: float) -> Path:
    """One weak model per fold (2 folds) of the labeled share, one snapshot each; returns their folder."""
    snaps = tmp_path / "snaps"
    for fold in range(2):
        dm = SemiSupervisedDataModule(root=str(root), image_size=32, labeled_fraction=labeled_fraction,
                                      use_unlabeled=False, batch_size=4, fold=fold, n_folds=2)  # fmt: skip
        trainer = L.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=0, logger=False,
                            default_root_dir=str(tmp_path / f"run{fold}"),
                            callbacks=[SnapshotCallback(epochs=[1], dirpath=str(snaps))], enable_checkpointing=False,
                            enable_progress_bar=False, accelerator="cpu")  # fmt: skip
        trainer.fit(SupervisedSegmenter(encoder_name="resnet18"), datamodule=dm)
        assert set(dm.training_labeled_ids) < set(dm.split.labeled)
    return snaps


def test_cross_fitted_snapshots_are_used_only_on_held_out_images(root, tmp_path):
    snaps = _fold_snapshots(root, tmp_path, labeled_fraction=0.5)
    files = find_snapshots(snaps)
    assert [f.name for f in files] == ["snapshot_fold0_epoch001.pt", "snapshot_fold1_epoch001.pt"]
    qdm = _qdm(root, p_weak=1.0, snapshots=[str(snaps)], snapshot_policy="heldout")
    qdm.setup("fit")
    allowed = qdm.train_data["allowed"]
    # every labeled image is held out by exactly one of the two fold models
    assert allowed.sum(1).tolist() == [1] * len(qdm.train_ids)
    for j, path in enumerate(files):
        trained = load_snapshot(path).train_ids
        assert all(
            (qdm.train_ids[i] not in trained) == bool(allowed[i, j]) for i in range(len(qdm.train_ids))
        )


def test_snapshots_on_a_smaller_label_budget_serve_every_image_they_did_not_train_on(root, tmp_path):
    """README recipe: snapshot folds on a third of the predictor's labels (same seed, so the subsets nest)."""
    snaps = _fold_snapshots(root, tmp_path, labeled_fraction=0.25)
    qdm = _qdm(root, p_weak=1.0, snapshots=[str(snaps)], snapshot_policy="heldout")  # labeled_fraction 0.5
    qdm.setup("fit")
    trained = [load_snapshot(path).train_ids for path in find_snapshots(snaps)]
    budget = frozenset().union(*trained)
    assert budget < set(qdm.train_ids)  # nested: the budget's images are all labeled for the predictor
    allowed = qdm.train_data["allowed"]
    for i, image_id in enumerate(qdm.train_ids):
        assert allowed[i].tolist() == [image_id not in ids for ids in trained]
    outside = [i for i, image_id in enumerate(qdm.train_ids) if image_id not in budget]
    assert outside and allowed[outside].all()  # images outside the budget get every snapshot


@pytest.fixture(scope="module")
def one_snapshot(root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("snap")
    dm = SemiSupervisedDataModule(root=str(root), image_size=32, labeled_fraction=0.5, use_unlabeled=False,
                                  batch_size=4)  # fmt: skip
    trainer = L.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=0, logger=False,
                        default_root_dir=str(tmp), callbacks=[SnapshotCallback(epochs=[1], dirpath=str(tmp / "s"))],
                        enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu")  # fmt: skip
    trainer.fit(SupervisedSegmenter(encoder_name="resnet18"), datamodule=dm)
    return str(tmp / "s")


def test_random_snapshot_thresholds_give_many_masks_per_snapshot(root, one_snapshot):
    kw = dict(p_weak=1.0, snapshots=[one_snapshot], snapshot_policy="all")
    soft = _qdm(root, snapshot_threshold=[0.2, 0.8], **kw)
    soft.setup("fit")
    assert soft.train_data["snapshots"].dtype == torch.uint8  # probabilities, quantised
    raw = next(iter(soft.train_dataloader()))
    raw = {**raw, "image_u8": raw["image_u8"][:1].expand(8, -1, -1, -1).clone(),
           "labels": raw["labels"][:1].expand(8, -1, -1).clone(),
           "index": raw["index"][:1].expand(8).clone(),
           "allowed": raw["allowed"][:1].expand(8, -1).clone()}  # fmt: skip
    batch = soft.make_training_batch(raw, generator=torch.Generator().manual_seed(0))
    assert (batch["category"] == QUALITY_CATEGORIES.index("snapshot")).all()
    assert set(batch["candidate"].unique().tolist()) <= {0.0, 1.0}
    # one image and one snapshot, yet several distinct masks (thresholds and augmentation differ)
    assert len({tuple(c.flatten().tolist()) for c in batch["candidate"]}) > 1
    again = soft.make_training_batch(raw, generator=torch.Generator().manual_seed(0))
    assert torch.equal(batch["candidate"], again["candidate"])
    # a fixed threshold of 0.5 serves (almost exactly) the snapshot's own hard masks
    hard, half = _qdm(root, **kw), _qdm(root, snapshot_threshold=0.5, **kw)
    hard.setup("fit")
    half.setup("fit")
    probs = half.train_data["snapshots"][0]
    agree = (
        threshold_snapshot_probs(probs, torch.full((probs.shape[0],), 0.5)) == hard.train_data["snapshots"][0]
    )
    assert agree.float().mean() > 0.99


@pytest.mark.parametrize("bad", [0.0, 1.0, [0.8, 0.2], [0.1, 0.5, 0.9], "0.5", True])
def test_invalid_snapshot_threshold(root, bad):
    with pytest.raises(ValueError, match="snapshot_threshold"):
        _qdm(root, snapshot_threshold=bad)


def test_snapshot_appearance_needs_a_cast_range_and_snapshots(root, one_snapshot):
    kw = dict(p_weak=1.0, snapshots=[one_snapshot], snapshot_policy="all")
    with pytest.raises(ValueError, match="`snapshot_appearance`=2 .*`gamma` or `channel_gain` above 0"):
        _qdm(root, snapshot_appearance=2, **kw)
    with pytest.raises(ValueError, match="photometric=False"):
        _qdm(root, snapshot_appearance=2, gamma=0.2, photometric=False, **kw)
    with pytest.raises(ValueError, match="p_weak=0.0"):
        _qdm(root, snapshot_appearance=2, gamma=0.2)
    with pytest.raises(ValueError, match="`snapshot_appearance` must be an integer >= 0"):
        _qdm(root, snapshot_appearance=-1, gamma=0.2, **kw)


def test_snapshot_appearance_predicts_each_snapshot_on_fixed_cast_copies(root, one_snapshot):
    from qg_lightning.quality.augment import apply_appearance
    from qg_lightning.quality.snapshots import predict_snapshot_probs

    kw = dict(p_weak=1.0, snapshots=[one_snapshot], snapshot_policy="all", snapshot_threshold=[0.2, 0.8])
    plain = _qdm(root, **kw)
    plain.setup("fit")
    qdm = _qdm(root, snapshot_appearance=2, gamma=0.3, channel_gain=0.2, **kw)
    qdm.setup("fit")
    snaps, allowed = qdm.train_data["snapshots"], qdm.train_data["allowed"]
    n = len(qdm.train_ids)
    assert snaps.shape == (3, n, 1, 32, 32) and allowed.shape == (n, 3) and allowed.all()
    assert torch.equal(snaps[0], plain.train_data["snapshots"][0])  # view 0: the plain images, as before
    exponent, gain = qdm._appearance
    assert exponent.shape == (3, n) and gain.shape == (3, n, 3)
    assert torch.equal(exponent[0], torch.ones(n)) and torch.equal(gain[0], torch.ones(n, 3))
    assert ((1 / 1.3 <= exponent) & (exponent <= 1.3)).all() and ((gain - 1).abs() <= 0.2 + 1e-6).all()
    assert len(set(exponent[1:].flatten().tolist())) == 2 * n  # each copy its own cast
    net = load_snapshot(find_snapshots(one_snapshot)[0]).net
    x = qdm.train_data["images"].contiguous().float() / 255  # as predicted at set-up (not channels-last)
    for v in (1, 2):
        cast = apply_appearance(x, exponent[v], gain[v])
        assert torch.equal(snaps[v], predict_snapshot_probs(net, cast, 2))
    again = _qdm(root, snapshot_appearance=2, gamma=0.3, channel_gain=0.2, **kw)
    again.setup("fit")
    assert torch.equal(again._appearance[0], exponent) and torch.equal(again.train_data["snapshots"], snaps)


def test_snapshot_flips_add_three_flipped_predictions_per_view(root, one_snapshot):
    from qg_lightning.quality.augment import apply_appearance
    from qg_lightning.quality.snapshots import predict_snapshot_probs

    kw = dict(p_weak=1.0, snapshots=[one_snapshot], snapshot_policy="all", snapshot_threshold=[0.2, 0.8])
    plain = _qdm(root, **kw)
    plain.setup("fit")
    qdm = _qdm(root, snapshot_flips=True, **kw)
    qdm.setup("fit")
    snaps, allowed = qdm.train_data["snapshots"], qdm.train_data["allowed"]
    n = len(qdm.train_ids)
    assert snaps.shape == (4, n, 1, 32, 32) and allowed.shape == (n, 4) and allowed.all()
    assert torch.equal(snaps[0], plain.train_data["snapshots"][0])  # the unflipped prediction comes first
    net = load_snapshot(find_snapshots(one_snapshot)[0]).net
    x = qdm.train_data["images"].contiguous().float() / 255
    for view, dims in ((1, [-1]), (2, [-2]), (3, [-2, -1])):  # predicted on the flipped image, flipped back
        assert torch.equal(snaps[view], predict_snapshot_probs(net, x.flip(dims), 2).flip(dims))
    assert not torch.equal(snaps[1], snaps[0])  # a real variant, not a copy
    raw = next(iter(qdm.train_dataloader()))
    batch = qdm.make_training_batch(raw, generator=torch.Generator().manual_seed(0))
    assert (batch["category"] == QUALITY_CATEGORIES.index("snapshot")).all()
    assert batch["candidate"].shape == (8, 1, 32, 32)
    # with cast copies: the four flips of each copy are consecutive, so plane // (4 * S) names the copy
    both = _qdm(root, snapshot_flips=True, snapshot_appearance=1, gamma=0.3, channel_gain=0.2, **kw)
    both.setup("fit")
    snaps = both.train_data["snapshots"]
    assert snaps.shape == (8, n, 1, 32, 32) and both.train_data["allowed"].shape == (n, 8)
    cast = apply_appearance(x, both._appearance[0][1], both._appearance[1][1])
    assert torch.equal(snaps[4], predict_snapshot_probs(net, cast, 2))
    assert torch.equal(snaps[5], predict_snapshot_probs(net, cast.flip(-1), 2).flip(-1))


def test_snapshot_flips_need_snapshots(root):
    with pytest.raises(ValueError, match="`snapshot_flips: true` .* needs `p_weak` above 0"):
        _qdm(root, snapshot_flips=True)
    with pytest.raises(ValueError, match="`snapshot_flips` must be true or false"):
        _qdm(root, snapshot_flips="yes")


def test_snapshot_candidates_get_the_cast_of_the_copy_they_were_predicted_on(root, one_snapshot, monkeypatch):
    """A snapshot mask from a cast copy comes with that copy's cast on the image; one from the plain image with
    none; synthetic candidates with a fresh random cast."""
    from qg_lightning.quality import datamodule as dm_module

    qdm = _qdm(root, p_weak=0.6, snapshots=[one_snapshot], snapshot_policy="all", snapshot_appearance=1,
               gamma=0.3, channel_gain=0.2)  # fmt: skip
    qdm.setup("fit")
    snaps = qdm.train_data["snapshots"]
    qdm.train_data["snapshots"] = torch.stack([torch.zeros_like(snaps[0]), torch.ones_like(snaps[1])])
    seen, jitter = {}, dm_module.photometric

    def spy(images, **kwargs):
        seen["appearance"] = kwargs["appearance"]
        return jitter(images, **kwargs)

    monkeypatch.setattr(dm_module, "photometric", spy)
    exponent, gain = qdm._appearance
    counts = {"plain": 0, "cast": 0, "synthetic": 0}
    for seed, raw in enumerate(qdm.train_dataloader()):
        batch = qdm.make_training_batch(raw, generator=torch.Generator().manual_seed(seed))
        got_e, got_g = seen["appearance"]
        for i, image in enumerate(raw["index"].tolist()):
            if batch["category"][i] != QUALITY_CATEGORIES.index("snapshot"):
                counts["synthetic"] += 1
                assert not torch.equal(got_e[i], exponent[1, image])
            elif batch["candidate"][i].any():  # view 1, the cast copy: its mask is all ones before the warp
                counts["cast"] += 1
                assert got_e[i] == exponent[1, image] and torch.equal(got_g[i], gain[1, image])
            else:
                counts["plain"] += 1
                assert got_e[i] == 1 and torch.equal(got_g[i], torch.ones(3))
        assert 0 <= float(batch["image"].min()) and float(batch["image"].max()) <= 1
    assert min(counts.values()) > 3, counts


# --------------------------------------------------------------------- a second mask folder (mask_dir)
NEOPOLYP = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "neopolyp"


def test_mask_dir_reads_a_three_class_folder_in_place(three_class_root):
    qdm = _qdm(three_class_root, num_classes=3, mask_dir="masks_3class")
    qdm.setup("fit")
    assert qdm.source.index.mask_paths[qdm.train_ids[0]].parent.name == "masks_3class"
    assert qdm.train_data["labels"].unique().tolist() == [0, 1, 2]
    batch = qdm.make_training_batch(
        next(iter(qdm.train_dataloader())), generator=torch.Generator().manual_seed(0)
    )
    assert batch["candidate"].shape[1] == batch["truth"].shape[1] == batch["quality"].shape[1] == 2
    assert qdm.eval_data["val"]["quality"].shape[1] == 2
    binary = _qdm(three_class_root)  # the same images and split, binary masks
    binary.setup("fit")
    assert binary.split == qdm.split and binary.train_data["labels"].max() == 1
    assert (
        qdm.hparams["mask_dir"] == "masks_3class"
    )  # recorded in checkpoints, read back by evaluate-predictor


def test_a_missing_mask_folder_is_named_before_any_work(three_class_root):
    with pytest.raises(
        FileNotFoundError, match=r"`mask_dir`='masks_4class'.*data\.init_args\.mask_dir.*masks_3class"
    ):
        _qdm(three_class_root, num_classes=3, mask_dir="masks_4class")
    with pytest.raises(ValueError, match="mask_dir"):
        _qdm(three_class_root, mask_dir="../masks")


def test_three_class_masks_with_num_classes_2_fail_at_setup_naming_the_file(three_class_root):
    """``num_classes`` is never inferred: class indices above it fail the folder check, before training."""
    qdm = _qdm(three_class_root, mask_dir="masks_3class")  # num_classes=2
    with pytest.raises(
        DataValidationError, match=r"masks_3class/syn_00001\.png: has mask values 2 .*num_classes"
    ):
        qdm.setup("fit")
    assert not qdm.train_data  # nothing was built


def test_targets_of_an_absent_class_are_one_and_a_painted_absent_class_zero(three_class_root):
    """Rule (a): a class absent from both truth and candidate has target 1.0 (nothing to get wrong); a
    candidate that paints a class the truth lacks has target 0.0. The predictor trains on these targets as is."""
    qdm = _qdm(three_class_root, num_classes=3, mask_dir="masks_3class", labeled_fraction=None)
    qdm.setup("fit")
    raw = next(iter(qdm.train_dataloader()))
    truth, cand, quality = [], [], []
    for seed in range(12):
        batch = qdm.make_training_batch(raw, generator=torch.Generator().manual_seed(seed))
        truth.append(batch["truth"].flatten(2).any(2))
        cand.append(batch["candidate"].flatten(2).any(2))
        quality.append(batch["quality"])
    fixed = qdm.eval_data["val"]
    truth.append(foreground_from_labels(fixed["labels"].long(), 3).flatten(2).any(2))
    cand.append(fixed["candidate_u8"].bool().flatten(2).any(2))
    quality.append(fixed["quality"])
    truth, cand, quality = torch.cat(truth).bool(), torch.cat(cand).bool(), torch.cat(quality)
    both_absent, painted = ~truth & ~cand, ~truth & cand
    assert both_absent.any() and painted.any() and (truth & cand).any()
    assert (quality[both_absent] == 1.0).all()
    assert (quality[painted] == 0.0).all()
    assert (quality[truth & ~cand] == 0.0).all()  # a missed class: 0 as well


@pytest.mark.skipif(
    not (NEOPOLYP / "masks_3class").is_dir(), reason="../shared/data/neopolyp is not available"
)
def test_neopolyp_three_classes_reach_the_predictor_data_in_place():
    qdm = QualityDataModule(root=str(NEOPOLYP), mask_dir="masks_3class", num_classes=3, image_size=32,
                            n_labeled=8, samples_per_image=1, batch_size=4, p_weak=0.0, eval_candidates_per_image=1)  # fmt: skip
    qdm.setup("fit")
    assert len(qdm.train_ids) == 8 and qdm.eval_data["val"]["quality"].shape[1] == 2
    assert set(qdm.train_data["labels"].unique().tolist()) <= {0, 1, 2}
    labels = torch.cat([qdm.train_data["labels"], qdm.eval_data["val"]["labels"]])
    assert 2 in labels.unique().tolist()  # the non-neoplastic class reaches the predictor's data
    with pytest.raises(DataValidationError, match=r"masks_3class/\w+\.png: has mask values 2"):
        QualityDataModule(root=str(NEOPOLYP), mask_dir="masks_3class", p_weak=0.0).setup("fit")

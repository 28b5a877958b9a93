"""PredictorRecipe / PredictorData, train_predictor end to end on tiny synthetic data, and the
``qg-lightning train-predictor`` command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from qg_lightning.checkpoint import load_checkpoint
from qg_lightning.cli import cli_main, main
from qg_lightning.cli_train_predictor import parse_train_predictor_args
from qg_lightning.guidance import QualityReweightCallback
from qg_lightning.quality import QualityPredictor, load_quality_predictor
from qg_lightning.quality.cache import StageCache
from qg_lightning.quality.estimate import estimate_predictor_time
from qg_lightning.quality.recipe import PredictorData, PredictorRecipe, stage_fields
from qg_lightning.quality.training import CacheMismatchError, _stage, check_output, train_predictor

CONFIG_DIR = Path(__file__).resolve().parents[2] / "examples" / "configs"

#: a recipe that trains in seconds on one core: 2 folds x 1 epoch of weak models, 1 predictor epoch at 32 px
TINY = PredictorRecipe(
    snapshot_folds=2, snapshot_epochs=(1,), snapshot_batch_size=8, image_size=32, samples_per_image=2,
    batch_size=8, max_epochs=1, eval_candidates_per_image=1,
)  # fmt: skip
TINY_DATA = {"synthetic_images": 24, "synthetic_size": 32}


# ------------------------------------------------------------------------------------------------ recipe
def test_defaults_are_the_best_recipe_measured() -> None:
    r = PredictorRecipe()
    assert (r.snapshot_folds, r.snapshot_models, r.snapshot_epochs) == (3, ("Unet:resnet18",), (1, 2, 4))
    assert (r.p_weak, r.snapshot_policy, r.snapshot_threshold) == (0.5, "heldout", (0.2, 0.8))
    assert (r.error_map_weight, r.backbone, r.pretrained, r.image_size) == (0.5, "resnet18", False, 128)
    assert (r.samples_per_image, r.batch_size, r.max_epochs) == (4, 32, 28)
    assert (r.calibration, r.tta, r.snapshot_label_fraction) == ("logit", True, None)


def test_release_settings() -> None:
    r = PredictorRecipe.release()
    assert (r.p_weak, r.snapshot_policy, r.snapshot_threshold, r.error_map_weight) == (0.05, "all", None, 0.0)
    assert r.backbone == PredictorRecipe().backbone
    assert PredictorRecipe.release(seed=3).seed == 3


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"p_weak": 1.5}, "p_weak"),
        ({"snapshot_folds": 1}, "snapshot_folds"),
        ({"snapshot_models": ("Unet",)}, "snapshot_models"),
        ({"snapshot_epochs": ()}, "snapshot_epochs"),
        ({"snapshot_threshold": (0.8, 0.2)}, "snapshot_threshold"),
        ({"snapshot_threshold": 1.0}, "snapshot_threshold"),
        ({"snapshot_policy": "some"}, "snapshot_policy"),
        ({"error_map_weight": -1}, "error_map_weight"),
        ({"backbone": "nope"}, "backbone"),
        ({"image_size": 100}, "image_size"),
        ({"max_epochs": 0}, "max_epochs"),
        ({"max_minutes": 0}, "max_minutes"),
        ({"calibration": "isotonic"}, "calibration"),
        ({"tta": "yes"}, "tta"),
        ({"snapshot_label_fraction": 0}, "snapshot_label_fraction"),
        ({"seed": 1.5}, "seed"),
        ({"init_from": ""}, "init_from"),
        ({"init_from": 3}, "init_from"),
    ],
)
def test_every_field_is_validated_by_name(changes: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"`{field}`"):
        PredictorRecipe(**changes)
    with pytest.raises(ValueError, match=f"`{field}`"):
        PredictorRecipe().replace(**changes)


def test_replace_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError, match=r"Unknown PredictorRecipe field\(s\) \['p_strong'\]"):
        PredictorRecipe().replace(p_strong=0.5)
    with pytest.raises(ValueError, match="unknown_key"):
        PredictorRecipe.from_dict({"unknown_key": 1})


def test_dict_and_yaml_round_trip_and_fingerprint() -> None:
    r = PredictorRecipe(snapshot_models=("Unet:resnet18", "FPN:resnet34"), seed=7)
    again = PredictorRecipe.from_dict(yaml.safe_load(yaml.safe_dump(r.to_dict())))
    assert again == r and again.fingerprint == r.fingerprint
    assert json.loads(json.dumps(r.to_dict()))["snapshot_threshold"] == [0.2, 0.8]
    assert r.replace(p_weak=0.25).fingerprint != r.fingerprint
    assert r.snapshot_specs == [("Unet", "resnet18"), ("FPN", "resnet34")]


def test_stage_fields_depend_on_earlier_stages_only() -> None:
    data = PredictorData()
    snapshots = stage_fields("snapshots", PredictorRecipe(), data)
    assert "recipe.p_weak" not in snapshots and "recipe.snapshot_epochs" in snapshots
    predictor = stage_fields("predictor", PredictorRecipe(), data)
    assert predictor["recipe.p_weak"] == 0.5 and "recipe.snapshot_epochs" in predictor
    # the weak models' seed is the same whichever field gives it
    assert stage_fields("snapshots", PredictorRecipe(seed=1, snapshot_seed=0), data) == snapshots
    assert stage_fields("snapshots", PredictorRecipe(seed=1), data) != snapshots


def test_data_checks_paths_and_fields(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="`root`"):
        PredictorData(root=str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="`split_file`"):
        PredictorData(split_file=str(tmp_path / "split.json"))
    with pytest.raises(ValueError, match="n_labeled"):
        PredictorData(labeled_fraction=0.5, n_labeled=3)
    with pytest.raises(ValueError, match="`in_channels`"):
        PredictorData(in_channels=2)
    with pytest.raises(FileNotFoundError, match="`mask_dir`='masks' names no sub-folder"):
        PredictorData(root=tmp_path)  # the default mask folder is checked as early as any other
    (tmp_path / "masks").mkdir()
    assert PredictorData(root=tmp_path).root == str(tmp_path)


def test_data_mask_dir_is_checked_early_and_joins_the_fingerprint(three_class_root: Path) -> None:
    data = PredictorData(root=str(three_class_root), mask_dir="masks_3class", num_classes=3)
    assert data.datamodule_kwargs(32)["mask_dir"] == "masks_3class"
    with pytest.raises(
        FileNotFoundError,
        match=r"`mask_dir`='masks_4class'.*candidate mask folders: \['masks', 'masks_3class'\]",
    ):
        PredictorData(root=str(three_class_root), mask_dir="masks_4class")
    with pytest.raises(ValueError, match="`mask_dir` must be the name of a mask folder"):
        PredictorData(mask_dir="a/b")
    # the default stays out of the cache fingerprint (runs cached before the field existed still match) ...
    binary = PredictorData(root=str(three_class_root))
    assert "data.mask_dir" not in stage_fields("split", PredictorRecipe(), binary)
    # ... and any other mask folder is in every stage's, so a cache made with other masks is refused
    for stage in ("split", "snapshots", "predictor", "calibration", "report"):
        assert stage_fields(stage, PredictorRecipe(), data)["data.mask_dir"] == "masks_3class"


# -------------------------------------------------------------------------------------------- end to end
def test_init_from_joins_the_predictor_stage_as_its_weights(tmp_path: Path) -> None:
    assert "init_from" not in PredictorRecipe().to_dict()  # saved recipes and studies still compare equal
    start = tmp_path / "g.ckpt"
    start.write_bytes(b"weights")
    recipe = PredictorRecipe(init_from=start)  # a path object is kept as text
    assert recipe.init_from == str(start) and PredictorRecipe.from_dict(recipe.to_dict()) == recipe
    data = PredictorData()
    assert stage_fields("snapshots", recipe, data) == stage_fields("snapshots", PredictorRecipe(), data)
    before = stage_fields("report", recipe, data)
    assert "recipe.init_from_sha256" in before and "recipe.init_from" not in before
    moved = tmp_path / "moved.ckpt"
    shutil.copy(start, moved)
    assert stage_fields("report", recipe.replace(init_from=str(moved)), data) == before  # same weights
    start.write_bytes(b"other weights")
    assert stage_fields("predictor", recipe, data) != stage_fields(
        "predictor", recipe.replace(init_from=moved), data
    )
    start.unlink()
    with pytest.raises(FileNotFoundError, match=r"`init_from`: no quality predictor checkpoint at"):
        stage_fields("predictor", recipe, data)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """One tiny end-to-end run on the embedded synthetic data (about 15 s on one core)."""
    with pytest.MonkeyPatch.context() as mp:
        tmp = tmp_path_factory.mktemp("recipe")
        mp.setenv("QG_LIGHTNING_CACHE", str(tmp / "cache"))
        events = []
        result = train_predictor(TINY, PredictorData(**TINY_DATA), tmp / "out", accelerator="cpu",
                                 progress=events.append)  # fmt: skip
        yield result, events


def test_train_predictor_writes_every_stage(trained) -> None:
    result, events = trained
    out = result.paths["out"]
    assert result.checkpoint == out / "quality_predictor.ckpt" and result.checkpoint.is_file()
    for name in ("split", "snapshots", "predictor", "report"):
        assert result.paths[name].exists(), name
    snapshots = sorted(p.name for p in result.paths["snapshots"].rglob("snapshot*.pt"))
    assert snapshots == ["snapshot_fold0_epoch001.pt", "snapshot_fold1_epoch001.pt"]
    report = json.loads(result.paths["report"].read_text())
    assert report == result.report
    assert set(report["evaluations"]) == {"uncalibrated", "calibrated", "calibrated_tta"}
    real = report["evaluations"]["calibrated"]["real"]
    assert real["n"] == 2 * len(json.loads(result.paths["split"].read_text())["val"])  # 2 snapshots per image
    assert report["recipe"] == TINY.to_dict() and report["calibration"]["n"] == real["n"]
    assert {e.stage for e in events} == {"split", "snapshots", "predictor", "calibration", "report"}
    assert any(e.stage == "predictor" and e.done == 1 and e.total == 1 for e in events)


def test_checkpoint_loads_calibrated_and_guides(trained, isolated: Path) -> None:
    result, _ = trained
    g = load_quality_predictor(str(result.checkpoint), in_channels=3, num_classes=2)
    assert g.hparams.calibration == result.report["calibration"]["calibration"]
    assert g.hparams.error_map_weight == 0.5 and g.hparams.channels_last is True
    with torch.no_grad():
        q = g(torch.rand(2, 3, 32, 32), torch.ones(2, 1, 32, 32))
    assert q.shape == (2, 1) and bool(((q >= 0) & (q <= 1)).all())
    # a guided config runs with the checkpoint as is
    args = ["fit", "--config", str(CONFIG_DIR / "ssl" / "pl_qw.yaml"), "--trainer.callbacks.predictor",
            str(result.checkpoint), "--trainer.fast_dev_run", "1", "--trainer.logger", "false",
            "--data.synthetic_images", "16", "--data.image_size", "64", "--data.labeled_fraction", "0.5"]  # fmt: skip
    cli = cli_main(args[1:], run=False)
    callback = next(cb for cb in cli.trainer.callbacks if isinstance(cb, QualityReweightCallback))
    assert callback.predictor == str(result.checkpoint)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.state.finished


def test_rerun_is_cached_and_a_changed_recipe_is_refused(trained, monkeypatch: pytest.MonkeyPatch) -> None:
    result, _ = trained
    out = result.paths["out"]

    def no_training(*args, **kwargs):
        raise AssertionError("a cached stage was trained again")

    monkeypatch.setattr("lightning.Trainer.fit", no_training)
    again = train_predictor(TINY, result.data, out, accelerator="cpu")
    assert again.checkpoint == result.checkpoint and again.report == result.report
    assert check_output(TINY, result.data, out) == [
        "split",
        "snapshots",
        "predictor",
        "calibration",
        "report",
    ]
    with pytest.raises(CacheMismatchError, match=r"predictor stage .*recipe\.p_weak: 0\.5 -> 0\.25"):
        train_predictor(TINY.replace(p_weak=0.25), result.data, out)
    with pytest.raises(CacheMismatchError, match=r"split stage .*data\.split_seed: 0 -> 1.*--out"):
        train_predictor(TINY, result.data.replace(split_seed=1), out)


def test_moved_output_reuses_its_stages_and_reports_on_test(trained, tmp_path: Path) -> None:
    result, _ = trained
    moved = tmp_path / "moved"
    shutil.copytree(result.paths["out"], moved)
    # the fix the mismatch error names: delete the markers of the stages to redo
    (moved / "calibration.done.json").unlink()
    (moved / "report.done.json").unlink()
    # split, snapshots and predictor are reused from the moved folder; calibration and report are redone
    again = train_predictor(TINY, result.data, moved, accelerator="cpu", report_subset="test")
    assert again.paths["predictor"] == moved / "predictor" / "predictor.ckpt"
    assert again.report["predictor"] == result.report["predictor"]
    assert again.report["subset"] == "test" and (moved / "report" / "test_calibrated.json").is_file()
    assert (moved / "calibration" / "val_uncalibrated.json").is_file()  # calibrated on val all the same


def test_a_moved_split_file_still_matches_its_stages(tmp_path: Path) -> None:
    """The split file counts by its content: the same file elsewhere reuses the stage, another content does
    not (markers written before this rule, which hold the old path, match too)."""
    first, moved = tmp_path / "a" / "split.json", tmp_path / "b" / "split.json"
    for path in (first, moved):
        path.parent.mkdir()
        path.write_text('{"train": ["x"], "val": ["y"], "test": ["z"]}')
    data = PredictorData(**TINY_DATA, split_file=str(first))
    stage = _stage("split", TINY, data, tmp_path / "out", tmp_path / "snaps", "val", None)
    stage.marker.parent.mkdir()
    stage.done({"n": 1})
    again = _stage(
        "split", TINY, data.replace(split_file=str(moved)), tmp_path / "out", tmp_path / "snaps", "val", None
    )
    assert again.settings["data.split_file"] != stage.settings["data.split_file"] and again.cached() == {
        "n": 1
    }
    moved.write_text('{"train": ["y"], "val": ["x"], "test": ["z"]}')
    changed = _stage(
        "split", TINY, data.replace(split_file=str(moved)), tmp_path / "out", tmp_path / "snaps", "val", None
    )
    with pytest.raises(CacheMismatchError, match=r"data\.split_file_sha256"):
        changed.cached()
    plain = StageCache("x", tmp_path / "x.done.json", {"path": "a"})  # nothing is interchangeable by default
    plain.done({})
    with pytest.raises(CacheMismatchError, match="path: 'a' -> 'b'"):
        StageCache("x", tmp_path / "x.done.json", {"path": "b"}).cached()


def test_a_redone_stage_redoes_the_later_ones(trained, tmp_path: Path) -> None:
    result, _ = trained
    moved = tmp_path / "redo"
    shutil.copytree(result.paths["out"], moved)
    before = {
        name: (moved / f"{name}.done.json").stat().st_mtime_ns for name in ("split", "calibration", "report")
    }
    (moved / "predictor.done.json").unlink()
    train_predictor(TINY, result.data, moved, accelerator="cpu")
    assert (moved / "split.done.json").stat().st_mtime_ns == before["split"]
    for name in ("calibration", "report"):
        assert (moved / f"{name}.done.json").stat().st_mtime_ns > before[name], name


def test_fine_tuning_starts_from_the_given_predictor(trained, tmp_path: Path, monkeypatch) -> None:
    result, _ = trained
    source = load_quality_predictor(str(result.checkpoint))
    started: dict = {}
    fit = L.Trainer.fit

    def spy(self, model, *args, **kwargs):
        if isinstance(model, QualityPredictor):
            started.update(head=model.head[-1].weight.detach().clone(), calibration=model.calibration)
        return fit(self, model, *args, **kwargs)

    monkeypatch.setattr(L.Trainer, "fit", spy)
    recipe = TINY.replace(init_from=str(result.checkpoint))
    out = tmp_path / "tuned"
    tuned = train_predictor(
        recipe, result.data, out, accelerator="cpu", snapshot_dir=result.paths["snapshots"]
    )
    assert torch.equal(started["head"], source.head[-1].weight) and started["calibration"] is None
    assert tuned.report["recipe"]["init_from"] == str(result.checkpoint) and tuned.checkpoint.is_file()
    # other starting weights redo the predictor stage (the snapshots are kept): refused in a finished folder
    other = tmp_path / "other.ckpt"
    ckpt = load_checkpoint(result.checkpoint)
    ckpt["state_dict"]["head.4.bias"] = ckpt["state_dict"]["head.4.bias"] + 1
    torch.save(ckpt, other)
    with pytest.raises(CacheMismatchError, match=r"predictor stage .*recipe\.init_from_sha256"):
        train_predictor(
            recipe.replace(init_from=str(other)), result.data, out, snapshot_dir=result.paths["snapshots"]
        )
    # a checkpoint that does not fit is refused before any work
    with pytest.raises(ValueError, match=r"`init_from`: .*set `backbone` to 'resnet18'"):
        train_predictor(recipe.replace(backbone="resnet34"), result.data, tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_snapshot_label_fraction_trains_weak_models_on_a_nested_subset(isolated: Path) -> None:
    recipe = TINY.replace(snapshot_label_fraction=0.5, calibration="none", tta=False)
    result = train_predictor(recipe, PredictorData(**TINY_DATA), isolated / "out", accelerator="cpu")
    split = json.loads((isolated / "out" / "split.json").read_text())
    subset = json.loads((isolated / "out" / "snapshot_split.json").read_text())
    assert len(subset["labeled"]) == len(split["labeled"]) // 2 and set(subset["labeled"]) < set(
        split["labeled"]
    )
    folds = [
        json.loads(p.read_text())["info"] for p in sorted(result.paths["snapshots"].glob("*/fold*.done.json"))
    ]
    assert [f["n_train"] for f in folds] == [len(subset["labeled"]) // 2] * 2  # each fold trains on the other
    assert result.report["calibration"] is None and set(result.report["evaluations"]) == {"uncalibrated"}
    assert load_quality_predictor(str(result.checkpoint)).hparams.calibration is None


def test_train_predictor_on_a_three_class_mask_folder(three_class_root: Path, isolated: Path) -> None:
    """mask_dir reaches every stage: the split, the weak models (3 classes), the predictor, the calibration
    and the report (per-class figures); a run cached with other masks is refused, not reused."""
    data = PredictorData(root=str(three_class_root), mask_dir="masks_3class", num_classes=3)
    result = train_predictor(TINY.replace(tta=False), data, isolated / "out", accelerator="cpu")
    assert load_quality_predictor(str(result.checkpoint)).hparams.num_classes == 3
    recorded = torch.load(result.checkpoint, weights_only=False)["datamodule_hyper_parameters"]
    assert recorded["mask_dir"] == "masks_3class"
    snapshot = next(result.paths["snapshots"].rglob("*.pt"))
    assert torch.load(snapshot, weights_only=False)["hyper_parameters"]["num_classes"] == 3
    report = json.loads(result.paths["report_uncalibrated"].read_text())
    assert report["num_foreground"] == 2
    assert set(report["by_source"]["real"]["per_class"]) == {"class1", "class2"}
    assert result.report["data"]["mask_dir"] == "masks_3class"
    mismatch = r"split stage .*data\.mask_dir: 'masks_3class' -> '<unset>'"
    with pytest.raises(CacheMismatchError, match=mismatch):
        check_output(TINY.replace(tta=False), data.replace(mask_dir="masks"), isolated / "out")
    # evaluate-predictor reads the mask folder the checkpoint recorded (or --data.mask_dir)
    args = ["evaluate-predictor", "--predictor", str(result.checkpoint), "--candidates-per-image", "1",
            "--device", "cpu", "--worst", "0"]  # fmt: skip
    assert main([*args, "--out", str(isolated / "eval.json")]) == 0
    evaluated = json.loads((isolated / "eval.json").read_text())
    assert evaluated["data"]["mask_dir"] == "masks_3class" and evaluated["num_foreground"] == 2
    with pytest.raises(FileNotFoundError, match="--data.mask_dir='masks_4class' names no sub-folder"):
        main([*args, "--out", str(isolated / "eval4.json"), "--data.mask_dir", "masks_4class"])


def test_estimate_measures_steps(isolated: Path) -> None:
    estimate = estimate_predictor_time(TINY, PredictorData(**TINY_DATA), accelerator="cpu", steps=1)
    assert estimate.seconds > 0 and set(estimate.stages) == {"snapshots", "predictor", "evaluation"}
    assert estimate.counts["labeled"] == 16 and estimate.counts["predictor_steps"] == 4
    assert estimate.describe().startswith("about ")


# ------------------------------------------------------------------------------------------------- CLI
def _tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"recipe": TINY.to_dict(), "data": TINY_DATA}))
    return path


def test_cli_parses_config_and_overrides(tmp_path: Path) -> None:
    config = _tiny_config(tmp_path)
    _, recipe, data, out = parse_train_predictor_args(
        ["--config", str(config), "--recipe.p_weak", "0.25", "--recipe.snapshot_threshold", "[0.3, 0.7]",
         "--recipe.patience", "null", "--data.split_seed", "2", "--out", str(tmp_path / "o")]
    )  # fmt: skip
    assert recipe == TINY.replace(p_weak=0.25, snapshot_threshold=(0.3, 0.7))
    assert data == PredictorData(**TINY_DATA, split_seed=2) and out == tmp_path / "o"
    _, release, _, default_out = parse_train_predictor_args(["--preset", "release"])
    assert release == PredictorRecipe.release() and default_out == Path("runs/train_predictor/synthetic")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--recipe.p_weak", "2"], "--recipe.p_weak must be"),
        (["--recipe.p_strong", "2"], "unknown recipe field(s) ['--recipe.p_strong']"),
        (["--data.root", "/no/such/folder"], "--data.root '/no/such/folder' is not a folder"),
        (["--data.in_channels", "2"], "--data.in_channels must be"),
        (["--data.mask_dir", "masks_3class"], "--data.mask_dir='masks_3class' needs --data.root"),
        (["--config", "/no/such.yaml"], "--config '/no/such.yaml' does not exist"),
        (["--recipe.snapshot_threshold", "[0.2"], "--recipe.snapshot_threshold: cannot read"),
        (["--recipe.init_from", "/no/such.ckpt"], "--recipe.init_from: no quality predictor checkpoint at"),
    ],
)
def test_cli_rejects_bad_input_before_any_work(argv, message, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train-predictor", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_reads_mask_dir_as_a_folder_name(three_class_root: Path, capsys: pytest.CaptureFixture) -> None:
    root = str(three_class_root)
    _, _, data, _ = parse_train_predictor_args(["--data.root", root, "--data.mask_dir", "masks_3class",
                                                "--data.num_classes", "3"])  # fmt: skip
    assert (data.mask_dir, data.num_classes) == ("masks_3class", 3)
    with pytest.raises(SystemExit) as exc:
        main(["train-predictor", "--data.root", root, "--data.mask_dir", "masks_4class"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--data.mask_dir='masks_4class' names no sub-folder" in err and "'masks_3class'" in err


def test_cli_prints_the_checkpoint_path(trained, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    result, _ = trained
    config = _tiny_config(tmp_path)
    assert main(["train-predictor", "--config", str(config), "--out", str(result.paths["out"]),
                 "--accelerator", "cpu"]) == 0  # fmt: skip
    assert capsys.readouterr().out.splitlines()[-1] == str(result.checkpoint)
    with pytest.raises(SystemExit):
        main(
            [
                "train-predictor",
                "--config",
                str(config),
                "--out",
                str(result.paths["out"]),
                "--recipe.seed",
                "5",
            ]
        )
    assert "recipe.snapshot_seed: 0 -> 5" in capsys.readouterr().err  # the first stage that differs


def test_cli_print_recipe(capsys: pytest.CaptureFixture) -> None:
    assert main(["train-predictor", "--print-recipe", "--recipe.max_epochs", "3"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert PredictorRecipe.from_dict(printed["recipe"]) == PredictorRecipe(max_epochs=3)


# ------------------------------------------------------------------------------------------------ configs
@pytest.mark.parametrize("name", ["kvasir_seg", "neopolyp_3class"])
def test_predictor_config_carries_the_recipe(name: str) -> None:
    recipe = PredictorRecipe()
    config = yaml.safe_load((CONFIG_DIR / "predictor" / f"{name}.yaml").read_text())
    model, data = config["model"]["init_args"], config["data"]["init_args"]
    assert (model["backbone"], model["pretrained"]) == (recipe.backbone, recipe.pretrained)
    assert (model["error_map_weight"], model["channels_last"]) == (
        recipe.error_map_weight,
        recipe.channels_last,
    )
    assert (data["p_weak"], data["snapshot_policy"]) == (recipe.p_weak, recipe.snapshot_policy)
    assert tuple(data["snapshot_threshold"]) == recipe.snapshot_threshold
    assert (data["image_size"], data["samples_per_image"]) == (recipe.image_size, recipe.samples_per_image)
    assert (data["batch_size"], config["trainer"]["max_epochs"]) == (recipe.batch_size, recipe.max_epochs)
    snapshots = yaml.safe_load((CONFIG_DIR / "snapshots" / f"{name}.yaml").read_text())
    callback = snapshots["trainer"]["callbacks"][0]["init_args"]
    assert tuple(callback["epochs"]) == recipe.snapshot_epochs
    assert snapshots["trainer"]["max_epochs"] == max(recipe.snapshot_epochs)
    net = snapshots["model"]["init_args"]
    assert f"{net['arch']}:{net['encoder_name']}" == recipe.snapshot_models[0]
    assert callback["dirpath"] in data["snapshots"]
    # model, predictor data and snapshot data agree on the classes and the masks they read
    weak = snapshots["data"]["init_args"]
    assert (
        model["num_classes"] == data["num_classes"] == net.get("num_classes", 2) == weak.get("num_classes", 2)
    )
    assert data.get("mask_dir", "masks") == weak.get("mask_dir", "masks")
    assert (data["root"], data.get("labeled_fraction")) == (weak["root"], weak.get("labeled_fraction"))


def test_a_calibration_that_would_flatten_the_predictor_is_refused(isolated: Path, monkeypatch) -> None:
    import qg_lightning.quality.calibration as calibration

    real = calibration.calibrate_checkpoint

    def flat(*args, **kwargs):  # what a predictor blind to real masks gets: slope ~ 0
        fitted = real(*args, **kwargs)
        return {**fitted, "calibration": [1e-6, -0.9]}

    monkeypatch.setattr(calibration, "calibrate_checkpoint", flat)
    result = train_predictor(TINY, PredictorData(**TINY_DATA), isolated / "out", accelerator="cpu")
    fitted = result.report["calibration"]
    assert fitted["applied"] is False and "flatten" in fitted["refused"]
    predictor = isolated / "out" / "predictor" / "predictor.ckpt"
    assert result.checkpoint.read_bytes() == predictor.read_bytes()  # the uncalibrated predictor is kept
    assert "calibrated" not in result.report["evaluations"]


def test_recipe_scaled_to_a_small_labeled_set_keeps_the_training_length() -> None:
    base = PredictorRecipe()
    small = base.scaled_to(45)
    assert small.snapshot_epochs == (10, 20, 40) and small.samples_per_image == 40
    assert base.scaled_to(448) == base and base.scaled_to(2000) == base  # never shorter than measured
    assert base.replace(samples_per_image=16).scaled_to(20).samples_per_image == 64  # capped
    with pytest.raises(ValueError, match="n_labeled"):
        base.scaled_to(0)

"""Config validation through the real CLI: bad keys, types, ranges and paths fail early and name the culprit.

Guarantees (README "Reliability"), each checked on the shipped configs ``ssl/pl_qw.yaml`` (guided
pseudo-labelling) and ``predictor/quickstart.yaml`` (quality predictor):

* an unknown key or a value of the wrong type is rejected while parsing (exit code 2), and the message names
  the config section, the class and the key;
* out-of-range values (``tau``, ``T``, the guidance lambdas and schedule epochs, ``p_weak``, corruption
  category probabilities that do not sum to 1) are rejected when the objects are built, before anything
  trains, and the message names the argument;
* a path that does not exist (predictor checkpoint, snapshots, data root, split file) is named in the error
  before the first training step.

Parsing and building run under ``torch.device("meta")`` (no weight initialisation); only the data-path tests
call ``fit``, which stops in the data module's ``setup``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from qg_lightning.cli import cli_main

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "examples" / "configs"
GUIDED = CONFIG_DIR / "ssl" / "pl_qw.yaml"
PREDICTOR = CONFIG_DIR / "predictor" / "quickstart.yaml"
CALLBACK = "QualityReweightCallback"


def _guided(predictor_ckpt: str, *extra: str) -> list[str]:
    return ["--config", str(GUIDED), "--trainer.callbacks.predictor", predictor_ckpt, *extra]


def _build(args: list[str]) -> None:
    with torch.device("meta"):  # build every object, skip the weight initialisation
        cli_main(args, run=False)


def _parse_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI, expect a parse error (exit 2) and return what it printed to stderr."""
    with pytest.raises(SystemExit) as info:
        _build(args)
    assert info.value.code == 2
    return capsys.readouterr().err


def _build_error(args: list[str]) -> str:
    """Run the CLI, expect an error while building the objects, and return its message."""
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        _build(args)
    return str(info.value)


def _yaml_with(tmp_path: Path, base: Path, edit: dict[str, Any], predictor: str | None = None) -> str:
    """Copy of ``base`` with ``edit`` ({"section.init_args.key": value}, or "callback.key") applied."""
    config = yaml.safe_load(base.read_text())
    if predictor is not None:
        config["trainer"]["callbacks"][-1]["init_args"]["predictor"] = predictor
    for dotted, value in edit.items():
        *parents, key = dotted.split(".")
        node = config["trainer"]["callbacks"][-1] if parents == ["callback"] else config
        for part in parents if parents != ["callback"] else ["init_args"]:
            node = node[part]
        node[key] = value
    path = tmp_path / f"edited_{base.name}"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_base_configs_build(predictor_ckpt: str, isolated: Path) -> None:
    _build(_guided(predictor_ckpt))
    _build(["--config", str(PREDICTOR)])


# ------------------------------------------------------------------------------------------ unknown keys


def test_unknown_model_key_on_the_command_line(
    predictor_ckpt: str, isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _parse_error(_guided(predictor_ckpt, "--model.init_args.tauu", "0.9"), capsys)
    assert 'Parser key "model"' in err and "PseudoLabelSegmenter" in err and "'tauu' is not accepted" in err


@pytest.mark.parametrize(
    ("base", "edit", "expected"),
    [
        (
            GUIDED,
            {"callback.tauu": 0.7},
            ('Parser key "trainer.callbacks"', CALLBACK, "'tauu' is not accepted"),
        ),
        (
            GUIDED,
            {"model.init_args.unsup_weigth": 0.5},
            ('Parser key "model"', "'unsup_weigth' is not accepted"),
        ),
        (PREDICTOR, {"data.init_args.pweak": 0.1}, ('Parser key "data"', "QualityDataModule", "'pweak'")),
        (GUIDED, {"trainer.max_stepz": 3}, ("Group 'trainer' does not accept option 'max_stepz'",)),
    ],
    ids=["callback", "model", "data", "trainer"],
)
def test_misspelled_yaml_key_is_named(
    base: Path,
    edit: dict[str, Any],
    expected: tuple[str, ...],
    predictor_ckpt: str,
    isolated: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = _yaml_with(isolated, base, edit, predictor_ckpt if base == GUIDED else None)
    err = _parse_error(["--config", config], capsys)
    assert all(text in err for text in expected), err[-2000:]


# ------------------------------------------------------------------------------------------ wrong types


@pytest.mark.parametrize(
    ("base", "override", "expected"),
    [
        (GUIDED, ["--model.init_args.lr", "fast"], ('Parser key "lr"', "Expected a <class 'float'>", "fast")),
        (GUIDED, ["--data.init_args.batch_size", "2.5"], ('Parser key "batch_size"', "<class 'int'>", "2.5")),
        (GUIDED, ["--trainer.callbacks.tau", "high"], (CALLBACK, "tau", "high")),
        (PREDICTOR, ["--data.init_args.p_weak", "some"], ('Parser key "p_weak"', "some")),
        (GUIDED, ["--model.init_args.unsup_ramp", "nan"], ('Parser key "unsup_ramp"', "nan")),
        (GUIDED, ["--trainer.callbacks.qar_ramp", "inf"], (CALLBACK, "qar_ramp", "inf")),
    ],
    ids=["lr", "batch_size", "tau", "p_weak", "nan", "inf"],
)
def test_wrong_type_on_the_command_line_is_named(
    base: Path,
    override: list[str],
    expected: tuple[str, ...],
    predictor_ckpt: str,
    isolated: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = _guided(predictor_ckpt) if base == GUIDED else ["--config", str(base)]
    err = _parse_error([*args, *override], capsys)
    assert all(text in err for text in expected), err[-2000:]


def test_wrong_type_in_yaml_is_named(
    predictor_ckpt: str, isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _yaml_with(isolated, GUIDED, {"model.init_args.lr": "fast"}, predictor_ckpt)
    err = _parse_error(["--config", config], capsys)
    assert 'Parser key "model"' in err and 'Parser key "lr"' in err and "fast" in err


# ------------------------------------------------------------------------------------------ ranges


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (["--trainer.callbacks.tau", "1.5"], "`tau` must be a number in [0, 1], got 1.5"),
        (["--trainer.callbacks.tau", "-0.1"], "`tau` must be a number in [0, 1], got -0.1"),
        (["--trainer.callbacks.temperature", "0"], "`temperature` must be a finite number > 0"),
        (["--trainer.callbacks.qw_weight", "-0.25"], "`qw_weight` must be a finite number >= 0"),
        (["--trainer.callbacks.qar_weight", "-0.01"], "`qar_weight` must be a finite number >= 0"),
        (["--trainer.callbacks.qw_warmup", "-1"], "`qw_warmup` must be a finite number >= 0"),
        (["--trainer.callbacks.qar_ramp", "-40"], "`qar_ramp` must be a finite number >= 0"),
    ],
    ids=["tau>1", "tau<0", "T=0", "qw_lambda", "qar_lambda", "qw_warmup", "qar_ramp"],
)
def test_guidance_ranges_are_checked(
    override: list[str], expected: str, predictor_ckpt: str, isolated: Path
) -> None:
    message = _build_error(_guided(predictor_ckpt, *override))
    assert expected in message
    assert f"Set it in the {CALLBACK} init_args" in message  # says where the value is set


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (["--data.init_args.p_weak", "1.5"], "`p_weak` must be a probability in [0, 1], got 1.5"),
        (["--data.init_args.p_weak", "-0.1"], "`p_weak` must be a probability in [0, 1], got -0.1"),
        (
            ["--data.init_args.category_probs", "{identity: 0.5, single: 0.2}"],
            "`category_probs` must sum to 1 (within 1e-6), got 0.70000000",
        ),
        (
            ["--data.init_args.category_probs", "{identity: 1.2, single: -0.2}"],
            "`category_probs['single']` must be a finite number >= 0",
        ),
        (
            ["--data.init_args.category_probs", "{identiy: 1.0}"],
            "`category_probs` has unknown categories ['identiy']",
        ),
    ],
    ids=["p_weak>1", "p_weak<0", "sum", "negative", "unknown_category"],
)
def test_predictor_data_ranges_are_checked(override: list[str], expected: str, isolated: Path) -> None:
    assert expected in _build_error(["--config", str(PREDICTOR), *override])


@pytest.mark.parametrize(
    ("key", "value"), [("unsup_weight", "-0.25"), ("unsup_warmup", "-1"), ("unsup_ramp", "-30")]
)
def test_host_schedule_ranges_are_rejected(key: str, value: str, predictor_ckpt: str, isolated: Path) -> None:
    message = _build_error(_guided(predictor_ckpt, f"--model.init_args.{key}", value))
    assert "must be a finite number >= 0" in message


@pytest.mark.parametrize(("key", "value"), [("unsup_weight", "-0.25"), ("unsup_warmup", "-1")])
def test_host_schedule_errors_name_the_argument(
    key: str, value: str, predictor_ckpt: str, isolated: Path
) -> None:
    assert f"`{key}`" in _build_error(_guided(predictor_ckpt, f"--model.init_args.{key}", value))


# ------------------------------------------------------------------------------------------ paths


def test_missing_predictor_checkpoint_is_named(isolated: Path) -> None:
    missing = str(isolated / "runs" / "predictor" / "nope.ckpt")
    message = _build_error(_guided(missing))
    assert missing in message and f"{CALLBACK}.predictor" in message


def test_guidance_takes_an_ensemble_of_predictors(predictor_ckpt: str, isolated: Path) -> None:
    second = isolated / "second.ckpt"
    shutil.copyfile(predictor_ckpt, second)
    with torch.device("meta"):
        cli = cli_main(_guided(f"[{predictor_ckpt}, {second}]"), run=False)
    callback = next(cb for cb in cli.trainer.callbacks if type(cb).__name__ == CALLBACK)
    assert callback.predictor == [predictor_ckpt, str(second)]
    missing = str(isolated / "nope.ckpt")
    message = _build_error(_guided(f"[{predictor_ckpt}, {missing}]"))
    assert missing in message and f"{CALLBACK}.predictor" in message


def test_missing_snapshots_are_named(isolated: Path) -> None:
    missing = str(isolated / "runs" / "snapshots_typo")
    args = ["--config", str(PREDICTOR), "--data.init_args.p_weak", "0.05", "--data.init_args.snapshots"]
    message = _build_error([*args, f"[{missing}]"])
    assert missing in message and "`snapshots`" in message


@pytest.mark.parametrize("form", ["folder", "list"])
def test_snapshots_take_one_folder_or_a_list(form: str, isolated: Path) -> None:
    folder = isolated / "runs" / "snapshots"
    folder.mkdir(parents=True)
    value = str(folder) if form == "folder" else f"[{folder}]"
    args = ["--config", str(PREDICTOR), "--data.p_weak", "0.5", "--data.snapshots", value]
    with torch.device("meta"):
        cli = cli_main(args, run=False)
    assert cli.datamodule.hparams.snapshots == (str(folder) if form == "folder" else [str(folder)])


@pytest.mark.parametrize("key", ["root", "split_file"])
def test_missing_data_path_is_named_before_training(key: str, predictor_ckpt: str, isolated: Path) -> None:
    missing = str(isolated / "no_such_dir" / ("split.json" if key == "split_file" else ""))
    args = [
        "fit",
        *_guided(predictor_ckpt),
        "--trainer.accelerator=cpu",
        "--trainer.max_steps=1",
        "--trainer.enable_progress_bar=false",
        "--data.init_args.synthetic_images=24",
        "--data.init_args.synthetic_size=32",
        "--data.init_args.image_size=32",
        f"--data.init_args.{key}={missing}",
    ]
    with pytest.raises(FileNotFoundError) as info:
        cli_main(args)
    message = str(info.value)
    assert missing.rstrip("/") in message and (f"`{key}`" in message or f"`--data.{key}`" in message)
    assert not list(isolated.rglob("*.ckpt")) and not list(isolated.rglob("metrics.csv"))

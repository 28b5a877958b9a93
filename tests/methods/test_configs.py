"""Every example config instantiates through the CLI; plain and guided SSL configs differ only by guidance."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from qg_lightning.cli import check_compatible, cli_main
from qg_lightning.guidance import QualityGuidedMixin, QualityReweightCallback

CONFIG_DIR = Path(__file__).resolve().parents[2] / "examples" / "configs"
CONFIGS = sorted(CONFIG_DIR.rglob("*.yaml"))
SSL_DIR = CONFIG_DIR / "ssl"
CALLBACK_PATH = "qg_lightning.guidance.QualityReweightCallback"

SSL_METHODS = (
    "sup",
    "pl",
    "pl_t",
    "pl_c",
    "pl_qw",
    "qar",
    "mt",
    "mt_qw",
    "fixmatch",
    "fixmatch_qw",
    "cps",
    "cps_qw",
)
SSL_DATASETS = ("", "_kvasir_seg")
# guided (or baseline) config -> the config it must match in everything but the listed differences
PAIRS = {
    "pl_qw": "pl",
    "mt_qw": "mt",
    "fixmatch_qw": "fixmatch",
    "cps_qw": "cps",
    "pl_t": "pl",
    "pl_c": "pl",
    "qar": "sup",
}


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def _is_guided(config: dict[str, Any]) -> bool:
    return any(cb.get("class_path") == CALLBACK_PATH for cb in config["trainer"].get("callbacks") or [])


def test_ssl_config_set_is_complete() -> None:
    expected = {f"{m}{d}.yaml" for m in SSL_METHODS for d in SSL_DATASETS}
    assert {p.name for p in SSL_DIR.glob("*.yaml")} == expected


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(CONFIG_DIR)) for p in CONFIGS])
def test_config_instantiates(path: Path, predictor_ckpt: str, isolated: Path) -> None:
    config = _load(path)
    args = ["--config", str(path)]
    guided = _is_guided(config)
    if guided:
        # the documented override applies to the last callback of the list: the guidance one must be last
        assert config["trainer"]["callbacks"][-1]["class_path"] == CALLBACK_PATH
        args += ["--trainer.callbacks.predictor", predictor_ckpt]
    for folder in config.get("data", {}).get("init_args", {}).get("snapshots") or []:
        (isolated / folder).mkdir(
            parents=True, exist_ok=True
        )  # a predictor config's snapshot folder (run dir)
    with torch.device("meta"):  # build every object, but skip the weight initialisation (3x faster)
        cli = cli_main(args, run=False)
    check_compatible(cli.model, cli.datamodule)
    callbacks = [cb for cb in cli.trainer.callbacks if isinstance(cb, QualityReweightCallback)]
    if guided:
        assert len(callbacks) == 1 and callbacks[0].predictor == predictor_ckpt
        assert isinstance(cli.model, QualityGuidedMixin)
    else:
        assert not callbacks


def test_guided_config_without_predictor_names_the_key(isolated: Path) -> None:
    # jsonargparse re-raises the callback's FileNotFoundError inside a ValueError; the message survives
    with pytest.raises((FileNotFoundError, ValueError), match="QualityReweightCallback.predictor"):
        with torch.device("meta"):
            cli_main(["--config", str(SSL_DIR / "pl_qw.yaml")], run=False)


def _strip(config: dict[str, Any], name: str) -> dict[str, Any]:
    """A config without what may differ between a method and its counterpart: guidance and the run name."""
    config = copy.deepcopy(config)
    trainer = config["trainer"]
    trainer["callbacks"] = [cb for cb in trainer["callbacks"] if cb["class_path"] != CALLBACK_PATH]
    for logger in trainer["logger"]:
        assert logger["init_args"].pop("name") == name
    return config


@pytest.mark.parametrize("dataset", SSL_DATASETS, ids=["embedded", "kvasir_seg"])
@pytest.mark.parametrize("name", sorted(PAIRS))
def test_variants_share_every_other_setting(name: str, dataset: str) -> None:
    other = PAIRS[name]
    a = _strip(_load(SSL_DIR / f"{name}{dataset}.yaml"), name)
    b = _strip(_load(SSL_DIR / f"{other}{dataset}.yaml"), other)
    if name in ("pl_t", "pl_c"):  # confidence baselines: same host, another weighting
        for key in ("weighting", "conf_threshold", "conf_tau", "conf_temperature"):
            a["model"]["init_args"].pop(key, None)
            b["model"]["init_args"].pop(key, None)
    if name == "qar":  # QAR over supervised-only: another host that also reads the unlabeled images
        assert a["model"]["class_path"].endswith("QARSegmenter")
        common = set(b["model"]["init_args"])
        a["model"] = {k: v for k, v in a["model"]["init_args"].items() if k in common}
        b["model"] = b["model"]["init_args"]
        for key in ("use_unlabeled", "unlabeled_views"):
            a["data"]["init_args"].pop(key, None)
            b["data"]["init_args"].pop(key, None)
    assert a == b


@pytest.mark.parametrize("dataset", SSL_DATASETS, ids=["embedded", "kvasir_seg"])
def test_all_ssl_configs_share_split_seed_and_budget(dataset: str) -> None:
    keys = ("seed", "labeled_fraction", "batch_size", "unlabeled_batch_size", "image_size", "root")
    seen = set()
    for method in SSL_METHODS:
        config = _load(SSL_DIR / f"{method}{dataset}.yaml")
        data = config["data"]["init_args"]
        trainer = config["trainer"]
        seen.add(
            (config["seed_everything"], trainer["max_steps"], trainer["val_check_interval"])
            + tuple(data.get(k) for k in keys)
        )
        assert data["labeled_fraction"] == 0.1 and data["seed"] == 0
    assert len(seen) == 1, seen


def _tiny_fit(config: Path, *extra: str) -> list[str]:
    """``fit`` of a shipped config on tiny synthetic data: 2 steps unless ``extra`` says otherwise, validation
    on one batch every 2 steps, on CPU, without progress bar and summary."""
    return [
        "fit", "--config", str(config), "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1",
        "--trainer.val_check_interval", "2", "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar",
        "false", "--trainer.enable_model_summary", "false", "--data.synthetic_images", "24",
        "--data.synthetic_size", "32", "--data.image_size", "32", *extra,
    ]  # fmt: skip


def test_quickstart_fit_end_to_end(isolated: Path) -> None:
    """One real CLI fit: train 2 steps, validate, checkpoint, then test the last and the best weights."""
    cli_main(_tiny_fit(CONFIG_DIR / "quickstart.yaml"))
    runs = sorted((isolated / "runs" / "quickstart" / "supervised").glob("version_*"))
    assert len(runs) == 1
    run = runs[0]
    names = {p.name for p in run.iterdir()}
    assert {
        "config.yaml",
        "metrics.csv",
        "split.json",
        "test_metrics_best.json",
        "test_metrics_last.json",
    } <= names
    assert list(run.glob("test_overlays_*.png"))
    assert list((run / "checkpoints").glob("*.ckpt"))
    report = json.loads((run / "test_metrics_best.json").read_text())
    assert report["tag"] == "best" and report["checkpoint"]
    assert (isolated / "cache").is_dir()  # the synthetic data went to QG_LIGHTNING_CACHE


def test_predictor_quickstart_fit_end_to_end(isolated: Path) -> None:
    """The README's predictor command through the real CLI: train 2 steps, validate, checkpoint, reload, and
    the test reports of the last and the best weights.

    Under LightningCLI the data module's inner folder module must record its own arguments (it once took
    the CLI's configuration of ``QualityDataModule`` and failed in ``setup`` on a missing ``cache_images``).
    """
    from qg_lightning.quality import load_quality_predictor

    predictor_config = CONFIG_DIR / "predictor" / "quickstart.yaml"
    cli = cli_main(_tiny_fit(predictor_config, "--data.samples_per_image", "2", "--data.batch_size", "4"))
    source = cli.datamodule.source.hparams
    assert source["cache_images"] is True and "samples_per_image" not in source
    assert source["image_size"] == 32 and source["synthetic_images"] == 24
    checkpoints = sorted(
        (isolated / "runs" / "predictor" / "quickstart").glob("version_*/checkpoints/*.ckpt")
    )
    assert checkpoints
    predictor = load_quality_predictor(str(checkpoints[0]), in_channels=3, num_classes=2)
    assert not predictor.training
    # after fit, the last and the best weights are tested; the results land beside the checkpoints
    run = checkpoints[0].parents[1]
    for tag in ("last", "best"):
        report = json.loads((run / f"test_metrics_{tag}.json").read_text())
        assert report["tag"] == tag and {"loss", "mae", "pearson", "spearman"} <= set(report["metrics"])
        assert 0 <= report["metrics"]["mae"] <= 1
    assert json.loads((run / "test_metrics_best.json").read_text())["checkpoint"].endswith(".ckpt")


def test_ckpt_path_last_resumes_from_the_run_before(isolated: Path) -> None:
    """``fit --ckpt_path last`` continues the previous fit of the same config, although the new fit logs (and
    would checkpoint) into a new logger version."""
    args = _tiny_fit(
        CONFIG_DIR / "predictor" / "quickstart.yaml", "--data.samples_per_image", "2", "--data.batch_size", "4",
        "--test_after_fit", "false",
    )  # fmt: skip
    cli_main(args)
    first = isolated / "runs" / "predictor" / "quickstart" / "version_0" / "checkpoints" / "last.ckpt"
    assert first.is_file()
    cli = cli_main([*args, "--trainer.max_steps", "4", "--ckpt_path", "last"])
    assert Path(cli.trainer.ckpt_path).resolve() == first.resolve()
    assert cli.trainer.global_step == 4
    assert cli.trainer.logger.version == 1  # the resumed fit logs to its own version

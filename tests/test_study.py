"""Tests for qg_lightning.study: the smoke preset end to end (resume included) and the pure helpers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from qg_lightning.cli import EXTRA_COMMANDS, main
from qg_lightning.cli_study import study_cli
from qg_lightning.data.synthetic import generate_synthetic_dataset
from qg_lightning.study import (
    DEFAULT_METHODS,
    METHODS,
    PAIRS,
    PRESETS,
    StudyConfig,
    format_mean_std,
    paired_comparison,
    resolve_schedule,
    run_study,
    steps_per_epoch,
    summarize_study,
)

METHODS_E2E = ("SUP", "PL-C", "PL-QW", "PL-oracle")
SEEDS_E2E = (0, 1)
MEAN_STD = re.compile(r"^\d\.\d{3} ± (\d\.\d{3}|n/a)$")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):
    """One smoke study on the embedded synthetic data (cache in a temporary folder): 3 methods x 2 seeds."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QG_LIGHTNING_CACHE", str(tmp_path_factory.mktemp("cache")))
        out = tmp_path_factory.mktemp("study") / "out"
        centre = generate_synthetic_dataset(
            tmp_path_factory.mktemp("centre") / "other", n_images=6, image_size=40
        )
        config = StudyConfig(
            out=str(out), seeds=SEEDS_E2E, preset="smoke", methods=METHODS_E2E, extra_test=(str(centre),)
        )
        summary = run_study(config)
        yield config, summary


def _table(results_md: Path) -> list[list[str]]:
    """Rows of the first Markdown table (header first), cells stripped."""
    rows = []
    for line in results_md.read_text().splitlines():
        if line.startswith("|"):
            if rows and line.startswith("|---"):
                continue
            rows.append([c.strip() for c in line.strip("|").split("|")])
        elif rows:
            break
    return rows


# --------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_study_writes_every_output(study):
    config, summary = study
    out = Path(config.out)
    assert summary["execution"] == {"done": 8, "skipped": 0, "redone": 0, "failed": []}
    for name in (
        "split.json",
        "study.json",
        "summary.json",
        "results.md",
        "predictor/quality_predictor.ckpt",
        "dice_per_method.png",
        "quality_pred_vs_true.png",
        "val_dice_curves.png",
        "kept_fraction.png",
    ):
        assert (out / name).is_file(), name
    results = sorted(p.relative_to(out).as_posix() for p in out.glob("runs/*/seed*/result.json"))
    assert results == sorted(f"runs/{m}/seed{s}/result.json" for m in METHODS_E2E for s in SEEDS_E2E)
    assert not list(out.glob("runs/*/seed*/checkpoints"))  # removed after testing (keep_checkpoints=False)
    split = json.loads((out / "split.json").read_text())
    assert set(split["val"]).isdisjoint(split["test"]) and split["labeled"]


@pytest.mark.slow
def test_results_table_first_column_method_second_mean_dice(study):
    config, _ = study
    rows = _table(Path(config.out) / "results.md")
    assert rows[0][:2] == ["Method", "Dice"]
    assert [r[0] for r in rows[1:]] == list(METHODS_E2E)
    for row in rows[1:]:
        assert MEAN_STD.match(row[1]), row[1]
        assert row[1] != "n/a"
    pl_qw = next(r for r in rows if r[0] == "PL-QW")
    assert "vs PL-C" in " ".join(pl_qw)


@pytest.mark.slow
def test_run_results_and_summary(study):
    config, summary = study
    out = Path(config.out)
    guided = json.loads((out / "runs/PL-QW/seed0/result.json").read_text())
    plain = json.loads((out / "runs/PL-C/seed0/result.json").read_text())
    sup = json.loads((out / "runs/SUP/seed0/result.json").read_text())
    for result in (guided, plain, sup):
        assert set(result["test_best"]) >= {"dice", "iou", "hd95"} and set(result["test_last"]) >= {"dice"}
        assert result["val_dice_curve"]["step"] and result["pretrained"] is False
        assert result["steps"] == result["schedule"]["max_steps"] == 3
    # plain and guided share everything but the guidance (and PL-C's own confidence weights)
    assert guided["guidance"]["mechanisms"] == ["qw"] and plain["guidance"] is None
    assert {k: v for k, v in guided["host_kwargs"].items() if k != "weighting"} == {
        k: v for k, v in plain["host_kwargs"].items() if k != "weighting"
    }
    assert guided["schedule"] == plain["schedule"] == sup["schedule"]
    assert guided["kept_fraction_curve"]["value"] and plain["kept_fraction_curve"] is None
    assert sup["data"]["use_unlabeled"] is False and guided["data"]["n_unlabeled_used"] > 0
    pair = next(
        c
        for c in summary["comparisons"]
        if (c["guided"], c["plain"], c["checkpoint"]) == ("PL-QW", "PL-C", "best")
    )
    assert pair["seeds"] == list(SEEDS_E2E) and len(pair["diffs"]) == 2
    assert pair["better"] + pair["worse"] + pair["ties"] == 2
    on_disk = json.loads((out / "summary.json").read_text())
    assert [m["method"] for m in on_disk["methods"]] == list(METHODS_E2E)
    predictor = on_disk["predictor"]
    assert (
        predictor["recipe"]["image_size"] == PRESETS["smoke"].image_size
    )  # the library's recipe, study-sized
    assert predictor["evaluations"]["uncalibrated"]["real"].keys() >= {"mae", "pearson", "spearman"}
    assert (out / predictor["checkpoint"]).is_file()  # relative to the study folder


@pytest.mark.slow
def test_oracle_headroom_diagnostics_and_other_centre(study):
    config, summary = study
    out = Path(config.out)
    oracle = json.loads((out / "runs/PL-oracle/seed0/result.json").read_text())
    guided = json.loads((out / "runs/PL-QW/seed0/result.json").read_text())
    sup = json.loads((out / "runs/SUP/seed0/result.json").read_text())
    assert oracle["host_kwargs"]["weighting"] == "oracle" and oracle["true_masks"] is True
    assert sup["true_masks"] is False  # supervised-only sees no unlabeled batch at all
    # the guided run logged how well predicted quality and confidence see pseudolabel quality
    assert {"true_dice_mean", "quality/kept_frac", "confidence/kept_frac", "oracle/kept_frac"} <= set(
        guided["diagnostics_curves"]
    )
    row = next(r for r in summary["methods"] if r["method"] == "PL-QW")
    assert row["diagnostics"]["quality/kept_frac"]["n_runs"] == 2
    assert row["diagnostics"]["oracle/kept_frac"]["n_runs"] == 2  # what a perfect predictor would keep
    room = summary["headroom"]
    assert (room["plain"], room["guided"], room["oracle"]) == ("PL-C", "PL-QW", "PL-oracle")
    assert room["headroom"]["seeds"] == list(SEEDS_E2E)
    # every final model was tested on the other centre as well
    assert guided["extra_test"]["other"]["n_images"] == 6 and "dice" in guided["extra_test"]["other"]["best"]
    assert row["extra_test"]["other"]["best"]["n"] == 2
    assert summary["convergence"]["n_points"] >= 1
    text = (out / "results.md").read_text()
    for heading in ("## Oracle headroom", "## Pseudolabel diagnostics", "## Other centres", "## Convergence"):
        assert heading in text, heading
    assert (out / "pseudolabel_diagnostics.png").is_file()
    # committed results name no machine folder: paths are relative to the study folder
    for path in [out / "study.json", out / "summary.json", *out.glob("runs/*/seed*/result.json")]:
        assert str(out.resolve()) not in path.read_text() and '"/' not in path.read_text(), path


@pytest.mark.slow
def test_paper_protocol_external_unlabeled_images_skip_the_oracle(tmp_path, monkeypatch):
    monkeypatch.setenv("QG_LIGHTNING_CACHE", str(tmp_path / "cache"))
    root = generate_synthetic_dataset(tmp_path / "labeled", n_images=16, image_size=40)
    other = generate_synthetic_dataset(tmp_path / "source", n_images=6, image_size=40)
    for image in (other / "images").iterdir():  # another source: its own ids
        image.rename(image.with_name(f"ext_{image.name}"))
    config = StudyConfig(
        out=str(tmp_path / "out"), root=str(root), labeled_fraction=1.0, seeds=(0,), preset="smoke",
        methods=("PL", "PL-oracle"), unlabeled_root=str(other / "images"),
    )  # fmt: skip
    summary = run_study(config)
    assert summary["execution"]["done"] == 1  # PL-oracle skipped: the unlabeled images have no masks
    result = json.loads((tmp_path / "out/runs/PL/seed0/result.json").read_text())
    assert result["data"]["n_unlabeled_external"] == 6 and result["data"]["n_unlabeled_train"] == 0
    assert result["true_masks"] is False and result["diagnostics_curves"] == {}


@pytest.mark.slow
def test_rerun_skips_finished_runs_and_redoes_interrupted_ones(study):
    config, _ = study
    out = Path(config.out)
    before = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed*/result.json")}
    summary = run_study(config)
    assert summary["execution"] == {"done": 0, "skipped": 8, "redone": 0, "failed": []}
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed*/result.json")} == before
    # an interrupted run: its folder exists without result.json -> trained again from scratch
    victim = out / "runs/PL-C/seed1"
    (victim / "result.json").unlink()
    (victim / "stale.txt").write_text("left over by an interrupted run")
    summary = run_study(config)
    assert summary["execution"] == {"done": 1, "skipped": 7, "redone": 1, "failed": []}
    assert (victim / "result.json").is_file() and not (victim / "stale.txt").exists()


@pytest.mark.slow
def test_resume_with_other_settings_is_refused(study):
    config, _ = study
    other = StudyConfig(
        out=config.out, seeds=(0,), preset=PRESETS["smoke"].replace(budget=6), methods=("SUP",)
    )
    with pytest.raises(ValueError, match="other settings"):
        run_study(other)


@pytest.mark.slow
def test_estimate_times_steps_with_the_unsupervised_branch_on(tmp_path, monkeypatch):
    """The hosts skip their unsupervised passes while its weight is 0 (warm-up): the estimate must time steps
    past the warm-up, or it projects SSL runs at about the cost of a supervised run."""
    import qg_lightning.study.estimate as estimate_module
    from qg_lightning.methods import PseudoLabelSegmenter
    from qg_lightning.quality.estimate import TimeEstimate

    monkeypatch.setenv("QG_LIGHTNING_CACHE", str(tmp_path / "cache"))
    stub = TimeEstimate(60.0, {"snapshots": 20.0, "predictor": 40.0}, {})
    monkeypatch.setattr(estimate_module, "estimate_predictor_time", lambda *a, **k: stub)
    calls: list[bool] = []
    original = PseudoLabelSegmenter.unsupervised_terms

    def spy(self, unlabeled):
        calls.append(self.guidance_uses("qw"))
        return original(self, unlabeled)

    monkeypatch.setattr(PseudoLabelSegmenter, "unsupervised_terms", spy)
    preset = PRESETS["smoke"].replace(unsup_warmup=50, unsup_ramp=10)  # warm-up past every timed step
    config = StudyConfig(
        out=str(tmp_path / "out"), seeds=(0, 1), preset=preset, methods=("SUP", "PL", "PL-QW")
    )
    result = estimate_module.estimate_study(config, timed_steps=2, warmup_steps=1)
    steps = 1 + 2 + 1
    assert calls.count(False) == steps and calls.count(True) == steps  # PL, then PL-QW with its predictor
    assert not (tmp_path / "out").exists()  # nothing is written to --out
    schedule = result["schedule"]
    for name in ("SUP", "PL", "PL-QW"):
        figures = result["per_method"][name]
        assert figures["step_s"] > 0 and figures["run_s"] > schedule["max_steps"] * figures["step_s"]
    assert result["predictor_s"] == 40.0 and result["snapshots_s"] == 20.0
    runs = sum(f["run_s"] for f in result["per_method"].values()) * 2
    assert result["runs_s"] == pytest.approx(runs) and result["total_s"] == pytest.approx(runs + 60.0)


# ------------------------------------------------------------------------------------------ pure helpers
def test_registry_covers_defaults_and_pairs():
    assert set(DEFAULT_METHODS) <= set(METHODS)
    for plain, guided in PAIRS:
        assert METHODS[guided].guidance is not None and METHODS[plain].guidance in (None, "qw")
        assert METHODS[guided].host == METHODS[plain].host or (plain, guided) in {
            ("SUP", "QAR"),
            ("PL-C", "PL-QW"),
            ("PL-T", "PL-QW"),
        }
    assert METHODS["FixMatch"].unlabeled_views == "weak_strong" and not METHODS["SUP"].use_unlabeled


def test_class_reduction_variants_reach_the_callback(tmp_path: Path):
    from qg_lightning.study.methods import MethodSpec
    from qg_lightning.study.runs import guidance_kwargs

    config = StudyConfig(out=tmp_path, seeds=(0,), preset=PRESETS["smoke"], methods=("PL-QW",))
    schedule = resolve_schedule(PRESETS["smoke"], steps_per_epoch=1)
    for name, reduction in (("PL-QW", "mean"), ("PL-QW-min", "min"), ("PL-QW-product", "product")):
        spec = METHODS[name]
        assert (
            spec.class_reduction == reduction
            and spec.guidance == "qw"
            and spec.host_kwargs == {"weighting": "none"}
        )
        assert guidance_kwargs(spec, config, schedule, "g.ckpt", 1.0)["class_reduction"] == reduction
    with pytest.raises(ValueError, match="class_reduction.*'max'"):
        MethodSpec("X", "PseudoLabelSegmenter", guidance="qw", class_reduction="max")


def test_schedule_resolution_in_steps_and_epochs():
    assert steps_per_epoch(45, 403, 8, 16) == 25
    assert steps_per_epoch(4, 0, 8, 16) == 1
    paper = resolve_schedule(PRESETS["paper"], steps_per_epoch=25)
    assert (paper.max_steps, paper.val_every, paper.unsup_warmup, paper.qar_ramp) == (5000, 25, 375, 1000)
    cpu = resolve_schedule(PRESETS["cpu"].replace(budget=110, val_every=25), steps_per_epoch=7)
    assert cpu.max_steps == 125 and cpu.max_steps % cpu.val_every == 0  # rounded up to a validation
    with pytest.raises(ValueError, match="steps_per_epoch"):
        resolve_schedule(PRESETS["cpu"], steps_per_epoch=0)


def test_paired_comparison_and_formatting():
    one = paired_comparison({0: 0.8}, {0: 0.7, 1: 0.6})
    assert one["seeds"] == [0] and one["p_value"] is None and one["better"] == 1
    same = paired_comparison({0: 0.5, 1: 0.6}, {0: 0.5, 1: 0.6})
    assert same["mean_diff"] == 0 and same["ties"] == 2 and same["p_value"] is None
    assert format_mean_std(0.81234, 0.0111) == "0.812 ± 0.011"
    assert format_mean_std(0.5, None) == "0.500 ± n/a" and format_mean_std(None, None) == "n/a"


def test_invalid_settings_fail_early(tmp_path):
    with pytest.raises(ValueError, match="n_labeled"):
        StudyConfig(out=str(tmp_path), n_labeled=5, labeled_fraction=0.1)
    with pytest.raises(ValueError, match="preset"):
        StudyConfig(out=str(tmp_path), preset="huge")
    with pytest.raises(FileNotFoundError, match="root"):
        StudyConfig(out=str(tmp_path), root=str(tmp_path / "missing"))
    (tmp_path / "other" / "masks").mkdir(parents=True)  # an extra test folder lacking the study's mask folder
    with pytest.raises(FileNotFoundError, match=r"other.*--extra-test.*masks_3class"):
        StudyConfig(out=str(tmp_path), extra_test=(str(tmp_path / "other"),), mask_dir="masks_3class")
    with pytest.raises(ValueError, match="Unknown method"):
        run_study(StudyConfig(out=str(tmp_path / "o"), methods=("SUP", "PL-XYZ"), preset="smoke"))
    with pytest.raises(ValueError, match="budget"):
        PRESETS["cpu"].replace(budget=0)
    with pytest.raises(ValueError, match="Unknown preset field"):
        PRESETS["cpu"].replace(steps=3)


def test_summary_of_single_seed_results_without_plain_host(tmp_path):
    out = tmp_path / "study"
    run = out / "runs" / "PL-QW" / "seed3"
    run.mkdir(parents=True)
    block = {"dice": {"mean": 0.75, "std": 0.1, "n": 4}, "iou": {"mean": 0.6, "std": 0.1, "n": 4},
             "hd95": {"mean": 7.25, "std": 2.0, "n": 4}}  # fmt: skip
    result = {"method": "PL-QW", "seed": 3, "status": "done", "host": "PseudoLabelSegmenter",
              "guidance": {"mechanisms": ["qw"]}, "test_best": block, "test_last": block, "steps": 3,
              "val_dice_curve": {"step": [2], "value": [0.7]}, "kept_fraction_curve": {"step": [0, 1, 2],
              "value": [0.5, 0.5, 1.0]}, "wall_time_s": 4.0}  # fmt: skip
    (run / "result.json").write_text(json.dumps(result))
    summary = summarize_study(out, plots=False)
    assert summary["comparisons"] == []  # PL-C / PL-T were not run
    rows = _table(out / "results.md")
    assert rows[1][:2] == ["PL-QW", "0.750 ± n/a"] and rows[1][3] == "7.2 ± n/a"


def test_cli_has_study_command(capsys):
    assert "study" in EXTRA_COMMANDS
    with pytest.raises(SystemExit) as exit_info:
        main(["study", "--help"])
    assert exit_info.value.code == 0
    assert "--preset" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        study_cli(["--synthetic"])  # --out is required

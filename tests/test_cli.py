"""The ``qg-lightning`` console script: one-line errors for bad input to the one-off commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from qg_lightning import cli


def _run(monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    monkeypatch.setattr("sys.argv", ["qg-lightning", *argv])
    return cli.console_main()


def test_bad_input_to_a_command_is_one_line_with_status_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("QG_LIGHTNING_TRACEBACK", raising=False)
    missing = str(tmp_path / "nope.ckpt")
    args = ["--images", str(tmp_path), "--masks", str(tmp_path), "--out", str(tmp_path / "s.csv")]
    assert _run(monkeypatch, "score", "--predictor", missing, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("qg-lightning score: error: Not found: --predictor") and missing in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_the_traceback_on_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QG_LIGHTNING_TRACEBACK", "1")
    args = ["--images", str(tmp_path), "--masks", str(tmp_path), "--out", str(tmp_path / "s.csv")]
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        _run(monkeypatch, "score", "--predictor", str(tmp_path / "nope.ckpt"), *args)


def test_lightning_commands_keep_their_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ValueError during ``fit`` may be a bug hours into training: it is never shortened."""
    monkeypatch.delenv("QG_LIGHTNING_TRACEBACK", raising=False)

    def failing_main() -> int:
        raise ValueError("boom")

    monkeypatch.setattr(cli, "main", failing_main)
    with pytest.raises(ValueError, match="boom"):
        _run(monkeypatch, "fit", "--config", "x.yaml")

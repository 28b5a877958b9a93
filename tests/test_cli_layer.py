"""Library below, applications above: every command line of qg_lightning lives in qg_lightning.cli*."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import qg_lightning

PACKAGE = Path(qg_lightning.__file__).parent
LIBRARY = sorted(p for p in PACKAGE.rglob("*.py") if not p.name.startswith("cli"))

MOVED = [
    ("qg_lightning.quality.evaluation", "qg_lightning.cli_evaluate", "evaluate_predictor_cli"),
    ("qg_lightning.quality.calibration", "qg_lightning.cli_calibrate", "calibrate_cli"),
    ("qg_lightning.quality.scoring", "qg_lightning.cli_score", "score_cli"),
    ("qg_lightning.quality.gallery", "qg_lightning.cli_gallery", "gallery_cli"),
    ("qg_lightning.study", "qg_lightning.cli_study", "study_cli"),
]


@pytest.mark.parametrize(("old", "new", "name"), MOVED, ids=[m[2] for m in MOVED])
def test_moved_commands_stay_importable_from_the_library_modules(old: str, new: str, name: str) -> None:
    library = importlib.import_module(old)
    assert getattr(library, name) is getattr(importlib.import_module(new), name)
    assert name in library.__all__
    with pytest.raises(AttributeError, match="no_such_name"):
        library.no_such_name  # noqa: B018


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_library_modules_parse_no_argv_and_redirect_no_stdout(path: Path) -> None:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    assert "argparse" not in names, (
        f"{path.name} builds a command-line parser; move it to qg_lightning/cli_*.py"
    )
    assert "contextlib.redirect_stdout" not in names, f"{path.name} redirects stdout"

"""The plug-in's core depends on the quality network only, never on the predictor's training code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import qg_lightning.guidance

GUIDANCE = Path(qg_lightning.guidance.__file__).parent
ALLOWED = {"qg_lightning.quality.network"}


def _imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` / ``from ... import`` in ``path`` names, at any depth (also in functions)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # `from qg_lightning import quality` / `from qg_lightning.quality import predictor`
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


@pytest.mark.parametrize("path", sorted(GUIDANCE.glob("*.py")), ids=lambda p: p.name)
def test_guidance_imports_only_the_quality_network(path: Path) -> None:
    quality = {
        name
        for name in _imported_modules(path)
        if name == "qg_lightning.quality" or name.startswith("qg_lightning.quality.")
    }
    # `from qg_lightning.quality.network import X` also yields "qg_lightning.quality.network.X"
    outside = {name for name in quality if not any(name == a or name.startswith(a + ".") for a in ALLOWED)}
    assert not outside, f"{path.name} imports {sorted(outside)}; guidance may import only {sorted(ALLOWED)}"


def test_the_rule_sees_the_callback_loading_the_network() -> None:
    assert "qg_lightning.quality.network" in _imported_modules(GUIDANCE / "callback.py")

"""The package ``__init__`` files re-export lazily (qg_lightning._lazy): importing a package stays light, and
every public name still imports from where it always did."""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import qg_lightning
from qg_lightning._lazy import lazy_exports

PACKAGES = [
    "qg_lightning",
    "qg_lightning.data",
    "qg_lightning.guidance",
    "qg_lightning.methods",
    "qg_lightning.metrics",
    "qg_lightning.quality",
    "qg_lightning.study",
]
#: Public names that a package defines itself or takes from the CLI layer (not from a TYPE_CHECKING import).
OWN = {"qg_lightning": {"__version__"}, "qg_lightning.study": {"study_cli"}}
REPO = Path(qg_lightning.__file__).resolve().parents[1]


def _fresh(code: str, env: dict[str, str] | None = None) -> dict:
    """Run ``code`` in a new interpreter (this checkout's qg_lightning first) and return what it prints as JSON."""
    base = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    base["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    done = subprocess.run(
        [sys.executable, "-c", code], env={**base, **(env or {})}, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


LOADED = """
import json, os, sys
import {package}
print(json.dumps({{"modules": sorted(sys.modules), "albumentations_env": os.environ.get("NO_ALBUMENTATIONS_UPDATE")}}))
"""


def test_import_qg_lightning_imports_no_submodule_and_sets_the_albumentations_default() -> None:
    seen = _fresh(LOADED.format(package="qg_lightning"))
    ours = [m for m in seen["modules"] if m.startswith("qg_lightning")]
    assert ours == ["qg_lightning", "qg_lightning._lazy"], ours
    heavy = {"torch", "lightning", "segmentation_models_pytorch", "albumentations", "timm"} & set(
        seen["modules"]
    )
    assert not heavy, heavy
    assert seen["albumentations_env"] == "1"


def test_an_explicit_albumentations_setting_is_kept() -> None:
    seen = _fresh(LOADED.format(package="qg_lightning"), env={"NO_ALBUMENTATIONS_UPDATE": "0"})
    assert seen["albumentations_env"] == "0"


def test_import_qg_lightning_guidance_imports_none_of_its_modules() -> None:
    seen = _fresh(LOADED.format(package="qg_lightning.guidance"))
    ours = {m for m in seen["modules"] if m.startswith("qg_lightning")}
    assert ours == {"qg_lightning", "qg_lightning._lazy", "qg_lightning.guidance"}, ours
    assert "segmentation_models_pytorch" not in seen["modules"]


def test_a_top_level_name_loads_only_what_it_needs() -> None:
    code = (
        "import json, sys\nfrom qg_lightning import QualityReweightCallback\n"
        "print(json.dumps({'modules': sorted(sys.modules)}))"
    )
    modules = set(_fresh(code)["modules"])
    assert "qg_lightning.guidance.callback" in modules
    assert not {"qg_lightning.study", "segmentation_models_pytorch", "qg_lightning.data.datamodule"} & modules


def _type_checking_imports(package: str) -> dict[str, str]:
    """name -> module of the ``from M import name`` statements under ``if TYPE_CHECKING:`` in the package's
    ``__init__``."""
    tree = ast.parse(Path(importlib.import_module(package).__file__).read_text())
    names: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom) and imp.module, ast.dump(imp)
                names.update({alias.asname or alias.name: imp.module for alias in imp.names})
    return names


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_resolves_to_its_module_object(package: str) -> None:
    pkg = importlib.import_module(package)
    declared = _type_checking_imports(package)
    # the three lists agree: __all__, the TYPE_CHECKING imports (type checkers, docs) and the lazy map (run time)
    assert set(pkg.__all__) == set(declared) | OWN.get(package, set())
    for name, module in declared.items():
        assert getattr(pkg, name) is getattr(importlib.import_module(module), name), name
    for name in pkg.__all__:
        assert name in dir(pkg)
    with pytest.raises(AttributeError, match=f"module '{package}' has no attribute 'no_such_name'"):
        pkg.no_such_name  # noqa: B018


def test_public_import_paths_and_subpackages() -> None:
    from qg_lightning import QualityPredictor, QualityReweightCallback, SupervisedSegmenter
    from qg_lightning.guidance.callback import QualityReweightCallback as direct
    from qg_lightning.methods import SupervisedSegmenter as host
    from qg_lightning.quality.predictor import QualityPredictor as predictor

    assert QualityReweightCallback is direct and SupervisedSegmenter is host and QualityPredictor is predictor
    assert qg_lightning.quality is importlib.import_module("qg_lightning.quality")
    namespace: dict = {}
    exec("from qg_lightning.metrics import *", namespace)  # star imports follow __all__
    assert set(qg_lightning.metrics.__all__) <= set(namespace)


def test_lazy_exports_refuses_a_name_given_twice() -> None:
    with pytest.raises(ValueError, match="names 'x' twice"):
        lazy_exports("pkg", {"a": ("x",), "b": ("x", "y")})

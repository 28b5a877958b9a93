"""Lazy re-exports for the package ``__init__`` files (PEP 562 module ``__getattr__`` and ``__dir__``).

``import qg_lightning`` should not import torch, Lightning, segmentation_models_pytorch and every submodule
just to reach one name. Each ``__init__`` names where its public names live; :func:`lazy_exports` builds the
module's ``__getattr__`` (import the submodule on first access, then keep the name in the package so later
accesses are ordinary attribute look-ups) and ``__dir__`` (what ``dir()`` and tab completion list).

The ``__init__`` files also import the same names under ``if TYPE_CHECKING:``, for type checkers and the API
docs, which read the source; ``tests/test_lazy.py`` checks that the three lists (those imports, the map and
``__all__``) agree.

Example:
    >>> import sys, types
    >>> pkg = types.ModuleType("demo_pkg")
    >>> sys.modules["demo_pkg"] = pkg
    >>> pkg.__getattr__, pkg.__dir__ = lazy_exports("demo_pkg", {"json": ("dumps",)}, submodules=("lazy",))
    >>> pkg.dumps([1, 2])
    '[1, 2]'
    >>> "dumps" in vars(pkg), "dumps" in dir(pkg), "lazy" in dir(pkg)
    (True, True, True)
    >>> pkg.nothing
    Traceback (most recent call last):
        ...
    AttributeError: module 'demo_pkg' has no attribute 'nothing'
    >>> del sys.modules["demo_pkg"]
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, Sequence[str]], *, submodules: Sequence[str] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for the package ``package`` whose public names live in other modules.

    Args:
        package: the package's ``__name__``.
        exports: module name (absolute) -> the names the package re-exports from it.
        submodules: names of the package's own submodules that are attributes of the package without an
            import of their own (``import qg_lightning; qg_lightning.quality``), as eager imports made them.

    Returns:
        The two functions, to be bound as the package's module-level ``__getattr__`` and ``__dir__``.

    Raises:
        ValueError: ``exports`` names the same attribute twice.
    """
    where: dict[str, str] = {}
    for module, names in exports.items():
        for name in names:
            if name in where:
                raise ValueError(
                    f"`exports` of {package!r} names {name!r} twice (in {where[name]!r} and {module!r}); "
                    "re-export each name from one module."
                )
            where[name] = module
    for name in submodules:
        where.setdefault(name, f"{package}.{name}")

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        imported = importlib.import_module(module)
        value = imported if module == f"{package}.{name}" else getattr(imported, name)
        setattr(sys.modules[package], name, value)  # found directly from now on, as if imported eagerly
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(where))

    return __getattr__, __dir__

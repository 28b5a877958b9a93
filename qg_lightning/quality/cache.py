"""Stage caches of a multi-stage run: a marker file per stage records the settings the stage's output
depends on, so a rerun skips what is done and refuses outputs made with other settings.

Example:
    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     stage = StageCache("train", pathlib.Path(tmp) / "train.done.json", {"lr": 0.1})
    ...     before = stage.cached()
    ...     _ = stage.done({"epochs": 3})
    ...     after = StageCache("train", stage.marker, {"lr": 0.1}).cached()
    ...     try:
    ...         StageCache("train", stage.marker, {"lr": 0.2}).cached()
    ...     except CacheMismatchError as err:
    ...         changed = "lr: 0.1 -> 0.2" in str(err)
    >>> before, after, changed
    (None, {'epochs': 3}, True)
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from qg_lightning.quality.recipe import fingerprint

__all__ = ["CacheMismatchError", "StageCache", "read_json", "relative_path", "write_json"]


class CacheMismatchError(ValueError):
    """A stage's cached output was made with other settings."""


def read_json(path: str | Path) -> dict[str, Any]:
    """The JSON object in ``path``."""
    return json.loads(Path(path).read_text())


def write_json(path: str | Path, value: Any) -> Path:
    """Write ``value`` as indented JSON, atomically (a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    tmp.replace(path)
    return path


def relative_path(path: str | Path, base: Path) -> str:
    """``path`` relative to ``base`` (so markers and reports stay valid when a run's folder moves)."""
    return Path(path).resolve().relative_to(base.resolve()).as_posix()


class StageCache:
    """One stage's cache: its marker file and the settings its output depends on.

    Args:
        name: the stage's name (in messages).
        marker: the marker file (JSON: the settings, their fingerprint and the stage's ``info``).
        settings: JSON-ready settings the output depends on.
        interchangeable: keys of ``settings`` whose values may differ from the marker's when every other
            setting matches, e.g. a file's path where the file's hash is a setting too (a moved output with
            its split file elsewhere is still the same stage).
    """

    def __init__(
        self, name: str, marker: Path, settings: Mapping[str, Any], *, interchangeable: Collection[str] = ()
    ) -> None:
        self.name, self.marker, self.settings = name, Path(marker), dict(settings)
        self.fingerprint = fingerprint(self.settings)
        self.interchangeable = frozenset(interchangeable)

    def cached(self) -> dict[str, Any] | None:
        """The marker's ``info`` when the stage was done with the same settings; ``None`` when not done.

        Raises:
            CacheMismatchError: the marker records other settings (the message lists them and the fix).
        """
        if not self.marker.is_file():
            return None
        saved = read_json(self.marker)
        if saved.get("fingerprint") == self.fingerprint:
            return saved.get("info", {})
        before = saved.get("settings", {})
        keys = [
            key
            for key in sorted(set(before) | set(self.settings))
            if before.get(key, "<unset>") != self.settings.get(key, "<unset>")
        ]
        if keys and set(keys) <= self.interchangeable:
            return saved.get("info", {})
        changed = [
            f"{key}: {before.get(key, '<unset>')!r} -> {self.settings.get(key, '<unset>')!r}" for key in keys
        ]
        raise CacheMismatchError(
            f"The {self.name} stage cached in '{self.marker.parent}' was made with other settings "
            f"({'; '.join(changed) or 'unknown differences'}). Use another output folder (--out), or delete "
            f"'{self.marker}' to redo this stage (later stages are then redone too)."
        )

    def done(self, info: Mapping[str, Any]) -> dict[str, Any]:
        """Record the stage as done with ``info`` (JSON-ready); return ``info``."""
        record = {
            "stage": self.name,
            "fingerprint": self.fingerprint,
            "settings": self.settings,
            "info": dict(info),
        }
        write_json(self.marker, record)
        return dict(info)

"""The standard dataset folder layout: scanning, reading and validating every file before training.

Layout::

    ROOT/images/<id>.<png|jpg|jpeg|tif|tiff|bmp>   8-bit grayscale or RGB images
    ROOT/masks/<id>.png                            binary {0, 255} or {0, 1}, or class indices 0..K-1
    ROOT/unlabeled/<id>.<ext>                      optional: images without masks
    ROOT/split.json                                optional: {"train": [...], "val": [...], "test": [...],
                                                   "labeled": [... subset of train]}

:func:`scan_folder` decodes every file once (in a small thread pool) and collects *all* problems before
raising one :class:`DataValidationError` that names each bad file, says what is wrong and how to fix it.
With ``skip_bad=True`` the bad files are dropped with a warning instead.

Example:
    >>> import tempfile
    >>> from qg_lightning.data.synthetic import generate_synthetic_dataset
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     root = generate_synthetic_dataset(Path(tmp) / "d", n_images=4, image_size=32)
    ...     index = scan_folder(root)
    ...     index.ids, int(read_mask(index.mask_paths["syn_00001"], 2).max())
    (['syn_00000', 'syn_00001', 'syn_00002', 'syn_00003'], 1)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from qg_lightning._validation import check_in_channels
from qg_lightning.masks import check_num_classes

__all__ = [
    "IMAGE_EXTENSIONS",
    "MASK_EXTENSIONS",
    "DataValidationError",
    "FolderIndex",
    "check_mask_folder",
    "read_image",
    "read_mask",
    "scan_folder",
    "scan_image_folder",
]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MASK_EXTENSIONS: tuple[str, ...] = (".png",)
LAYOUT = (
    "expected layout: ROOT/images/<id>.<png|jpg|jpeg|tif|tiff|bmp>, ROOT/masks/<id>.png (same <id>), "
    "optional ROOT/unlabeled/<id>.<ext> and ROOT/split.json"
)
_IMAGE_MODES = "8-bit grayscale (L) or RGB (also 1-bit, palette P, and LA/RGBA with an opaque alpha)"
_MASK_MODES = "8-bit single channel (L, P or 1-bit), or RGB with three equal channels"
_MAX_LISTED = 12


#: How the errors below spell their fix and name their argument, in Python terms; the command line
#: (:mod:`qg_lightning.cli`) rewrites these into its flags (``--data.skip_bad true``, ``--data.root``).
SKIP_BAD_FIX = "pass skip_bad=True"
ROOT_ARGUMENT = "argument `root`"
MASK_DIR_ARGUMENT = "argument `mask_dir`"


class DataValidationError(ValueError):
    """A dataset folder has problems; the message lists every bad file, the reason and the fix.

    The message is never truncated: it has one line per bad file. The same list is available as data.

    Attributes:
        root: the dataset folder (``None`` when the error concerns a single file or no folder).
        problems: relative path (POSIX, e.g. ``"masks/a.png"``) -> reason, for every bad file; empty when the
            error is about the folder as a whole (missing ``images/``, no pairs left, ...).

    Example:
        >>> err = DataValidationError("2 problems", root="/data", problems={"masks/a.png": "is empty"})
        >>> err.problems, str(err)
        ({'masks/a.png': 'is empty'}, '2 problems')
    """

    def __init__(
        self, message: str, *, root: str | os.PathLike | None = None, problems: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.root = None if root is None else Path(root)
        self.problems: dict[str, str] = dict(problems or {})


class _FileProblem(Exception):
    """One problem with one file (collected by :func:`scan_folder`)."""


@dataclass
class FolderIndex:
    """Files of a dataset folder in the standard layout.

    Attributes:
        root: dataset root.
        ids: sorted ids of labeled pairs (image and mask both present and valid).
        image_paths: id -> image file, for every id in ``ids``.
        mask_paths: id -> mask file, for every id in ``ids``.
        unlabeled_paths: id -> image file in ``ROOT/unlabeled`` (images without masks).
        skipped: relative path -> reason, for files dropped with ``skip_bad=True``.
        decoded: path (str) -> decoded array (image ``uint8 (H, W, C)`` or mask ``uint8 (H, W)`` in 0..K-1),
            filled only when :func:`scan_folder` is called with ``keep_decoded=True``.
    """

    root: Path
    ids: list[str]
    image_paths: dict[str, Path]
    mask_paths: dict[str, Path]
    unlabeled_paths: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    decoded: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)


def _bit_depth_above_8(img: Image.Image) -> bool:
    """True when the file stores more than 8 bits per sample (Pillow may silently cut 16-bit RGB to 8)."""
    for tile in getattr(img, "tile", None) or []:
        args = tile[-1] if not hasattr(tile, "args") else tile.args
        rawmode = args if isinstance(args, str) else (args[0] if isinstance(args, tuple) and args else "")
        if isinstance(rawmode, str) and (
            ";16" in rawmode or ";32" in rawmode or rawmode.startswith(("I", "F"))
        ):
            return True
    bits = getattr(img, "tag_v2", {}).get(258) if hasattr(img, "tag_v2") else None
    if isinstance(bits, tuple) and any(b > 8 for b in bits):
        return True
    return isinstance(bits, int) and bits > 8


def _open_decoded(path: Path) -> Image.Image:
    """Open and fully decode ``path``; raise :class:`_FileProblem` with a reason and fix."""
    try:
        size = path.stat().st_size
    except OSError as err:
        raise _FileProblem(f"cannot be read ({err.strerror}). Check the file permissions.") from None
    if size == 0:
        raise _FileProblem("is an empty file (0 bytes). Re-export or re-copy it.")
    try:
        img = Image.open(path)
    except UnidentifiedImageError:
        raise _FileProblem(
            "is not a readable image (unknown or corrupt format). Re-export it as PNG."
        ) from None
    except OSError as err:
        raise _FileProblem(f"cannot be opened ({err}). Re-export it as PNG.") from None
    if img.mode.startswith(("I", "F")) or _bit_depth_above_8(img):
        raise _FileProblem(
            f"has unsupported mode {img.mode} with 16/32-bit samples; accepted: {_IMAGE_MODES}. "
            "Scale the data to 0..255 and save it as 8-bit (e.g. PNG)."
        )
    if img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        raise _FileProblem(
            f"has unsupported mode {img.mode}; accepted: {_IMAGE_MODES}. "
            "Convert it to RGB, e.g. PIL Image.convert('RGB'), and save it as PNG."
        )
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as err:
        raise _FileProblem(f"is truncated or corrupt ({err}). Re-export or re-copy it.") from None
    return img


def _image_array(img: Image.Image, in_channels: int) -> np.ndarray:
    """Accepted PIL image -> ``uint8 (H, W, in_channels)``; raises :class:`_FileProblem` for other modes."""
    mode = img.mode
    if mode in ("LA", "RGBA", "PA"):
        alpha = np.asarray(img.getchannel("A"))
        if alpha.min() < 255:
            raise _FileProblem(
                f"has mode {mode} with transparent pixels; accepted: {_IMAGE_MODES}. "
                "Flatten it onto a background and save as RGB."
            )
        img = img.convert("RGB" if mode in ("RGBA", "PA") else "L")
    elif mode in ("1", "P"):
        img = img.convert("RGB" if mode == "P" else "L")
    elif mode not in ("L", "RGB"):
        raise _FileProblem(f"has unsupported mode {mode}; accepted: {_IMAGE_MODES}. Convert it to RGB.")
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[-1] != in_channels:
        if in_channels == 1:
            arr = np.asarray(img.convert("L"))[..., None]
        else:
            arr = np.repeat(arr, 3, axis=-1)
    return np.ascontiguousarray(arr, dtype=np.uint8)


def _format_values(values: Iterable[int]) -> str:
    values = list(values)
    shown = ", ".join(str(v) for v in values[:_MAX_LISTED])
    return shown + (f", ... ({len(values)} values)" if len(values) > _MAX_LISTED else "")


def _mask_array(img: Image.Image, num_classes: int) -> np.ndarray:
    """Accepted PIL mask -> ``uint8 (H, W)`` class indices; raises :class:`_FileProblem` otherwise."""
    mode = img.mode
    if mode == "1":
        arr = np.asarray(img, dtype=np.uint8)
    elif mode in ("L", "P"):
        arr = np.asarray(img)
    elif mode == "RGB":
        rgb = np.asarray(img)
        if not ((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()):
            raise _FileProblem(
                f"is a colour (RGB) mask with differing channels; accepted: {_MASK_MODES}. "
                "Convert colours to class indices 0..K-1 and save as a single-channel PNG."
            )
        arr = rgb[..., 0]
    else:
        raise _FileProblem(
            f"has unsupported mask mode {mode}; accepted: {_MASK_MODES}. "
            "Save it as an 8-bit single-channel PNG."
        )
    present = np.flatnonzero(np.bincount(arr.ravel(), minlength=256))
    if present.max(initial=0) <= num_classes - 1:
        return np.ascontiguousarray(arr, dtype=np.uint8)
    if set(present.tolist()) <= {0, 255}:
        return (arr == 255).astype(np.uint8)
    stray = [int(v) for v in present if v > num_classes - 1]
    raise _FileProblem(
        f"has mask values {_format_values(stray)} that are neither binary {{0, 255}} nor class indices "
        f"0..{num_classes - 1} (num_classes={num_classes}). Threshold binary masks (e.g. value > 127 -> 255; "
        "JPEG masks are lossy, save masks as PNG), or set `num_classes` to match the classes."
    )


def read_image(path: str | os.PathLike, in_channels: int = 3) -> np.ndarray:
    """Read an image as ``uint8 (H, W, in_channels)``; grayscale and RGB are converted to ``in_channels``.

    Raises:
        DataValidationError: the file is empty, corrupt, truncated or has an unsupported mode (CMYK, 16-bit).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     Image.new("L", (4, 2), 7).save(f"{tmp}/a.png")
        ...     read_image(f"{tmp}/a.png", 3).shape
        (2, 4, 3)
    """
    check_in_channels(in_channels)
    path = Path(path)
    try:
        with _open_decoded(path) as img:
            return _image_array(img, in_channels)
    except _FileProblem as err:
        raise DataValidationError(f"Image '{path}' {err}") from None


def read_mask(path: str | os.PathLike, num_classes: int = 2) -> np.ndarray:
    """Read a mask as ``uint8 (H, W)`` class indices ``0..num_classes-1`` (binary ``{0, 255}`` -> ``{0, 1}``).

    Raises:
        DataValidationError: unreadable file, unsupported mode, or values neither binary nor in ``0..K-1``.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     Image.fromarray(np.array([[0, 255]], np.uint8)).save(f"{tmp}/m.png")
        ...     read_mask(f"{tmp}/m.png", 2).tolist()
        [[0, 1]]
    """
    check_num_classes(num_classes)
    path = Path(path)
    try:
        with _open_decoded(path) as img:
            return _mask_array(img, num_classes)
    except _FileProblem as err:
        raise DataValidationError(f"Mask '{path}' {err}") from None


def _list_files(folder: Path, extensions: tuple[str, ...], problems: dict[str, str], root: Path, kind: str):
    """id -> path for files with an accepted extension; other files are problems (hidden files ignored)."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        rel = path.relative_to(root).as_posix()
        if path.suffix.lower() not in extensions:
            problems[rel] = (
                f"has unsupported extension '{path.suffix}' for {kind}; accepted: {', '.join(extensions)}. "
                "Convert it or move it out of the folder."
            )
            continue
        if path.stem in found:
            problems[rel] = (
                f"has the same id '{path.stem}' as {found[path.stem].relative_to(root).as_posix()}. "
                "Keep one file per id."
            )
            continue
        found[path.stem] = path
    return found


def _check_pair(image_path: Path, mask_path: Path, in_channels: int, num_classes: int, keep: bool):
    """Decode one pair; return ``(problems, decoded)`` where problems maps path -> reason."""
    problems: dict[Path, str] = {}
    image = mask = None
    try:
        with _open_decoded(image_path) as img:
            image = _image_array(img, in_channels)
    except _FileProblem as err:
        problems[image_path] = str(err)
    try:
        with _open_decoded(mask_path) as img:
            mask = _mask_array(img, num_classes)
    except _FileProblem as err:
        problems[mask_path] = str(err)
    if image is not None and mask is not None and image.shape[:2] != mask.shape:
        ih, iw = image.shape[:2]
        mh, mw = mask.shape
        problems[mask_path] = (
            f"is {mw}x{mh} (WxH) but its image images/{image_path.name} is {iw}x{ih}. "
            "Masks must have exactly the size of their image; re-export the mask "
            "(resize with nearest neighbour)."
        )
    decoded = {str(image_path): image, str(mask_path): mask} if keep and not problems else {}
    return problems, decoded


def _check_image(path: Path, in_channels: int, keep: bool):
    try:
        with _open_decoded(path) as img:
            image = _image_array(img, in_channels)
    except _FileProblem as err:
        return {path: str(err)}, {}
    return {}, ({str(path): image} if keep else {})


def _raise_or_skip(root: Path, problems: dict[str, str], skip_bad: bool) -> None:
    """Raise one error listing every problem, or, with ``skip_bad``, log the files that will be skipped."""
    if not problems:
        return
    if not skip_bad:
        _raise_problems(root, problems, header=f"Found {len(problems)} problem(s)")
    listed = "\n".join(f"  - {rel}: {reason}" for rel, reason in sorted(problems.items()))
    log.warning("Skipping %d bad file(s) in '%s' (skip_bad=True):\n%s", len(problems), root, listed)


def _check_mask_dir(mask_dir: str) -> None:
    if (
        not isinstance(mask_dir, str)
        or not mask_dir
        or Path(mask_dir).name != mask_dir
        or mask_dir in (".", "..", "images", "unlabeled")
    ):
        raise ValueError(
            f"`mask_dir` must be the name of a mask folder inside the dataset root (e.g. 'masks' or "
            f"'masks_3class'), not a path or 'images'/'unlabeled'; got {mask_dir!r}."
        )


def _mask_folders(root: Path) -> list[str]:
    """Sub-folders of ``root`` that could hold masks (everything but ``images`` and ``unlabeled``)."""
    try:
        children = sorted(p.name for p in root.iterdir() if p.is_dir())
    except OSError:
        return []
    return [name for name in children if name not in ("images", "unlabeled") and not name.startswith(".")]


def check_mask_folder(
    root: str | os.PathLike | None,
    mask_dir: str,
    *,
    key: str | None = None,
    option: str = "`mask_dir`",
    root_option: str = "`root`",
) -> None:
    """Check ``mask_dir`` before any work: a plain folder name, and, when ``root`` is an existing folder, one
    of its sub-folders; with ``root`` None (the embedded synthetic data) only ``masks``. A ``root`` that does
    not exist is left to the caller's own check.

    Args:
        root: the dataset folder, or None.
        mask_dir: the mask sub-folder's name (e.g. ``masks_3class``).
        key: the config key that set ``mask_dir``, named in the error (e.g. ``data.init_args.mask_dir``).
        option, root_option: how the error spells the two settings (a command line passes its flags, e.g.
            ``--data.mask_dir`` and ``--data.root``).

    Raises:
        ValueError: ``mask_dir`` is not a plain folder name (a path, ``images``, ``unlabeled``, ...), or is
            not ``masks`` with ``root`` None.
        FileNotFoundError: ``root`` has no ``mask_dir`` sub-folder; the message names both and lists the
            sub-folders that could be meant.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     (Path(tmp) / "masks").mkdir()
        ...     check_mask_folder(tmp, "masks")
        ...     try:
        ...         check_mask_folder(tmp, "masks_3class")
        ...     except FileNotFoundError as err:
        ...         print(str(err).split(" (")[0])
        `mask_dir`='masks_3class' names no sub-folder of the dataset folder
    """
    _check_mask_dir(mask_dir)
    if root is None and mask_dir != "masks":
        raise ValueError(
            f"{option}='{mask_dir}' needs {root_option}: the embedded synthetic data has binary masks/ only. "
            f"Set {root_option} to the dataset folder that holds {mask_dir}/, or leave {option} at 'masks'."
        )
    if root is None or not isinstance(root, (str, os.PathLike)):
        return
    folder = Path(root).expanduser()
    if not folder.is_dir() or (folder / mask_dir).is_dir():
        return
    where = f" (config key {key})" if key else ""
    found = _mask_folders(folder)
    listed = f"its candidate mask folders: {found}" if found else "it has no mask folder at all"
    raise FileNotFoundError(
        f"{option}='{mask_dir}' names no sub-folder of the dataset folder ('{folder / mask_dir}' does not "
        f"exist){where}; {listed}. Set {option} to the folder that holds the masks (default 'masks'), "
        f"or check {root_option}."
    )


def scan_image_folder(
    folder: str | os.PathLike,
    *,
    in_channels: int = 3,
    check: bool = True,
    skip_bad: bool = False,
    keep_decoded: bool = False,
    num_threads: int | None = None,
) -> tuple[dict[str, Path], dict[str, np.ndarray]]:
    """Index (and by default decode and validate) a folder of images without masks, e.g. an external set of
    unlabeled images from another source (``SemiSupervisedDataModule(unlabeled_root=...)``).

    Args:
        folder: the folder; its image files (any of :data:`IMAGE_EXTENSIONS`) are used, sub-folders ignored.
        in_channels: 1 or 3; images are converted to this many channels.
        check: decode every image once to find unreadable, truncated or unsupported files.
        skip_bad: drop bad files with a warning instead of raising.
        keep_decoded: also return the decoded arrays (needs ``check``).
        num_threads: decoding threads (default ``min(8, os.cpu_count())``).

    Returns:
        ``(paths, decoded)``: id -> image file, and ``str(path)`` -> decoded array (empty unless
        ``keep_decoded``).

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        DataValidationError: no images, or bad files (unless ``skip_bad``); every problem is listed.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     Image.new("RGB", (4, 4)).save(f"{tmp}/a.png")
        ...     paths, _ = scan_image_folder(tmp)
        ...     sorted(paths)
        ['a']
    """
    check_in_channels(in_channels)
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"Image folder '{folder}' does not exist or is not a folder.")
    problems: dict[str, str] = {}
    images = _list_files(folder, IMAGE_EXTENSIONS, problems, folder, "images")
    if not images and not problems:
        raise DataValidationError(f"Image folder '{folder}' has no images ({', '.join(IMAGE_EXTENSIONS)}).",
                                  root=folder)  # fmt: skip
    decoded: dict[str, np.ndarray] = {}
    if check:
        threads = num_threads or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for found, arrays in pool.map(
                lambda i: _check_image(images[i], in_channels, keep_decoded), images
            ):
                for path, reason in found.items():
                    problems[path.relative_to(folder).as_posix()] = reason
                decoded.update(arrays)
    good = {i: p for i, p in images.items() if p.relative_to(folder).as_posix() not in problems}
    _raise_or_skip(folder, problems, skip_bad)
    if not good:
        raise DataValidationError(f"Image folder '{folder}' has no valid images left.", root=folder,
                                  problems=dict(sorted(problems.items())))  # fmt: skip
    return good, decoded


def _raise_problems(root: Path, problems: dict[str, str], *, header: str) -> None:
    lines = [f"  - {rel}: {reason}" for rel, reason in sorted(problems.items())]
    raise DataValidationError(
        f"{header} in dataset folder '{root}' ({LAYOUT}):\n"
        + "\n".join(lines)
        + f"\nFix these files, or {SKIP_BAD_FIX} to skip them with a warning.",
        root=root,
        problems=dict(sorted(problems.items())),
    )


def scan_folder(
    root: str | os.PathLike,
    *,
    num_classes: int = 2,
    in_channels: int = 3,
    check: bool = True,
    skip_bad: bool = False,
    keep_decoded: bool = False,
    num_threads: int | None = None,
    mask_dir: str = "masks",
) -> FolderIndex:
    """Index (and by default fully validate) a dataset folder in the standard layout.

    Pairing problems (image without mask, mask without image, unsupported extension, duplicate id) are always
    checked. With ``check=True`` every image and mask is decoded once to find unreadable, truncated or empty
    files, unsupported modes (CMYK, 16-bit, ...), image/mask size mismatches and stray mask values.

    Args:
        root: dataset root.
        num_classes: K, background included (2 = binary); masks must be binary or in ``0..K-1``.
        in_channels: 1 or 3; images are converted to this many channels.
        check: decode and validate every file (recommended before training).
        skip_bad: drop bad files with a warning instead of raising.
        keep_decoded: keep decoded arrays in ``FolderIndex.decoded`` (an in-memory cache; needs ``check``).
        num_threads: decoding threads (default ``min(8, os.cpu_count())``).
        mask_dir: name of the mask sub-folder (default ``masks``), e.g. ``masks_3class`` for a second set of
            masks of the same images; a plain folder name inside ``root``.

    Returns:
        The :class:`FolderIndex` of valid files.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        DataValidationError: missing ``images/`` or ``masks/``, no pairs, or any bad file (unless
            ``skip_bad``); the message lists every problem at once.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     (Path(tmp) / "images").mkdir()
        ...     (Path(tmp) / "masks").mkdir()
        ...     scan_folder(tmp)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        qg_lightning.data.folder.DataValidationError: Dataset folder '...' has no image/mask pairs ...
    """
    check_num_classes(num_classes)
    check_in_channels(in_channels)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"Dataset root '{root}' ({ROOT_ARGUMENT}) does not exist or is not a folder.")
    _check_mask_dir(mask_dir)
    missing = [name for name in ("images", mask_dir) if not (root / name).is_dir()]
    if missing:
        named = (
            f" ({MASK_DIR_ARGUMENT} is '{mask_dir}'; the folder's candidate mask folders: {_mask_folders(root)})"
            if mask_dir in missing and mask_dir != "masks"
            else ""
        )
        raise DataValidationError(
            f"Dataset folder '{root}' has no {' or '.join(n + '/' for n in missing)} sub-folder{named}; {LAYOUT}.",
            root=root,
        )

    problems: dict[str, str] = {}
    images = _list_files(root / "images", IMAGE_EXTENSIONS, problems, root, "images")
    masks = _list_files(root / mask_dir, MASK_EXTENSIONS, problems, root, "masks")
    unlabeled = (
        _list_files(root / "unlabeled", IMAGE_EXTENSIONS, problems, root, "unlabeled images")
        if (root / "unlabeled").is_dir()
        else {}
    )
    if not images and not masks:
        raise DataValidationError(
            f"Dataset folder '{root}' has no image/mask pairs (images/ and {mask_dir}/ are empty); {LAYOUT}.",
            root=root,
        )
    for id_ in sorted(set(images) - set(masks)):
        problems[images[id_].relative_to(root).as_posix()] = (
            f"image has no mask: expected {mask_dir}/{id_}.png. Add the mask, or move the image to unlabeled/."
        )
    for id_ in sorted(set(masks) - set(images)):
        problems[masks[id_].relative_to(root).as_posix()] = (
            f"mask has no image: expected images/{id_}.<png|jpg|...>. Add the image or delete the mask."
        )
    for id_ in sorted(set(unlabeled) & set(images)):
        problems[unlabeled[id_].relative_to(root).as_posix()] = (
            f"has the same id '{id_}' as images/{images[id_].name}. Ids must be unique across images/ and "
            "unlabeled/; rename one of them."
        )
    ids = sorted(set(images) & set(masks))

    decoded: dict[str, np.ndarray] = {}
    if check:
        threads = num_threads or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=threads) as pool:
            pair_results = pool.map(
                lambda i: _check_pair(images[i], masks[i], in_channels, num_classes, keep_decoded), ids
            )
            unl_ids = [i for i in sorted(unlabeled) if i not in images]
            unl_results = pool.map(lambda i: _check_image(unlabeled[i], in_channels, keep_decoded), unl_ids)
            for found, arrays in [*pair_results, *unl_results]:
                for path, reason in found.items():
                    problems[path.relative_to(root).as_posix()] = reason
                decoded.update(arrays)

    bad = set(problems)
    rel = {path: path.relative_to(root).as_posix() for path in [*images.values(), *masks.values()]}
    good_ids = [i for i in ids if rel[images[i]] not in bad and rel[masks[i]] not in bad]
    good_unlabeled = {i: p for i, p in unlabeled.items() if p.relative_to(root).as_posix() not in bad}
    _raise_or_skip(root, problems, skip_bad)
    if not good_ids:
        raise DataValidationError(
            f"Dataset folder '{root}' has no valid image/mask pairs left; {LAYOUT}.",
            root=root,
            problems=dict(sorted(problems.items())),
        )
    return FolderIndex(
        root=root,
        ids=good_ids,
        image_paths={i: images[i] for i in good_ids},
        mask_paths={i: masks[i] for i in good_ids},
        unlabeled_paths=good_unlabeled,
        skipped=dict(sorted(problems.items())) if skip_bad else {},
        decoded={k: v for k, v in decoded.items() if v is not None},
    )

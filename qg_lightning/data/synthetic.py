"""Procedural synthetic "lesion" images and masks: the embedded dataset that needs no download.

Every sample is a pure function of ``(seed, index, image_size)``: a textured, unevenly lit tissue
background (multi-octave value noise, vignetting, a linear illumination gradient), zero to two irregular
lesions (radial-harmonic outlines) blended in through a fuzzy border with a contrast that ranges from obvious
to faint, dark look-alike patches that are *not* lesions, hair-like curved lines and specular highlights,
then pixel noise. About 5% of the images have no lesion and about 20% have two. All sizes scale with
``image_size``.

The data is meant to be learnable but not trivial: faint, blurry-bordered lesions, look-alike shadows and
hairs are there to keep a small U-Net well below Dice 0.99 after a minute of training.

Example:
    >>> image, mask = synthetic_sample(3, image_size=64, seed=0)
    >>> image.shape, image.dtype, mask.shape, sorted(set(mask.ravel().tolist())) == [0, 255]
    ((64, 64, 3), dtype('uint8'), (64, 64), True)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from qg_lightning._validation import check_int

__all__ = [
    "GENERATOR_VERSION",
    "default_cache_dir",
    "default_synthetic_root",
    "generate_synthetic_dataset",
    "synthetic_sample",
]

log = logging.getLogger(__name__)

#: Bump when the drawing code changes, so cached folders of the old generator are not reused.
GENERATOR_VERSION = 1
_META_NAME = "synthetic_meta.json"
_GENERATOR_NAME = "qg_lightning.data.synthetic"
_P_EMPTY = 0.05
_P_TWO = 0.20


def _as_int(value: object) -> object:
    """NumPy integers (an index drawn with NumPy, say) count as integers here: ``int`` them for the checks."""
    return int(value) if isinstance(value, np.integer) else value


def _value_noise(rng: np.random.Generator, size: int, octaves: int = 4, base_cells: int = 3) -> np.ndarray:
    """Multi-octave value noise ``(size, size)`` float32, zero mean, unit std."""
    total = np.zeros((size, size), np.float32)
    for octave in range(octaves):
        cells = base_cells * 2**octave + 1
        grid = rng.standard_normal((cells, cells)).astype(np.float32)
        total += cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC) * (0.55**octave)
    total -= total.mean()
    return total / (total.std() + 1e-6)


def _lesion_outline(rng: np.random.Generator, size: int) -> np.ndarray:
    """Irregular closed outline (N, 2) int32 in pixel coordinates: a radial-harmonic polygon."""
    radius = rng.uniform(0.07, 0.24) * size
    margin = radius * 1.3
    centre = rng.uniform(margin, size - margin, size=2) if size > 2 * margin else np.full(2, size / 2)
    theta = np.linspace(0.0, 2.0 * np.pi, 72, endpoint=False)
    orders = np.arange(2, 8)
    amps = rng.uniform(0.0, 1.0, size=orders.size) * 0.28 / orders**0.9
    phases = rng.uniform(0.0, 2.0 * np.pi, size=orders.size)
    r = radius * (1.0 + (amps[:, None] * np.cos(orders[:, None] * theta[None] + phases[:, None])).sum(0))
    stretch = rng.uniform(0.7, 1.3)
    rot = rng.uniform(0.0, np.pi)
    x, y = r * np.cos(theta) * stretch, r * np.sin(theta) / stretch
    pts = np.stack([x * np.cos(rot) - y * np.sin(rot), x * np.sin(rot) + y * np.cos(rot)], axis=1) + centre
    return np.round(pts).astype(np.int32)


def _hair_layer(rng: np.random.Generator, size: int, count: int) -> np.ndarray:
    """Soft alpha ``(size, size)`` of thin quadratic-Bezier curves (hair-like lines)."""
    layer = np.zeros((size, size), np.uint8)
    t = np.linspace(0.0, 1.0, 40)[:, None]
    for _ in range(count):
        p0, p1, p2 = rng.uniform(-0.1, 1.1, size=(3, 2)) * size
        curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
        thickness = max(1, int(round(rng.uniform(0.5, 1.6) * size / 128)))
        cv2.polylines(layer, [np.round(curve).astype(np.int32)], False, 255, thickness, cv2.LINE_AA)
    return layer.astype(np.float32) / 255.0


def synthetic_sample(index: int, *, image_size: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Draw synthetic sample ``index`` of the dataset with ``seed`` (pure: same arguments, same pixels).

    Args:
        index: sample number (any integer >= 0; each gives an independent draw).
        image_size: side of the square output, in pixels (>= 16).
        seed: dataset seed.

    Returns:
        ``(image, mask)``: image ``uint8 (H, W, 3)`` RGB, mask ``uint8 (H, W)`` with values ``{0, 255}``.

    Example:
        >>> a, m = synthetic_sample(0, image_size=32, seed=1)
        >>> b, n = synthetic_sample(0, image_size=32, seed=1)
        >>> bool((a == b).all() and (m == n).all()), a.shape, m.shape
        (True, (32, 32, 3), (32, 32))
    """
    index = check_int(_as_int(index), "index", minimum=0)
    size = check_int(_as_int(image_size), "image_size", minimum=16)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, index, GENERATOR_VERSION])

    # Background tissue: a base colour modulated by fractal texture, with some per-channel variation.
    base = np.array([rng.uniform(0.55, 0.85), rng.uniform(0.28, 0.5), rng.uniform(0.22, 0.45)], np.float32)
    texture = _value_noise(rng, size)
    fine = _value_noise(rng, size, octaves=2, base_cells=12)
    tint = np.stack([_value_noise(rng, size, octaves=2) for _ in range(3)], axis=-1)
    image = base * (1.0 + rng.uniform(0.08, 0.2) * texture[..., None] + 0.04 * tint)
    image *= 1.0 + rng.uniform(0.02, 0.06) * fine[..., None]

    # Look-alike dark patches (shadows / folds) that are NOT in the mask.
    shadow = np.clip(_value_noise(rng, size, octaves=3, base_cells=2) - rng.uniform(0.8, 1.6), 0.0, None)
    image *= (1.0 - rng.uniform(0.1, 0.35) * np.tanh(shadow))[..., None]

    # Lesions: hard mask for the ground truth, blurred alpha for the image (fuzzy borders).
    mask = np.zeros((size, size), np.uint8)
    u = rng.uniform()
    n_lesions = 0 if u < _P_EMPTY else (2 if u < _P_EMPTY + _P_TWO else 1)
    for _ in range(n_lesions):
        one = np.zeros((size, size), np.uint8)
        cv2.fillPoly(one, [_lesion_outline(rng, size)], 255)
        mask = np.maximum(mask, one)
        sigma = rng.uniform(0.004, 0.03) * size
        alpha = cv2.GaussianBlur(one.astype(np.float32) / 255.0, (0, 0), sigma)
        contrast = rng.uniform(0.06, 0.42)
        direction = np.array(
            [rng.uniform(0.6, 1.0), rng.uniform(0.5, 1.2), rng.uniform(0.2, 1.0)], np.float32
        )
        if rng.uniform() < 0.25:  # some lesions are paler than the tissue, not darker
            direction = -0.6 * direction
        lesion_texture = _value_noise(rng, size, octaves=3, base_cells=6)
        lesion = (
            image * (1.0 - contrast * direction) * (1.0 + rng.uniform(0.0, 0.15) * lesion_texture[..., None])
        )
        image = image * (1.0 - alpha[..., None]) + lesion * alpha[..., None]

    # Illumination: vignetting around a jittered centre and a linear gradient.
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    cy, cx = rng.uniform(0.35, 0.65, size=2)
    vignette = 1.0 - rng.uniform(0.1, 0.55) * (((yy - cy) ** 2 + (xx - cx) ** 2) / 0.5)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    gradient = 1.0 + rng.uniform(-0.25, 0.25) * ((xx - 0.5) * np.cos(angle) + (yy - 0.5) * np.sin(angle))
    image *= (vignette * gradient)[..., None]

    # Artefacts: dark hairs across everything, then specular highlights.
    n_hairs = int(rng.poisson(1.2))
    if n_hairs:
        hair = _hair_layer(rng, size, n_hairs) * rng.uniform(0.5, 0.9)
        image = image * (1.0 - hair[..., None]) + rng.uniform(0.05, 0.2) * hair[..., None]
    n_spots = int(rng.integers(0, 5))
    if n_spots:
        spots = np.zeros((size, size), np.float32)
        for _ in range(n_spots):
            centre = tuple(int(v) for v in rng.uniform(0, size, size=2))
            axes = tuple(max(1, int(v)) for v in rng.uniform(0.005, 0.025, size=2) * size)
            cv2.ellipse(spots, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
        spots = cv2.GaussianBlur(spots, (0, 0), max(0.5, 0.006 * size))
        image = image * (1.0 - spots[..., None]) + spots[..., None] * 0.98

    image = image + rng.normal(0.0, rng.uniform(0.005, 0.03), size=image.shape).astype(np.float32)
    image_u8 = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return image_u8, mask


def default_cache_dir() -> Path:
    """Cache folder of qg_lightning: ``$QG_LIGHTNING_CACHE`` if set, else ``~/.cache/qg_lightning``.

    Example:
        >>> default_cache_dir().name != ""
        True
    """
    env = os.environ.get("QG_LIGHTNING_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "qg_lightning"


def default_synthetic_root(n_images: int = 300, image_size: int = 128, seed: int = 0) -> Path:
    """Where the embedded synthetic dataset with these parameters lives inside :func:`default_cache_dir`.

    Example:
        >>> default_synthetic_root(300, 128, 0).name
        'n300_px128_seed0_v1'
    """
    return default_cache_dir() / "synthetic" / f"n{n_images}_px{image_size}_seed{seed}_v{GENERATOR_VERSION}"


def _meta(n_images: int, image_size: int, seed: int, n_unlabeled: int) -> dict:
    return {
        "generator": _GENERATOR_NAME,
        "version": GENERATOR_VERSION,
        "n_images": n_images,
        "image_size": image_size,
        "seed": seed,
        "n_unlabeled": n_unlabeled,
    }


def _read_meta(root: Path) -> dict | None:
    try:
        return json.loads((root / _META_NAME).read_text())
    except (OSError, ValueError):
        return None


_README = """# Synthetic lesion segmentation dataset (qg_lightning)

Generated by `qg_lightning.data.synthetic.generate_synthetic_dataset` (generator version {version}) with
`n_images={n_images}`, `image_size={image_size}`, `seed={seed}`, `n_unlabeled={n_unlabeled}`.
Every sample is a pure function of (seed, index, image_size): regenerating gives identical pixels.

## Layout (the qg_lightning standard layout)
- `images/<id>.png`: 8-bit RGB, {image_size}x{image_size}; ids `syn_00000` ... .
- `masks/<id>.png`: 8-bit single channel (mode L), values {{0, 255}} (255 = lesion), same id as the image.
- `unlabeled/<id>.png`: extra images without masks (ids `unl_00000` ...), present when `n_unlabeled > 0`.
- `{meta}`: the generation parameters (used to skip regeneration).

## Content
Textured tissue background (multi-octave value noise) with uneven illumination (vignetting, gradient);
0-2 irregular lesions (radial-harmonic outlines) blended through fuzzy borders, contrast from obvious to
faint, about 5% of images without a lesion and about 20% with two; dark look-alike patches that are not
lesions; hair-like curved lines; specular highlights; pixel noise. Synthetic: no licence or privacy terms.
"""


def generate_synthetic_dataset(
    out_dir: str | os.PathLike,
    *,
    n_images: int = 200,
    image_size: int = 128,
    seed: int = 0,
    n_unlabeled: int = 0,
) -> Path:
    """Write a synthetic dataset in the standard layout and return its root.

    The folder is written to a temporary sibling and renamed into place, so a crash never leaves a
    half-written dataset. If ``out_dir`` already holds a dataset generated with the same parameters (recorded
    in ``synthetic_meta.json``), nothing is written and the call returns at once. A folder generated with
    other parameters is replaced; any other non-empty folder is left alone and raises ``FileExistsError``.

    Args:
        out_dir: target folder (created with its parents).
        n_images: number of labeled image/mask pairs (>= 1).
        image_size: side of the square images in pixels (>= 16).
        seed: dataset seed; samples are ``synthetic_sample(i, image_size=image_size, seed=seed)``.
        n_unlabeled: extra images without masks, written to ``unlabeled/`` (>= 0).

    Returns:
        The dataset root (``out_dir`` as a ``Path``).

    Raises:
        ValueError: a count or size is out of range.
        FileExistsError: ``out_dir`` is a non-empty folder that this function did not write.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     root = generate_synthetic_dataset(Path(tmp) / "syn", n_images=3, image_size=32, seed=0)
        ...     sorted(p.name for p in (root / "masks").iterdir())
        ['syn_00000.png', 'syn_00001.png', 'syn_00002.png']
    """
    n_images = check_int(_as_int(n_images), "n_images", minimum=1)
    image_size = check_int(_as_int(image_size), "image_size", minimum=16)
    n_unlabeled = check_int(_as_int(n_unlabeled), "n_unlabeled", minimum=0)
    seed = check_int(_as_int(seed), "seed")
    out = Path(out_dir).expanduser()
    meta = _meta(n_images, image_size, seed, n_unlabeled)
    if out.exists():
        if not out.is_dir():
            raise FileExistsError(f"`out_dir` '{out}' exists and is not a folder. Choose another path.")
        if _read_meta(out) == meta:
            return out
        if _read_meta(out) is None and any(out.iterdir()):
            raise FileExistsError(
                f"`out_dir` '{out}' is a non-empty folder that was not written by "
                "generate_synthetic_dataset; refusing to overwrite it. Choose an empty or new folder."
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the dataset is an ordinary folder once renamed
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        for i in range(n_images):
            image, mask = synthetic_sample(i, image_size=image_size, seed=seed)
            cv2.imwrite(str(tmp / "images" / f"syn_{i:05d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(tmp / "masks" / f"syn_{i:05d}.png"), mask)
        if n_unlabeled:
            (tmp / "unlabeled").mkdir()
            for j in range(n_unlabeled):
                image, _ = synthetic_sample(n_images + j, image_size=image_size, seed=seed)
                cv2.imwrite(
                    str(tmp / "unlabeled" / f"unl_{j:05d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
                )
        (tmp / "README.md").write_text(_README.format(meta=_META_NAME, **meta))
        (tmp / _META_NAME).write_text(json.dumps(meta, indent=2) + "\n")
        _move_into_place(tmp, out, meta)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info(
        "Generated %d synthetic images (%d px) in %.1f s at %s",
        n_images,
        image_size,
        time.perf_counter() - start,
        out,
    )
    return out


def _move_into_place(tmp: Path, out: Path, meta: dict) -> None:
    """Rename ``tmp`` to ``out``, replacing an older generated folder; tolerate a concurrent same writer."""
    old = None
    if out.exists():
        if not any(out.iterdir()):
            out.rmdir()
        else:  # a generated folder with other parameters (checked by the caller)
            old = out.with_name(f".{out.name}.old-{os.getpid()}-{time.monotonic_ns()}")
            os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError:
        if _read_meta(out) != meta:  # someone else wrote something different meanwhile
            raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

"""Write a small, deterministic dataset of generated photo-like images: OUT_DIR/<class>/*.jpg.

The classes differ in shape and texture only. Colours, backgrounds, positions, sizes, rotations,
blur, noise and JPEG quality come from the same distributions for every class, so a model cannot
tell them apart by colour. One seed always writes the same bytes, and each image depends only on
(seed, class, index), so asking for more images per class keeps the earlier ones. This is the
demo's default dataset and the tests' data; it needs numpy and Pillow only.

    python scripts/make_sample_data.py OUT_DIR [--images_per_class N] [--seed S]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES = ("circles", "stripes", "checkers", "triangles")
IMAGES_PER_CLASS = 30
SIZE = 160  # px, images are square
# Shape masks are drawn at this multiple of the image size and box-downscaled, so their edges
# are antialiased the way a camera's are, not hard pixel steps.
SUPERSAMPLE = 2
# Background and foreground colours come from opposite luminance bands (0-255 levels), so every
# shape stands out whatever its colour.
DARK_LEVELS = (0, 105)
LIGHT_LEVELS = (150, 255)
BLOTCH_AMPLITUDE = 45.0  # levels, low-frequency shading across the background
BLUR_RADIUS = (0.0, 1.0)  # px at SIZE, focus softness
NOISE_STD = (2.0, 12.0)  # levels, per-pixel sensor noise
JPEG_QUALITY = (75, 95)


def make_sample_dataset(
    out_dir: str | Path,
    classes: list[str] | tuple[str, ...] | None = None,
    images_per_class: int = IMAGES_PER_CLASS,
    size: int = SIZE,
    seed: int = 0,
) -> Path:
    """Write images_per_class JPEGs of size x size px for each class into out_dir/<class>/.

    classes: names from CLASSES (default: all of them). Files are named <class>_<10 hex digits>.jpg
    so a filename-hash split spreads them. Existing files of the same names are overwritten.
    Returns out_dir as a Path.
    """
    classes = CLASSES if classes is None else tuple(classes)
    unknown = sorted(set(classes) - set(CLASSES))
    if unknown:
        raise ValueError(f"unknown sample classes {unknown}; choose from {list(CLASSES)}")
    out_dir = Path(out_dir)
    for class_name in classes:
        class_dir = out_dir / class_name
        class_dir.mkdir(parents=True, exist_ok=True)
        # A class's images come from its name, not its position in `classes`, so a subset of
        # classes draws the same images as the full set.
        class_key = int.from_bytes(hashlib.sha1(class_name.encode()).digest()[:4], "big")
        for index in range(images_per_class):
            rng = np.random.default_rng([seed, class_key, index])
            pixels = _draw_image(class_name, rng, size)
            name = hashlib.sha1(f"{seed}/{class_name}/{index}".encode()).hexdigest()[:10]
            Image.fromarray(pixels).save(
                class_dir / f"{class_name}_{name}.jpg", quality=int(rng.integers(*JPEG_QUALITY))
            )
    return out_dir


def _draw_image(class_name: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """One image of class_name: uint8 (size, size, 3)."""
    dark_background = rng.random() < 0.5
    background_levels, foreground_levels = (
        (DARK_LEVELS, LIGHT_LEVELS) if dark_background else (LIGHT_LEVELS, DARK_LEVELS)
    )
    background = _background(rng, *_grid(size), background_levels)
    fine_mask = MASKS[class_name](rng, size * SUPERSAMPLE).convert("L")
    mask = np.asarray(fine_mask.resize((size, size), Image.Resampling.BOX), dtype=np.float32)[..., None] / 255.0
    foreground = rng.uniform(*foreground_levels, size=3).astype(np.float32)
    image = Image.fromarray((background * (1.0 - mask) + foreground * mask).astype(np.uint8))
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(*BLUR_RADIUS)))
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0.0, rng.uniform(*NOISE_STD), (size, size, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=4)
def _grid(side: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x, y) normalised to [0, 1): float32 (side, side) each."""
    y, x = (np.mgrid[0:side, 0:side].astype(np.float32) + 0.5) / side
    return x, y


def _background(rng, x, y, levels) -> np.ndarray:
    """A two-colour linear gradient in a random direction with soft blotches: float32 (H, W, 3)."""
    start, end = rng.uniform(*levels, size=(2, 3)).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = x * np.cos(angle) + y * np.sin(angle)
    ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())
    gradient = start + (end - start) * ramp[..., None]
    blotches = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    blotches = blotches.resize(x.shape[::-1], Image.Resampling.BICUBIC)
    shading = (np.asarray(blotches, dtype=np.float32) / 255.0 - 0.5) * BLOTCH_AMPLITUDE
    return np.clip(gradient + shading, *levels)


def _rotated_patch(rng, side):
    """A rotated square patch: its mask and the coordinates (u, v) along its sides, in image widths."""
    x, y = _grid(side)
    center_x, center_y = rng.uniform(0.35, 0.65, size=2)
    half_side = rng.uniform(0.22, 0.34)
    angle = rng.uniform(0, np.pi)
    u = (x - center_x) * np.cos(angle) + (y - center_y) * np.sin(angle)
    v = -(x - center_x) * np.sin(angle) + (y - center_y) * np.cos(angle)
    inside = (np.abs(u) < half_side) & (np.abs(v) < half_side)
    return inside, u, v


def _stripes(rng, side) -> Image.Image:
    inside, u, _ = _rotated_patch(rng, side)
    period = rng.uniform(0.05, 0.1)
    return Image.fromarray(inside & (np.floor(u / period) % 2 == 0))


def _checkers(rng, side) -> Image.Image:
    inside, u, v = _rotated_patch(rng, side)
    period = rng.uniform(0.05, 0.1)
    return Image.fromarray(inside & ((np.floor(u / period) + np.floor(v / period)) % 2 == 0))


def _circles(rng, side) -> Image.Image:
    """Three to six rings and discs of different sizes."""
    mask = Image.new("L", (side, side))
    draw = ImageDraw.Draw(mask)
    for _ in range(rng.integers(3, 7)):
        radius = rng.uniform(0.05, 0.16) * side
        center_x, center_y = rng.uniform(radius, side - radius, size=2)
        box = (center_x - radius, center_y - radius, center_x + radius, center_y + radius)
        if rng.random() < 0.4:
            draw.ellipse(box, fill=255)
        else:
            draw.ellipse(box, outline=255, width=max(1, round(rng.uniform(0.2, 0.4) * radius)))
    return mask


def _triangles(rng, side) -> Image.Image:
    """One to three solid triangles, not all equilateral."""
    mask = Image.new("L", (side, side))
    draw = ImageDraw.Draw(mask)
    for _ in range(rng.integers(1, 4)):
        radius = rng.uniform(0.12, 0.3) * side
        center_x, center_y = rng.uniform(0.2, 0.8, size=2) * side
        angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2, 4]) * np.pi / 3 + rng.uniform(-0.3, 0.3, 3)
        corners = np.stack([center_x + radius * np.cos(angles), center_y + radius * np.sin(angles)], axis=1)
        draw.polygon([tuple(corner) for corner in corners.tolist()], fill=255)
    return mask


MASKS = {"circles": _circles, "stripes": _stripes, "checkers": _checkers, "triangles": _triangles}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder to write <class>/*.jpg into")
    parser.add_argument("--images_per_class", "--images-per-class", type=int, default=IMAGES_PER_CLASS)
    parser.add_argument("--size", type=int, default=SIZE, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out_dir = make_sample_dataset(args.out_dir, images_per_class=args.images_per_class, size=args.size, seed=args.seed)
    print(f"wrote {args.images_per_class} images for each of {len(CLASSES)} classes to {out_dir}")


if __name__ == "__main__":
    main()

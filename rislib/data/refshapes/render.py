"""RefShapes images: shapes, colours, the gradient background, and placement with occlusion.

Everything here follows ``docs/refshapes.md#images`` (spec v1):

* square RGB images of side ``S`` (a multiple of 32 in ``[64, 1024]``);
* a two-colour linear gradient background (channels in ``20..140``) plus Gaussian noise
  (sigma 6), never a flat colour;
* five shapes (COCO category ids 1..5) in seven colours jittered by +-15 per channel;
* ``small`` objects have a circumradius in ``[0.06, 0.10] * S``, ``big`` ones in
  ``[0.14, 0.20] * S``; squares, triangles, stars and hexagons are rotated at random;
* objects are drawn in placement order, later ones occluding earlier ones; a placement that
  leaves any object with less than 60% of its own area visible, or fewer than 40 visible
  pixels, is rejected.

Each object is drawn from exactly the polygon that is stored in ``instances.json``: the
polygon is rounded to two decimals first and then rasterised by pycocotools, so decoding the
stored segmentation gives back the drawn pixels bit for bit.

This project's interpretation where the spec is silent: a star's inner radius is 0.45 of its
outer radius; a circle is a regular polygon with ``clip(0.75 * r, 24, 96)`` vertices; the
gradient's two colours differ by at least 30 in some channel; the noise is added to the
background only (objects are flat colours, as in the spec's colour table).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pycocotools.mask as mask_utils

from ..masks import decode_rle

__all__ = [
    "SHAPES",
    "CATEGORY_IDS",
    "COLOURS",
    "HELD_OUT_PAIRS",
    "SIZE_RANGES",
    "shape_polygon",
    "rasterize_polygon",
    "gradient_background",
    "ObjectSpec",
    "PlacedObject",
    "Layout",
    "place_objects",
    "check_image_size",
]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon")
CATEGORY_IDS: dict[str, int] = {name: i + 1 for i, name in enumerate(SHAPES)}
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 210, 40),
    "purple": (150, 60, 190),
    "orange": (240, 140, 30),
    "white": (235, 235, 235),
}
HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {("red", "star"), ("blue", "triangle"), ("green", "hexagon"), ("yellow", "circle"), ("purple", "square")}
)
SIZE_RANGES: dict[str, tuple[float, float]] = {"small": (0.06, 0.10), "big": (0.14, 0.20)}

COLOUR_JITTER = 15
BACKGROUND_RANGE = (20, 140)
BACKGROUND_NOISE_SIGMA = 6.0
MIN_VISIBLE_FRACTION = 0.6
MIN_VISIBLE_PIXELS = 40
STAR_INNER_RATIO = 0.45
_VERTICES = {"square": 4, "triangle": 3, "hexagon": 6}


def check_image_size(size: int) -> int:
    """Validate the image side ``S``: a multiple of 32 from 64 to 1024."""
    if not isinstance(size, (int, np.integer)) or size < 64 or size > 1024 or size % 32:
        raise ValueError(f"RefShapes size: expected a multiple of 32 in [64, 1024], got {size!r}")
    return int(size)


def shape_polygon(shape: str, cx: float, cy: float, radius: float, rotation: float) -> list[float]:
    """The outline of one shape as a flat COCO polygon ``[x1, y1, x2, y2, ...]``.

    Args:
        shape: one of :data:`SHAPES`.
        cx, cy: centre in pixels.
        radius: circumradius in pixels.
        rotation: angle in radians (ignored for circles).

    Returns:
        vertex coordinates rounded to two decimals (what is stored and what is drawn).
    """
    if shape == "circle":
        n = int(np.clip(round(0.75 * radius), 24, 96))
        angles = np.arange(n) * (2 * math.pi / n)
        radii = np.full(n, radius)
    elif shape == "star":
        angles = rotation - math.pi / 2 + np.arange(10) * (math.pi / 5)
        radii = np.where(np.arange(10) % 2 == 0, radius, radius * STAR_INNER_RATIO)
    elif shape in _VERTICES:
        n = _VERTICES[shape]
        angles = rotation - math.pi / 2 + np.arange(n) * (2 * math.pi / n)
        radii = np.full(n, radius)
    else:
        raise ValueError(f"RefShapes shape: expected one of {SHAPES}, got {shape!r}")
    xs = cx + radii * np.cos(angles)
    ys = cy + radii * np.sin(angles)
    pts = np.stack([xs, ys], axis=1).reshape(-1)
    return [round(float(v), 2) for v in pts]


def rasterize_polygon(polygon: list[float], size: int) -> np.ndarray:
    """Rasterise one flat polygon on an ``size x size`` grid with pycocotools -> bool ``[S, S]``."""
    rles = mask_utils.frPyObjects([polygon], size, size)
    return decode_rle(rles)[:, :, 0].astype(bool)


def gradient_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random two-colour linear gradient in dark-to-mid tones plus Gaussian noise.

    Returns:
        ``uint8 [S, S, 3]``.
    """
    lo, hi = BACKGROUND_RANGE
    c1 = rng.integers(lo, hi + 1, size=3)
    c2 = rng.integers(lo, hi + 1, size=3)
    while np.abs(c1 - c2).max() < 30:  # never (almost) flat
        c2 = rng.integers(lo, hi + 1, size=3)
    theta = rng.uniform(0.0, 2 * math.pi)
    coords = np.arange(size, dtype=np.float32)
    proj = np.float32(math.cos(theta)) * coords[None, :] + np.float32(math.sin(theta)) * coords[:, None]  # [S, S]
    t = ((proj - proj.min()) / max(float(proj.max() - proj.min()), 1e-9))[..., None]  # [S, S, 1]
    img = c1.astype(np.float32) * (1.0 - t) + c2.astype(np.float32) * t  # [S, S, 3]
    img += rng.standard_normal(size=img.shape, dtype=np.float32) * np.float32(BACKGROUND_NOISE_SIGMA)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class ObjectSpec:
    """What an object is, before it is placed: ``shape``, ``colour`` name, ``size`` class."""

    shape: str
    colour: str
    size: str

    @property
    def pair(self) -> tuple[str, str]:
        return (self.colour, self.shape)


@dataclass
class PlacedObject:
    """An object on the canvas.

    Attributes:
        spec: shape, colour and size class.
        rgb: the jittered colour actually drawn.
        radius: circumradius in pixels; ``rotation`` in radians.
        polygon: the stored and drawn outline (flat COCO polygon).
        full_mask: bool ``[S, S]`` of the whole shape (before occlusion).
    """

    spec: ObjectSpec
    rgb: tuple[int, int, int]
    radius: float
    rotation: float
    polygon: list[float]
    full_mask: np.ndarray
    full_area: int = 0


@dataclass
class Layout:
    """The placed objects of one image and who owns each pixel.

    Attributes:
        objects: in placement (= drawing) order.
        owner: int16 ``[S, S]``, index of the topmost object at each pixel, -1 for background.
    """

    objects: list[PlacedObject]
    owner: np.ndarray
    _visible: list[np.ndarray] = field(default_factory=list, repr=False)

    def visible_mask(self, i: int) -> np.ndarray:
        """bool ``[S, S]``: the visible pixels of object ``i``."""
        if not self._visible:
            self._visible = [self.owner == k for k in range(len(self.objects))]
        return self._visible[i]

    def occluded(self, i: int) -> bool:
        return int(self.visible_mask(i).sum()) < self.objects[i].full_area

    def render(self, background: np.ndarray) -> np.ndarray:
        """Draw the objects over ``background`` (uint8 ``[S, S, 3]``) in placement order."""
        palette = np.array([obj.rgb for obj in self.objects], dtype=np.uint8).reshape(-1, 3)
        img = background.copy()
        drawn = self.owner >= 0
        img[drawn] = palette[self.owner[drawn]]
        return img


def place_objects(
    rng: np.random.Generator,
    size: int,
    specs: list[ObjectSpec | None],
    sample_spec,
    *,
    attempts_per_object: int = 40,
) -> Layout | None:
    """Place objects one by one, rejecting placements that hide too much of any object.

    Args:
        rng: the image's random generator.
        size: image side ``S``.
        specs: one entry per object in placement order; ``None`` entries are drawn with
            ``sample_spec(rng)`` and re-drawn every 10 failed attempts (fixed entries are kept).
        sample_spec: callable ``rng -> ObjectSpec`` for the free objects.
        attempts_per_object: placement tries before giving up on the whole layout.

    Returns:
        the :class:`Layout`, or ``None`` when an object could not be placed (the caller starts
        a new layout).
    """
    owner = np.full((size, size), -1, dtype=np.int16)
    visible = np.zeros(len(specs), dtype=np.int64)
    placed: list[PlacedObject] = []
    for fixed in specs:
        spec = fixed if fixed is not None else sample_spec(rng)
        ok = False
        for attempt in range(attempts_per_object):
            if fixed is None and attempt and attempt % 10 == 0:
                spec = sample_spec(rng)
            lo, hi = SIZE_RANGES[spec.size]
            radius = float(rng.uniform(lo, hi)) * size
            cx, cy = (float(v) for v in rng.uniform(radius + 1.0, size - radius - 1.0, size=2))
            rotation = float(rng.uniform(0.0, 2 * math.pi)) if spec.shape != "circle" else 0.0
            polygon = shape_polygon(spec.shape, cx, cy, radius, rotation)
            full = rasterize_polygon(polygon, size)
            area = int(full.sum())
            if area < MIN_VISIBLE_PIXELS:
                continue
            n = len(placed)
            covered = owner[full]
            lost = np.bincount(covered[covered >= 0], minlength=n)[:n] if n else np.zeros(0, np.int64)
            remain = visible[:n] - lost
            full_areas = np.array([p.full_area for p in placed], dtype=np.int64)
            if n and (np.any(remain < MIN_VISIBLE_PIXELS) or np.any(remain < MIN_VISIBLE_FRACTION * full_areas)):
                continue
            jitter = rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=3)
            rgb = tuple(int(v) for v in np.clip(np.array(COLOURS[spec.colour]) + jitter, 0, 255))
            owner[full] = n
            visible[:n] = remain
            visible[n] = area
            placed.append(PlacedObject(spec, rgb, radius, rotation, polygon, full, area))
            ok = True
            break
        if not ok:
            return None
    return Layout(placed, owner)

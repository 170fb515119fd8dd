"""Procedural renderer for 32x32 RGB "shapes" scenes (the Stable Diffusion analogue of dclib's examples).

A scene has one or two flat-coloured objects on a pale, lightly textured background. Objects are
rasterised as masks at 4x resolution and box-filtered down (exact area coverage = antialiasing), then
alpha-composited over the background in numpy. All randomness in the picture (background tint and
texture, position jitter, colour jitter) comes from the scene's `render_seed`, so a scene dict always
renders to the same pixels, and two scenes that share a seed differ only in their attributes (used by
the Winoground-style pairs).
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

SIZE = 32
SUPERSAMPLE = 4

SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")
# Saturated colours, all far from the pale backgrounds (every background channel is >= 185).
COLOURS = {
    "red": (215, 35, 35),
    "green": (35, 155, 50),
    "blue": (35, 70, 215),
    "yellow": (235, 195, 20),
    "purple": (135, 45, 175),
    "orange": (240, 120, 20),
}
COLOUR_NAMES = tuple(COLOURS)
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "center")
RELATIONS = ("left_of", "above")
BACKGROUNDS = ("plain", "noise", "stripes")

# Object "radius" in pixels of the 32x32 image.
RADIUS = {"small": 4.0, "large": 7.0}
# Object centres (x, y) in the 32x32 image. Two-object scenes use left/right or top/bottom.
CENTRES = {"left": (9.0, 16.0), "right": (23.0, 16.0), "top": (16.0, 9.0), "bottom": (16.0, 23.0),
           "center": (16.0, 16.0)}
# Jitter (pixels): small along the axis that defines the position word, larger across it.
JITTER_ALONG, JITTER_ACROSS, JITTER_CENTER = 0.75, 3.0, 1.5
COLOUR_JITTER = 12


def polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    """Vertices of `shape` centred at (cx, cy) with size r; None for the circle (drawn as an ellipse)."""
    if shape == "circle":
        return None
    if shape == "square":
        h = 0.85 * r  # area close to the circle's, so "large" means the same for every shape
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        big = 1.2 * r
        return [(cx + big * math.cos(a), cy + big * math.sin(a))
                for a in (math.radians(-90), math.radians(30), math.radians(150))]
    if shape == "star":
        outer, inner = 1.15 * r, 0.48 * 1.15 * r
        points = []
        for k in range(10):
            rad = outer if k % 2 == 0 else inner
            a = math.radians(-90 + 36 * k)
            points.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        return points
    if shape == "cross":
        a, w = r, 0.36 * r
        return [(cx - w, cy - a), (cx + w, cy - a), (cx + w, cy - w), (cx + a, cy - w), (cx + a, cy + w),
                (cx + w, cy + w), (cx + w, cy + a), (cx - w, cy + a), (cx - w, cy + w), (cx - a, cy + w),
                (cx - a, cy - w), (cx - w, cy - w)]
    if shape == "diamond":
        # Taller than wide, so it is not just a rotated square.
        return [(cx, cy - 1.15 * r), (cx + 0.8 * r, cy), (cx, cy + 1.15 * r), (cx - 0.8 * r, cy)]
    if shape in REGULAR:  # the many-class world's (dclib.data.manyclass): a pentagon point up, a flat-topped hexagon
        n, start = REGULAR[shape]
        return [(cx + 1.05 * r * math.cos(math.radians(start + 360 * k / n)),
                 cy + 1.05 * r * math.sin(math.radians(start + 360 * k / n))) for k in range(n)]
    raise ValueError(f"unknown shape {shape!r}; valid: {', '.join(SHAPES + tuple(REGULAR))}")


#: Regular polygons polygon() draws besides SHAPES: (corners, angle of the first corner in degrees).
REGULAR = {"pentagon": (5, -90.0), "hexagon": (6, 0.0)}


def supersampled_mask(shape: str, cx: float, cy: float, r: float) -> Image.Image:
    """One object's coverage, mode "L" (0 or 255), at SUPERSAMPLE x the 32x32 picture (coordinates in its pixels)."""
    s = SUPERSAMPLE
    canvas = Image.new("L", (SIZE * s, SIZE * s), 0)
    draw = ImageDraw.Draw(canvas)
    poly = polygon(shape, cx * s, cy * s, r * s)
    if poly is None:
        draw.ellipse([(cx - r) * s, (cy - r) * s, (cx + r) * s, (cy + r) * s], fill=255)
    else:
        draw.polygon(poly, fill=255)
    return canvas


def shape_mask(shape: str, cx: float, cy: float, r: float) -> np.ndarray:
    """Antialiased coverage in [0, 1], float32 [32, 32], for one object (coordinates in 32x32 pixels)."""
    small = supersampled_mask(shape, cx, cy, r).resize((SIZE, SIZE), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def _background(rng: np.random.Generator, kind: str) -> np.ndarray:
    base = rng.uniform(200.0, 232.0)
    tint = rng.uniform(-10.0, 10.0, size=3)
    bg = np.broadcast_to(base + tint, (SIZE, SIZE, 3)).astype(np.float32)
    if kind == "noise":
        bg = bg + rng.normal(0.0, rng.uniform(2.0, 5.0), size=(SIZE, SIZE, 1)).astype(np.float32)
    elif kind == "stripes":
        angle = rng.uniform(0.0, math.pi)
        period = rng.uniform(4.0, 10.0)
        amplitude = rng.uniform(3.0, 7.0)
        yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
        phase = (xx * math.cos(angle) + yy * math.sin(angle)) * (2 * math.pi / period) + rng.uniform(0, 6.3)
        bg = bg + (amplitude * np.sin(phase))[..., None]
    elif kind != "plain":
        raise ValueError(f"unknown background {kind!r}; valid: {', '.join(BACKGROUNDS)}")
    return bg


def _centre(pos: str, r: float, jitter: np.ndarray) -> tuple[float, float]:
    x, y = CENTRES[pos]
    if pos in ("left", "right"):
        x, y = x + JITTER_ALONG * jitter[0], y + JITTER_ACROSS * jitter[1]
    elif pos in ("top", "bottom"):
        x, y = x + JITTER_ACROSS * jitter[0], y + JITTER_ALONG * jitter[1]
    else:
        x, y = x + JITTER_CENTER * jitter[0], y + JITTER_CENTER * jitter[1]
    # Keep the whole object inside the frame.
    margin = 1.2 * r + 0.5
    return float(np.clip(x, margin, SIZE - margin)), float(np.clip(y, margin, SIZE - margin))


def object_positions(scene: dict) -> list[str]:
    """Position word of each object: the single object's `pos1`, or the relation's two slots."""
    if scene["n_objects"] == 1:
        return [scene["pos1"]]
    return ["left", "right"] if scene["relation"] == "left_of" else ["top", "bottom"]


def render_scene(scene: dict) -> np.ndarray:
    """uint8 [32, 32, 3] picture of a scene dict (keys as produced by dclib.data.shapes.sample_scene)."""
    rng = np.random.default_rng(scene["render_seed"])
    # Object noise is drawn first and for both slots whatever the scene holds, so scenes that share a seed
    # share jitter and colour noise slot by slot (and the background too when its kind is the same).
    jitters = rng.uniform(-1.0, 1.0, size=(2, 2))
    colour_noise = rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, size=(2, 3))
    image = _background(rng, scene["background"])
    for slot, pos in enumerate(object_positions(scene)):
        k = slot + 1
        r = RADIUS[scene[f"size{k}"]]
        cx, cy = _centre(pos, r, jitters[slot])
        alpha = shape_mask(scene[f"shape{k}"], cx, cy, r)[..., None]
        colour = np.asarray(COLOURS[scene[f"colour{k}"]], np.float32) + colour_noise[slot]
        image = image * (1.0 - alpha) + colour * alpha
    return np.rint(image).clip(0, 255).astype(np.uint8)

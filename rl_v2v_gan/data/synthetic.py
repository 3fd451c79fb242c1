"""The built-in synthetic day/night dataset: procedural scenes of bouncing shapes, two styles.

A scene (shapes with random kind, size, colour, start and velocity) is rendered in the "day"
style (domain A: bright sky gradient, saturated shapes) or the "night" style (domain B: dark
background, dimmed bluish shapes with a glow, vignette). The style is a deterministic function of
the scene, so a scene rendered both ways gives exact ground truth. Everything is vectorised numpy
over scenes, frames, shapes and pixels; the scenes of a split depend only on ``(seed, split, count)``.
"""

from __future__ import annotations

import numpy as np

from .dataset import to_channels

MAX_SHAPES = 4
CIRCLE, SQUARE, TRIANGLE = 0, 1, 2
# Stream ids keep the scenes of different splits disjoint: train A, train B and test are
# drawn from different generators.
SPLIT_STREAMS = {"trainA": 1, "trainB": 2, "testA": 3, "testB": 4}


def sample_scenes(n: int, t: int, h: int, w: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random scene parameters for ``n`` clips of ``t`` frames; positions in pixels, per frame."""
    short = min(h, w)
    kind = rng.integers(0, 3, size=(n, MAX_SHAPES))
    present = np.arange(MAX_SHAPES)[None, :] < rng.integers(2, MAX_SHAPES + 1, size=(n, 1))
    radius = rng.uniform(0.08, 0.2, size=(n, MAX_SHAPES)) * short
    colour = rng.uniform(0.0, 1.0, size=(n, MAX_SHAPES, 3))
    colour = colour / colour.max(axis=-1, keepdims=True)  # saturated: brightest channel = 1
    start = rng.uniform(0.0, 1.0, size=(n, MAX_SHAPES, 2))
    speed = rng.uniform(0.5, 2.5, size=(n, MAX_SHAPES, 1)) * short / 32.0
    angle = rng.uniform(0, 2 * np.pi, size=(n, MAX_SHAPES))
    velocity = speed * np.stack([np.cos(angle), np.sin(angle)], axis=-1)  # [n,K,2] (x, y) px/frame

    lo = radius[..., None]  # centres bounce inside [r, size - r]
    hi = np.array([w, h])[None, None, :] - lo
    span = np.maximum(hi - lo, 1e-3)
    pos0 = lo + start * span
    steps = np.arange(t)[None, :, None, None]  # [1,T,1,1]
    u = np.mod(pos0[:, None] - lo[:, None] + velocity[:, None] * steps, 2 * span[:, None])
    centre = lo[:, None] + np.where(u < span[:, None], u, 2 * span[:, None] - u)  # [n,T,K,2]
    return {"kind": kind, "present": present, "radius": radius, "colour": colour, "centre": centre}


def shape_masks(scenes: dict[str, np.ndarray], h: int, w: int) -> np.ndarray:
    """Soft (anti-aliased) coverage of every shape, ``[n, T, K, H, W]`` in [0, 1]."""
    ys = np.arange(h, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(w, dtype=np.float32)[None, :] + 0.5
    cx = scenes["centre"][..., 0, None, None].astype(np.float32)  # [n,T,K,1,1]
    cy = scenes["centre"][..., 1, None, None].astype(np.float32)
    r = scenes["radius"][:, None, :, None, None].astype(np.float32)
    dx, dy = xs - cx, ys - cy
    # Signed distance (negative inside) for each kind; one soft edge for all of them.
    d_circle = np.sqrt(dx * dx + dy * dy) - r
    d_square = np.maximum(np.abs(dx), np.abs(dy)) - 0.8 * r
    d_triangle = np.maximum(np.abs(dx) * 0.866 + dy * 0.5, -dy) - 0.5 * r  # apex down (image y grows downwards)
    kind = scenes["kind"][:, None, :, None, None]
    dist = np.where(kind == CIRCLE, d_circle, np.where(kind == SQUARE, d_square, d_triangle))
    cover = np.clip(0.5 - dist, 0.0, 1.0)
    return cover * scenes["present"][:, None, :, None, None]


def _box_blur(x: np.ndarray, radius: int) -> np.ndarray:
    """Separable box blur over the last two axes (cumulative sums, edge-padded)."""
    for axis in (-2, -1):
        pad = [(0, 0)] * x.ndim
        pad[axis] = (radius + 1, radius)
        c = np.cumsum(np.pad(x, pad, mode="edge"), axis=axis)
        n = x.shape[axis]
        hi = np.take(c, np.arange(2 * radius + 1, 2 * radius + 1 + n), axis=axis)
        lo = np.take(c, np.arange(0, n), axis=axis)
        x = (hi - lo) / (2 * radius + 1)
    return x


def render(scenes: dict[str, np.ndarray], h: int, w: int, style: str) -> np.ndarray:
    """Render scenes in ``style`` ("day" or "night") as float RGB ``[n, T, 3, H, W]`` in [0, 1]."""
    masks = shape_masks(scenes, h, w)  # [n,T,K,H,W]
    n, t = masks.shape[:2]
    grad = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]  # top -> bottom
    if style == "day":
        top, bottom = np.array([0.35, 0.6, 0.95]), np.array([0.9, 0.95, 1.0])
        colour = scenes["colour"]
    elif style == "night":
        top, bottom = np.array([0.02, 0.02, 0.08]), np.array([0.08, 0.08, 0.18])
        colour = 0.55 * scenes["colour"] * np.array([0.7, 0.8, 1.0]) + np.array([0.0, 0.02, 0.08])
    else:
        raise ValueError(f"unknown style {style!r}")
    background = top[:, None, None] * (1 - grad) + bottom[:, None, None] * grad  # [3,H,W]
    img = np.broadcast_to(background.astype(np.float32), (n, t, 3, h, w)).copy()
    colour = colour.astype(np.float32)[:, None, :, :, None, None]  # [n,1,K,3,1,1]
    for k in range(MAX_SHAPES):  # painter's order: later shapes on top (K is tiny and fixed)
        m = masks[:, :, k, None]  # [n,T,1,H,W]
        img = img * (1 - m) + colour[:, :, k] * m
    if style == "night":
        glow = _box_blur(masks.max(axis=2), max(1, min(h, w) // 16))  # [n,T,H,W]
        img = img + 0.25 * glow[:, :, None] * np.array([0.6, 0.7, 1.0], dtype=np.float32)[:, None, None]
        yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
        img = img * (1.0 - 0.35 * (xx**2 + yy**2) / 2).astype(np.float32)
    return np.clip(img, 0.0, 1.0)


def to_uint8(img: np.ndarray, channels: int) -> np.ndarray:
    """Float RGB ``[..., 3, H, W]`` in [0,1] to uint8 with 3 channels, or 1 channel of luma."""
    return np.round(to_channels(img, channels) * 255.0).astype(np.uint8)


def generate(split: str, n: int, shape: tuple[int, int, int, int], seed: int, style: str,
             chunk: int = 64) -> np.ndarray:
    """``n`` clips of ``split``'s scenes in ``style`` as uint8 ``[n, T, C, H, W]``.

    Scenes depend only on ``(seed, split, n)``, so the same split rendered in the
    other style shows the same scenes (that is the ground truth of the test split).
    """
    t, h, w, c = shape
    rng = np.random.default_rng([seed, SPLIT_STREAMS[split]])
    scenes = sample_scenes(n, t, h, w, rng)
    out = np.empty((n, t, c, h, w), dtype=np.uint8)
    for i in range(0, n, chunk):  # chunks bound the [n,T,K,H,W] mask memory
        part = {k: v[i:i + chunk] for k, v in scenes.items()}
        out[i:i + chunk] = to_uint8(render(part, h, w, style), c)
    return out

"""Procedural "toy shapes" images and captions: the data of the bundled toy-shapes CLIP.

Every image is one coloured shape on a textured background, rendered from a seed, so the
training set, the held-out set and the app's examples come from the same code and never
need a download.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Base colours in RGB [0,1]; each image jitters the shade around its base.
COLOURS = {
    "red": (0.86, 0.13, 0.11),
    "green": (0.16, 0.66, 0.22),
    "blue": (0.13, 0.27, 0.88),
    "yellow": (0.95, 0.84, 0.12),
}
SHAPES = ("circle", "square", "triangle", "cross")
# The toy-shapes vocabulary: 16 classes, "colour shape".
CLASSNAMES = tuple(f"{c} {s}" for c in COLOURS for s in SHAPES)

# Caption templates used in training, besides the 80 OpenAI ImageNet ones.
CAPTION_TEMPLATES = (
    "a photo of a {}.",
    "a {}.",
    "a picture of a {}.",
    "a drawing of a {}.",
    "an image of a {}.",
    "a rendering of a {}.",
)


@dataclass
class ShapeBatch:
    images: torch.Tensor   # (N, 3, S, S) in [0,1]
    colour: torch.Tensor   # (N,) index into COLOURS
    shape: torch.Tensor    # (N,) index into SHAPES

    @property
    def labels(self) -> torch.Tensor:
        """Index into CLASSNAMES."""
        return self.colour * len(SHAPES) + self.shape


def _shape_masks(x: torch.Tensor, y: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    # x, y: (N, H, W) shape-frame coordinates; shape: (N,). Returns a {0,1} mask (N, H, W).
    r2 = x * x + y * y
    circle = r2 <= 1.0
    square = torch.maximum(x.abs(), y.abs()) <= 0.86
    # Equilateral triangle, circumradius 1.25: three half-planes at inradius 0.625.
    tri = torch.ones_like(circle)
    for angle in (270.0, 30.0, 150.0):
        a = math.radians(angle)
        tri &= (math.cos(a) * x + math.sin(a) * y) <= 0.625
    cross = ((x.abs() <= 0.34) & (y.abs() <= 1.0)) | ((y.abs() <= 0.34) & (x.abs() <= 1.0))
    stack = torch.stack([circle, square, tri, cross], dim=1)  # (N, 4, H, W)
    return stack.gather(1, shape.view(-1, 1, 1, 1).expand(-1, 1, *x.shape[1:])).squeeze(1).float()


def render(colour: torch.Tensor, shape: torch.Tensor, generator: torch.Generator,
           size: int = 32, supersample: int = 3) -> torch.Tensor:
    """Render one shape per image. colour, shape: (N,) indices. Returns (N, 3, size, size)."""
    n, hi = colour.shape[0], size * supersample
    u = lambda *s: torch.rand(*s, generator=generator)  # noqa: E731
    # Pixel-centre grid in [-1, 1].
    g = (torch.arange(hi, dtype=torch.float32) + 0.5) / hi * 2 - 1
    gy, gx = torch.meshgrid(g, g, indexing="ij")
    # Pose: centre, scale (half-extent), rotation.
    cx, cy = (u(n) - 0.5) * 0.7, (u(n) - 0.5) * 0.7
    scale = 0.34 + 0.26 * u(n)
    theta = u(n) * 2 * math.pi
    dx, dy = gx[None] - cx[:, None, None], gy[None] - cy[:, None, None]
    c, s = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    x = (c * dx + s * dy) / scale[:, None, None]
    y = (-s * dx + c * dy) / scale[:, None, None]
    mask = _shape_masks(x, y, shape)[:, None]  # (N, 1, hi, hi)

    # Foreground: base colour, jittered shade and brightness.
    base = torch.tensor(list(COLOURS.values()))[colour]  # (N, 3)
    fg = (base + 0.06 * torch.randn(n, 3, generator=generator)) * (0.78 + 0.3 * u(n, 1))
    fg = fg.clamp(0, 1)[:, :, None, None]

    # Background: a low-saturation tint, a linear gradient, stripes and pixel noise.
    grey = 0.1 + 0.8 * u(n, 1)
    tint = grey + 0.08 * (u(n, 3) - 0.5)
    phi = u(n) * 2 * math.pi
    ramp = (torch.cos(phi)[:, None, None] * gx + torch.sin(phi)[:, None, None] * gy)[:, None]
    bg = tint[:, :, None, None] + 0.15 * (u(n, 1, 1, 1) - 0.5) * ramp
    psi, freq = u(n) * math.pi, 2 + 8 * u(n)
    stripes = torch.sin(freq[:, None, None] * math.pi * (torch.cos(psi)[:, None, None] * gx
                                                         + torch.sin(psi)[:, None, None] * gy))
    bg = bg + 0.12 * u(n, 1, 1, 1) * stripes[:, None]

    img = mask * fg + (1 - mask) * bg
    img = F.avg_pool2d(img, supersample)  # anti-aliased edges
    img = img + 0.05 * u(n, 1, 1, 1) * torch.randn(img.shape, generator=generator)
    return img.clamp(0, 1)


def sample(n: int, seed: int, size: int = 32) -> ShapeBatch:
    """n images with uniformly drawn classes, fully determined by seed."""
    gen = torch.Generator().manual_seed(seed)
    colour = torch.randint(len(COLOURS), (n,), generator=gen)
    shape = torch.randint(len(SHAPES), (n,), generator=gen)
    return ShapeBatch(render(colour, shape, gen, size=size), colour, shape)


def captions(batch: ShapeBatch, rng: random.Random, templates, weights=None) -> list[str]:
    """One caption per image: mostly "colour shape", sometimes partial or with the class empty.

    The empty captions ("a photo of a .") teach the text tower the blank prompt that
    CLIPure purifies towards.
    """
    colours, out = list(COLOURS), []
    for ci, si in zip(batch.colour.tolist(), batch.shape.tolist()):
        p = rng.random()
        if p < 0.75:
            cls = f"{colours[ci]} {SHAPES[si]}"
        elif p < 0.86:
            cls = SHAPES[si]
        elif p < 0.95:
            cls = colours[ci]
        else:
            cls = ""
        out.append(rng.choices(templates, weights)[0](cls))
    return out

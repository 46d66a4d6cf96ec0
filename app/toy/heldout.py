"""The toy world's held-out images: freshly generated from a seed the training run never used,
as 8-bit images like the app's. The evaluator's `toy` dataset, the toy tables and the benchmarks
draw from here."""
from __future__ import annotations

import torch

from app.toy import shapes

HELDOUT_SEED = 987_654_321     # training used seeds 0 .. steps-1


def heldout(n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 3, size, size) images in [0, 1], rounded to 8 bits, and their (n,) labels."""
    batch = shapes.sample(n, seed=HELDOUT_SEED, size=size)
    x = torch.round(batch.images * 255) / 255
    return x, batch.labels

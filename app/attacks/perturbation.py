"""The perturbation an attack made: its norms, and its rounding to the 8-bit grid."""
from __future__ import annotations

import math

import torch


def perturbation_norms(x: torch.Tensor, x_adv: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per image: (L-inf in 1/255, L2 in pixel units)."""
    d = (x_adv - x).flatten(1).float()
    return (d.abs().amax(dim=1) * 255.0).tolist(), d.norm(dim=1).tolist()


def perturbation_stats(x: torch.Tensor, x_adv: torch.Tensor) -> tuple[float, float, float]:
    """(L-inf in 1/255, L2 in pixel units, PSNR in dB), each the worst over the batch."""
    d = (x_adv - x).flatten(1)
    linf = d.abs().max().item() * 255.0
    l2 = d.norm(dim=1).max().item()
    mse = d.pow(2).mean(dim=1).max().item()
    psnr = math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)
    return linf, l2, psnr


def quantize_toward(x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """Put x_adv on the 8-bit grid by rounding its perturbation towards x.

    |d| shrinks elementwise, so neither the L-inf nor the L2 norm can grow past eps; when x is
    on the grid (the pipeline quantises it), x_adv saved as a PNG is exactly what was evaluated.
    """
    d = (x_adv - x) * 255.0
    d = torch.trunc(d + torch.sign(d) * 1e-4) / 255.0   # 1e-4: float error at exact multiples
    return (x + d).clamp(0, 1)

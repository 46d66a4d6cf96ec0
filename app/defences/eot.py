"""Expectation over Transformation (Athalye et al. 2018) for randomised defences such as CLIPure-Diff.

Each forward pass of a randomised purifier draws its own timesteps and noise, so one gradient is
one sample of a random quantity. The adaptive attacker averages K of them.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from app.common import limits
from app.common.errors import check_int


def check_eot(k, limit=None) -> int:
    """K (1 in the UI by default, 10 in evaluations) as a whole number from 1 to max_eot (of
    `limit`, a Limits, or LIMITS), else one sentence. validate_attack checks AttackConfig.eot here."""
    return check_int("The EOT count (gradients averaged per attack step)", k, 1,
                     (limit or limits.LIMITS).max_eot)


def eot_gradient(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, labels: torch.Tensor, k: int,
                 loss_fn: Callable = F.cross_entropy) -> torch.Tensor:
    """Mean over k forward/backward passes of grad_x loss_fn(model(x), labels); same shape as x.

    `model` should draw fresh randomness on each call (e.g. a DefendedClassifier holding one
    generator), so the k gradients are k independent draws.
    """
    k = check_eot(k)
    total = torch.zeros_like(x)
    for _ in range(k):
        xx = x.detach().clone().requires_grad_(True)
        grad, = torch.autograd.grad(loss_fn(model(xx), labels), xx)
        total += grad
    return total / k

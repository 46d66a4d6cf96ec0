"""What each attack costs: its passes of the attacked model per image, as (forwards, backwards) for
`t` steps and `c` classes. Upper bounds: APGD and AutoAttack's later stages stop early on success.
Each ATTACKS entry names one of these; the one cost model (app/flows/cost.py) multiplies them by
what a query of the defence costs.
"""
from __future__ import annotations


def targets(c: int) -> int:
    """APGD-T's target classes, as AutoAttack's standard: the top 9 other classes."""
    return min(9, c - 1)


def one_step(t: int, c: int) -> tuple[int, int]:
    return 1, 1


def iterative(t: int, c: int) -> tuple[int, int]:
    return t, t                       # one forward and one backward a step


def apgd(t: int, c: int) -> tuple[int, int]:
    return t + 1, t                   # and a first forward at the start


def apgd_t(t: int, c: int) -> tuple[int, int]:
    return targets(c) * (t + 1), targets(c) * t


def autoattack(t: int, c: int) -> tuple[int, int]:
    """APGD-CE, APGD-T, FAB-T (two passes a step) and Square (forwards only), each with t steps."""
    k = targets(c)
    return t + 1 + k * (t + 1) + k * 2 * t + t, t + k * t + k * 2 * t


def autoattack_custom(t: int, c: int) -> tuple[int, int]:
    """APGD-CE with 5 restarts, then APGD-T over the target classes."""
    return 5 * (t + 1) + targets(c) * (t + 1), 5 * t + targets(c) * t


def queries(t: int, c: int) -> tuple[int, int]:
    return t + 1, 0                   # Square: forwards only


def deepfool(t: int, c: int) -> tuple[int, int]:
    return t, t * c                   # a gradient per class a step

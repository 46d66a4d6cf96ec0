"""Where a running attack is: forward passes counted, and the APGD runs inside AutoAttack.

torchattacks reports no progress of its own. ForwardCounter wraps the attacked model (each pass
also checks the request's budget, so a cancel stops the attack); report_phases makes each APGD
restart, or target class of APGD-T, say when it starts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch.nn as nn

from app.common import budget


class ForwardCounter(nn.Module):
    """Counts forward passes, so a caller can report per-step progress of a running attack.
    Each pass first checks the active request budget (app/common/budget.py): a cancelled or overdue
    request stops here, at most one forward pass late."""

    def __init__(self, model: nn.Module, on_forward: Callable[[int], None] | None = None):
        super().__init__()
        self.model = model
        self.count = 0
        self.on_forward = on_forward

    def forward(self, x):
        budget.check()
        self.count += 1
        if self.on_forward is not None:
            self.on_forward(self.count)
        return self.model(x)


def sub_attacks(atk) -> list:
    """atk and the attacks it runs in turn (MultiAttack's list, AutoAttack's inner one)."""
    inner = getattr(getattr(atk, "_autoattack", None), "attacks", None) or getattr(atk, "attacks", None) or []
    return [atk] + [a for sub in inner for a in sub_attacks(sub)]


@dataclass(frozen=True)
class Phase:
    """One APGD run as it starts: what it is, and where it sits in the attack."""
    text: str        # e.g. "APGD-CE restart 2/5", "APGD-T target 3/9"
    start: int       # forward passes counted before it
    steps: int       # its iterations
    per_step: int    # forward passes per iteration (EOT draws)
    run: int         # 1-based, over all the attack's runs
    runs: int        # the most runs it can make (runs of images already fooled are skipped)

    def step(self, count: int) -> int:
        """The iteration a forward count falls in."""
        return min(self.steps, max(0, (count - self.start) // self.per_step))


def report_phases(atk, counter: ForwardCounter, on_phase: Callable[[Phase], None]) -> int:
    """Make each APGD run (a restart, or a target class of APGD-T) call on_phase before it starts;
    return the most runs the attack can make. torchattacks gives no other progress inside AutoAttack."""
    subs = [sub for sub in sub_attacks(atk) if hasattr(sub, "attack_single_run")]
    counts = [sub.n_restarts * (sub.n_target_classes if hasattr(sub, "n_target_classes") else 1) for sub in subs]
    total, started = sum(counts), [0]
    for sub, n in zip(subs, counts):
        targeted = hasattr(sub, "n_target_classes")
        name = "APGD-T" if targeted else f"APGD-{getattr(sub, 'loss', 'ce').upper()}"
        single, done = sub.attack_single_run, [0]

        def run(*args, _single=single, _done=done, _n=n, _name=name, _sub=sub, _targeted=targeted, **kwargs):
            _done[0] += 1
            started[0] += 1
            what = (f"target {_sub.target_class - 1}/{_sub.n_target_classes}" if _targeted
                    else f"restart {_done[0]}/{_n}")
            on_phase(Phase(f"{_name} {what}", counter.count, _sub.steps, max(getattr(_sub, "eot_iter", 1), 1),
                           started[0], total))
            return _single(*args, **kwargs)
        sub.attack_single_run = run
    return total

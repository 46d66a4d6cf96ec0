"""The attacker's pixel gradient, diagnosed: its norm, its exact zeros, and its cosine with the
exact (adaptive, fp32) gradient; and check (a) of the masking audit, one rule for one image
(the audit and the evaluator's table both use `vanishing`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from app.defences.defence import Defence
from app.clip.models import load_backbone
from app.attacks.threat_models import attacked_model, eot_for, randomised
from app.clip.zeroshot import TEXT_CACHE, build_classifier

VANISHING = 1e-6      # a gradient below this share of the exact one's norm is "vanishing"
ALL_ZERO = 0.99       # ... and so is one with at least this share of exactly-zero entries


@dataclass(frozen=True)
class GradientDiagnostics:
    """The pixel gradient of the cross-entropy under a threat model, at one input."""
    norm: float            # ||grad||_2
    zero_fraction: float   # share of entries that are exactly 0
    cos_to_exact: float    # cosine with the exact (adaptive, fp32) gradient; nan when either is 0
    exact_norm: float      # ||exact gradient||_2
    draws: int = 1         # gradients the attacker averaged (EOT K); > 1 only against a randomised defence
    randomised: bool = False   # the defence draws randomness: the exact gradient is that of the scored draw
    exact_zero_fraction: float = 0.0   # share of the exact gradient's entries that are exactly 0

    def to_dict(self) -> dict:
        return {k: (None if v != v else v) for k, v in asdict(self).items()}   # NaN -> null in JSON

    @property
    def detail(self) -> str:
        return (f"gradient norm {self.norm:.3g} ({self.zero_fraction:.0%} exact zeros) against {self.exact_norm:.3g} "
                f"for the exact fp32 gradient ({self.exact_zero_fraction:.0%} exact zeros)")


def vanishing(g: GradientDiagnostics | Mapping) -> bool:
    """Check (a) for one image: the attacker's gradient is (almost) all exact zeros, or its norm is
    below VANISHING times the exact gradient's. Takes the diagnostics or their JSON (to_dict)."""
    d = g.to_dict() if isinstance(g, GradientDiagnostics) else g
    return d["zero_fraction"] >= ALL_ZERO or d["norm"] < VANISHING * max(d["exact_norm"], 1e-30)


def _input_gradient(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    xx = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(xx), labels.to(x.device))
        (g,) = torch.autograd.grad(loss, xx)
    return g


def exact_defence(defence: Defence, classnames: Sequence[str], template_set: str, precision: str) -> Defence:
    """The defence at fp32, which the exact gradient is taken through (the same one at fp32)."""
    if precision == "fp32":
        return defence
    bb = load_backbone(defence.backbone, precision="fp32")
    return Defence(build_classifier(bb, classnames, template_set), TEXT_CACHE.blank_embedding(bb, template_set),
                   defence.purify, defence.backbone)


def gradient_diagnostics(threat_model: str, defence: Defence, x: torch.Tensor, labels: torch.Tensor,
                         exact: Defence, eot: int = 1) -> GradientDiagnostics:
    """Diagnostics of the gradient an attacker gets under `threat_model` at x (batch of one).

    Against a randomised defence (CLIPure-Diff) the attacker's gradient is the mean of `eot`
    draws from its own random stream, as the attack takes it, and the reference is the exact
    gradient of the draw the defence scores (stream 0), which the attacker never sees: their
    cosine says how well the attacker's estimate points where it matters, not 1 by construction.
    """
    rand, k = randomised(threat_model, defence.purify), eot_for(eot, threat_model, defence.purify)
    attacker = attacked_model(threat_model, defence)
    g = sum(_input_gradient(attacker, x, labels).float() for _ in range(k)) / k
    e = _input_gradient(attacked_model("adaptive", exact.with_purify(defence.purify), stream=0), x, labels).float()
    gn, en = g.norm().item(), e.norm().item()
    cos = F.cosine_similarity(g.flatten(), e.flatten(), dim=0).item() if gn > 0 and en > 0 else float("nan")
    return GradientDiagnostics(gn, (g == 0).float().mean().item(), cos, en, k, rand,
                               exact_zero_fraction=(e == 0).float().mean().item())


def pgd_start(x: torch.Tensor, eps: float, seed: int) -> torch.Tensor:
    """A random start like PGD's, where it takes its first gradient: x + U(-eps, eps) per pixel (eps
    in 1/255), clipped to [0, 1], from its own generator seeded by `seed` (the global RNG is left
    alone; torchattacks draws its own start from the global one)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    noise = (torch.rand(x.shape, generator=g) * 2 - 1).to(x.device) * eps / 255
    return (x + noise).clamp(0, 1)

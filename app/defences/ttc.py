"""Test-time counterattacks (TTC; Xing et al., CVPR 2025): a training-free defence of CLIP in pixel
space, beside CLIPure's latent purification (docs/design.md, "A second defence: TTC").

Per image x (pixels in [0, 1]; f = CLIP's image encoder, unnormalised features), with the official
code's defaults (eps 4/255, 2 steps of 1/255, tau_thres 0.2, beta 2):

    delta_0 = clip(U(-eps, eps), -x, 1 - x)                       the random start
    tau     = ||f(x + delta_0) - f(x)|| / ||f(x)||                  how far the noise moves the embedding
    delta_k = clip(clip(delta_{k-1} + alpha sign(g_k), -eps, eps), -x, 1 - x),
              g_k = grad_delta ||f(x + delta) - f(x)||^2 at delta_{k-1}   (the counterattack: away from f(x))
    w       = softmax_k(sign(tau_thres - tau) * k * beta)  if tau < tau_thres ("falsely stable")
              else (1, 0, ..., 0)                          (only the random start)
    x_ttc   = x + sum_k w_k delta_k                          zero-shot CLIP classifies x_ttc

What an attacker's exact gradient (create_graph through the two steps) sees: sign() and the weight
switch are piecewise constant, so their derivative is zero almost everywhere; the gradient reaches
x through x itself and through the clips to the image range (where a delta sits on -x or 1 - x),
never through the direction of a counterattack step or through tau. BPDA takes the whole
counterattack as the identity.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import contextlib

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from app.common.errors import check_int, check_range

Encoder = Callable[[torch.Tensor], torch.Tensor]   # (N, 3, S, S) pixels in [0, 1] -> (N, D) features


@dataclass(frozen=True)
class TTCConfig:
    """TTC's parameters, the official code's defaults (test_time_counterattack.py's arguments)."""
    eps: float = 4.0          # eps_ttc, L-inf, in 1/255
    steps: int = 2            # counterattack steps
    step_size: float = 1.0    # alpha, in 1/255
    tau_thres: float = 0.2
    beta: float = 2.0

    def validate(self) -> "TTCConfig":
        return TTCConfig(eps=check_range("TTC's eps", self.eps, 0, 32),
                         steps=check_int("TTC's counterattack steps", self.steps, 0, 20),
                         step_size=check_range("TTC's step size", self.step_size, 0, 32),
                         tau_thres=check_range("TTC's tau threshold", self.tau_thres, 0, 10),
                         beta=check_range("TTC's beta", self.beta, 0, 50))


@dataclass
class Counterattack:
    """What TTC did to a batch of N images."""
    points: list[torch.Tensor]   # K+1 images (N, 3, S, S): x + delta_0 (the random start), ..., x + delta_K
    tau: torch.Tensor            # (N,)
    weights: torch.Tensor        # (N, K+1), rows sum to 1
    x_ttc: torch.Tensor          # (N, 3, S, S) x + sum_k w_k delta_k: what CLIP classifies
    # The encoder features the counterattack computed, detached: f(x), then f at its first points
    # (x + delta_0, ...) in order; whoever draws the trajectory need not encode those again.
    features: list[torch.Tensor] = field(default_factory=list)


def relative_change(f_x: torch.Tensor, f_noisy: torch.Tensor) -> torch.Tensor:
    """tau (N,): ||f(x + delta_0) - f(x)|| / ||f(x)||."""
    return (f_noisy - f_x).norm(dim=-1) / f_x.norm(dim=-1)


def step_weights(tau: torch.Tensor, steps: int, tau_thres: float, beta: float) -> torch.Tensor:
    """(N, K+1): softmax over k of sign(tau_thres - tau) * k * beta where tau < tau_thres, else all
    weight on the random start (k = 0). Piecewise constant in tau."""
    sign = torch.sign(tau_thres - tau)                                  # (N,)
    k = torch.arange(steps + 1, device=tau.device, dtype=tau.dtype)
    soft = torch.softmax(sign[:, None] * k[None, :] * beta, dim=1)
    hard = torch.zeros_like(soft)
    hard[:, 0] = 1.0
    return torch.where(sign[:, None] > 0, soft, hard)


def random_start(x: torch.Tensor, eps: float, generator: torch.Generator | None) -> torch.Tensor:
    """delta_0 (N, 3, S, S): uniform in [-eps, eps] (eps in [0, 1] units), clipped so x + delta_0 stays an image."""
    device = generator.device if generator is not None else x.device
    noise = (torch.rand(x.shape, generator=generator, device=device).to(x.device, x.dtype) * 2 - 1) * eps
    return torch.clamp(noise, -x, 1 - x)


def counterattack(x: torch.Tensor, encode: Encoder, cfg: TTCConfig = TTCConfig(),
                  generator: torch.Generator | None = None, backward: str = "none") -> Counterattack:
    """TTC on x (N, 3, S, S). backward: "none" (no graph), "adaptive" (create_graph through the
    counterattack steps, so an attacker differentiates all of it) or "bpda" (computed without a
    graph, x_ttc = x + (counterattack).detach(): the identity backward)."""
    eps, alpha = cfg.eps / 255, cfg.step_size / 255
    exact = backward == "adaptive" and torch.is_grad_enabled()   # a query without gradients needs no graph
    # create_graph through the encoder's backward needs its second derivative, which the fused CPU
    # attention kernel does not have; the math kernel does (same values up to rounding).
    kernel = sdpa_kernel([SDPBackend.MATH]) if exact else contextlib.nullcontext()
    with torch.set_grad_enabled(exact), kernel:
        x_in = x if exact else x.detach()
        deltas = [random_start(x_in, eps, generator)]
        f_x = encode(x_in) if exact else encode(x_in).detach()
        features, tau = [f_x.detach()], None
        for _ in range(cfg.steps):
            with torch.enable_grad():
                d = deltas[-1] if exact and deltas[-1].requires_grad else deltas[-1].detach().requires_grad_(True)
                f = encode(x_in + d)
                features.append(f.detach())
                if tau is None:   # at delta_0: how far the noise alone moved the embedding
                    tau = relative_change(f_x, f).detach()
                (g,) = torch.autograd.grad(((f - f_x) ** 2).sum(), d, create_graph=exact)
            step = torch.clamp(torch.clamp(d + alpha * torch.sign(g), -eps, eps), -x_in, 1 - x_in)
            deltas.append(step if exact else step.detach())
        if tau is None:   # no steps: the random noise alone (tau is still measured)
            with torch.no_grad():
                features.append(encode(x_in + deltas[0]))
                tau = relative_change(f_x, features[-1])
        w = step_weights(tau, cfg.steps, cfg.tau_thres, cfg.beta)            # (N, K+1)
        shift = (w[:, :, None, None, None] * torch.stack(deltas, dim=1)).sum(dim=1)
    x_ttc = x + shift.detach() if backward == "bpda" else x_in + shift
    return Counterattack([(x_in + d).detach() for d in deltas], tau, w, x_ttc, features)

"""CLIPure-Cos: purification in CLIP's latent space, step by step.

Gradient ascent on cos(z, b), the cosine between the image embedding z and the blank target
b, as the official code does it (docs/design.md, "The method"). With r = ||z|| and u = z / r:

    g   = grad_z[-cos(z, b)] = -(b_hat - cos(z, b) u) / r         closed form, tangent to the sphere
    g_u = r g
    m   = gamma m - (1 - gamma) g_u / ||g_u||_2                     norm per sample, or over the batch
    u   = u + eta m            ("l2")   or   u + eta sign(m)  ("linf")
    u   = u / ||u||,  z = r u

A normalised step of size eta therefore rotates u by atan(eta) towards b_hat, in the plane of
u and b_hat. With eta = 30 that is 88.1 degrees, past b_hat, and the next step comes back:
with the official defaults and an even number of steps the output equals the input.

The gradient is the closed form above, not autograd, so plain purification costs a handful of
vector operations per step. The same expression, kept on the autograd graph, gives the exact
gradients of the unrolled purification ("adaptive" backward); computed on detached values it
reproduces the official code, whose autograd.grad without create_graph makes each m a constant
("official" backward).
"""
from __future__ import annotations

import math
from typing import Iterator

import torch
import torch.nn.functional as F

from app.common.errors import UnknownNameError
from app.defences.trajectory import Trajectory
from app.common.registry import Registry
from app.defences.latent import latent_defence

NORMS = Registry("update norm", {"l2": "u + eta m", "linf": "u + eta sign(m)"})
GRAD_SCOPES = Registry("gradient scope", {"sample": "one norm per sample (batch-independent)",
                                          "batch": "one norm over the batch, as the official code"})
STEP_BACKWARDS = ("none", "official", "detached", "adaptive")


def clipure_cos_iter(z: torch.Tensor, blank: torch.Tensor, steps: int = 10, step_size: float = 30.0,
                     momentum: float = 0.0, norm: str = "l2", grad_scope: str = "sample",
                     backward: str = "none") -> Iterator[torch.Tensor]:
    """Yield z_0 = z, then z_1 ... z_steps, each (N, D), as they are computed.

    backward: "none" (no autograd graph), "official" (the official code's graph), "detached"
    (every direction detached) or "adaptive" (exact gradients through every step); see BACKWARDS.
    """
    NORMS.check(norm)
    GRAD_SCOPES.check(grad_scope)
    if backward not in STEP_BACKWARDS:   # "bpda" wraps a "none" run: see app.defences.purify
        raise UnknownNameError("backward mode of a purification step", backward, STEP_BACKWARDS)
    with torch.set_grad_enabled(backward != "none" and torch.is_grad_enabled()):
        b_hat = F.normalize(blank.to(z.device, z.dtype), dim=-1)   # (D,) or (N, D)
        r = z.norm(dim=-1, keepdim=True)                            # (N, 1)
        u = z / r
        m = torch.zeros_like(u)
        yield z
        for _ in range(steps):
            if backward == "official":
                # As the official purify_zi: r and u recomputed from z on the graph; the step's gradient
                # grad_z[-cos] = (cos u - b_hat) / r comes from autograd.grad without create_graph, so
                # it is a constant; grad_u = r * grad keeps r on the graph, and so does its norm.
                z_t = r * u
                r = z_t.norm(dim=-1, keepdim=True)
                u = z_t / r
                v = u.detach()
                grad = ((v * b_hat).sum(-1, keepdim=True) * v - b_hat) / r.detach()
                g_u = r * grad
            else:
                v = u.detach() if backward == "detached" else u
                cos = (v * b_hat).sum(-1, keepdim=True)             # (N, 1) = cos(z, b)
                g_u = cos * v - b_hat                               # r * grad_z[-cos(z, b)]
            u, m = normalised_step(u, m, g_u, step_size, momentum, norm, grad_scope)
            yield r * u


def normalised_step(u: torch.Tensor, m: torch.Tensor, g_u: torch.Tensor, step_size: float, momentum: float,
                    norm: str, grad_scope: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One step on the unit sphere, shared by CLIPure-Cos and CLIPure-Diff: returns (u, m), each (N, D).

    g_u = r * (gradient of the loss to minimise); it is normalised per sample or over the batch
    ("batch", as the official code: couples batch mates), then m = gamma m - (1 - gamma) g_u / ||g_u||,
    u = normalize(u + eta m) ("l2") or normalize(u + eta sign(m)) ("linf").
    """
    g_norm = g_u.norm(dim=-1, keepdim=True) if grad_scope == "sample" else g_u.norm()
    m = momentum * m - (1.0 - momentum) * g_u / g_norm.clamp_min(1e-12)
    u = u + step_size * (m if norm == "l2" else torch.sign(m))
    return u / u.norm(dim=-1, keepdim=True), m


def clipure_cos(z: torch.Tensor, blank: torch.Tensor, steps: int = 10, step_size: float = 30.0,
                momentum: float = 0.0, norm: str = "l2", grad_scope: str = "sample") -> Trajectory:
    """Purify a batch of image embeddings z (N, D) towards the blank target (D,).

    Returns the whole Trajectory; traj.embeddings is (steps+1, N, D) and [0] is z.
    """
    with torch.no_grad():
        zs = list(clipure_cos_iter(z, blank, steps, step_size, momentum, norm, grad_scope))
        emb = torch.stack(zs)
        cos = F.cosine_similarity(emb, blank.to(z.device, z.dtype).expand_as(emb), dim=-1)
    return Trajectory(emb, cos)


def rotation_per_step(step_size: float) -> float:
    """Angle in degrees that one normalised L2 step of size eta rotates u: atan(eta)."""
    return math.degrees(math.atan(step_size))


def _iterate(z, blank, cfg, backward: str = "none", backbone: str | None = None,
             generator: torch.Generator | None = None, measure_last: bool = True):
    """The registry's purifier (app.defences.latent.Iterate): deterministic, no extras."""
    for z_t in clipure_cos_iter(z, blank, cfg.steps, cfg.step_size, cfg.momentum, cfg.norm, cfg.grad_scope,
                                backward):
        yield z_t, {}


def _exact_rotation(cfg) -> float | None:
    """eta where each step is exactly a rotation by atan(eta) (L2 update, per-sample norm, gamma = 0)."""
    exact = cfg.norm == "l2" and cfg.grad_scope == "sample" and cfg.momentum == 0
    return cfg.step_size if exact else None


def _caveats(cfg) -> list[str]:
    if cfg.steps % 2 == 1 and cfg.step_size >= 1 and cfg.momentum == 0 and cfg.norm == "l2":
        return [f"T = {cfg.steps} is odd: with η = {cfg.step_size:g} each step overshoots the blank, so the "
                f"iterate alternates between two points (a 2-cycle); an even T returns to the input, an odd T "
                f"ends on the far side, which can change CLIPure-Cos's answer on the clean image too."]
    return []


SPEC = latent_defence(
    "CLIPure-Cos", "CLIPure-Cos (ICLR 2025): T steps of the image embedding towards the blank prompt's, on the "
    "sphere.", _iterate, exact_rotation=_exact_rotation, caveats=_caveats)

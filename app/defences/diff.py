"""CLIPure-Diff: purification by the likelihood of a diffusion prior over CLIP image embeddings.

Each step scores z by the prior's denoising loss at one random timestep t in [900, 999] (the
same t for the whole batch, fresh Gaussian noise per sample, no text condition), on the scaled
embedding s = z * image_embed_scale, and moves z down that loss with the step of CLIPure-Cos
(docs/official-code.md, "CLIPure-Diff"). With r = ||z|| and u = z / r:

    g   = grad_s loss(s, t, noise)
    g_u = r g
    m   = gamma m - (1 - gamma) g_u / ||g_u||,   u = normalize(u + eta m),   z = r u

The random t and noise make the defence randomised: an attacker should average gradients over
several draws (EOT, app.defences.eot). All randomness comes from the `generator` argument.
"""
from __future__ import annotations

from typing import Iterator

import torch

from app.common.errors import UnknownNameError
from app.defences.cos import GRAD_SCOPES, NORMS, STEP_BACKWARDS, normalised_step
from app.defences.latent import READS, latent_defence
from app.defences.prior import DiffusionPrior, check_timesteps
from app.defences.priors import has_prior, load_prior

DEFAULT_TIMESTEPS = (900, 999)   # the official range, both ends included


def prior_gradient(prior: DiffusionPrior, z: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                   create_graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_s loss, per-sample loss (N,)) at s = z * image_embed_scale.

    create_graph=True keeps the gradient on the graph of z (double backpropagation through the
    prior network); otherwise z is detached first and the gradient is a constant.
    """
    with torch.enable_grad():
        if create_graph:
            s = z * prior.image_embed_scale
            if not s.requires_grad:    # z is a constant: the exact gradient has nothing to reach
                s = s.detach().requires_grad_(True)
        else:
            s = (z.detach() * prior.image_embed_scale).requires_grad_(True)
        loss = prior.p_losses(s, t, noise)                                     # (N,)
        grad, = torch.autograd.grad(loss.sum(), s, create_graph=create_graph)
    return grad, loss.detach()


def clipure_diff_iter(z: torch.Tensor, prior: DiffusionPrior, *, steps: int = 10, step_size: float = 30.0,
                      momentum: float = 0.0, norm: str = "l2", grad_scope: str = "sample",
                      backward: str = "none", generator: torch.Generator | None = None,
                      timesteps: tuple[int, int] = DEFAULT_TIMESTEPS,
                      measure_last: bool = True) -> Iterator[tuple[torch.Tensor, dict]]:
    """Yield (z_t (N, D), {"prior_loss": (N,)}) for t = 0 .. steps; the loss is the one measured at z_t.

    backward: "none" (no graph), "official" (each step's gradient a constant, r = ||z|| and u kept
    on the graph, as the official code) or "adaptive" (exact, create_graph through the prior).
    The last loss (at z_T) is only shown, never used: measure_last=False skips its forward pass
    (one of 2T + 1) and yields None for it, but still draws its t and noise, so the generator
    ends where it would have and later draws do not depend on who was watching.
    """
    NORMS.check(norm)
    GRAD_SCOPES.check(grad_scope)
    modes = [b for b in STEP_BACKWARDS if b != "detached"]   # "detached" is CLIPure-Cos's idealisation only
    if backward not in modes:
        raise UnknownNameError("backward mode of a CLIPure-Diff step", backward, modes)
    lo, hi = check_timesteps(*timesteps, prior)
    n, dev = z.shape[0], z.device

    def draw():
        t = torch.randint(lo, hi + 1, (1,), generator=generator, device=generator.device).to(dev).expand(n)
        noise = torch.randn(z.shape, generator=generator, device=generator.device).to(dev, z.dtype)
        return t, noise

    with torch.set_grad_enabled(backward != "none" and torch.is_grad_enabled()):
        r = z.norm(dim=-1, keepdim=True)                                      # (N, 1)
        u = z / r
        m = torch.zeros_like(u)
        z_t = z
        for _ in range(steps):
            grad, loss = prior_gradient(prior, z_t, *draw(), create_graph=backward == "adaptive")
            yield z_t, {"prior_loss": loss}
            u, m = normalised_step(u, m, r * grad, step_size, momentum, norm, grad_scope)
            z_t = r * u
        t, noise = draw()
        final_loss = None
        if measure_last:
            with torch.no_grad():
                final_loss = prior.p_losses(z_t.detach() * prior.image_embed_scale, t, noise)
        yield z_t, {"prior_loss": final_loss}


def diff_iterate(z, blank, cfg, backward: str = "none", backbone: str | None = None,
                 generator: torch.Generator | None = None, measure_last: bool = True):
    """The registry's iterate for "clipure-diff" (the blank target is not used)."""
    generator = generator if generator is not None else torch.Generator(device=z.device).manual_seed(cfg.seed)
    prior = load_prior(backbone, z.device)
    timesteps = cfg.diffusion_timesteps
    yield from clipure_diff_iter(z, prior, steps=cfg.steps, step_size=cfg.step_size, momentum=cfg.momentum,
                                 norm=cfg.norm, grad_scope=cfg.grad_scope, backward=backward, generator=generator,
                                 timesteps=timesteps, measure_last=measure_last)


# One prior step (a forward of the prior, and its backward for the gradient) against a CLIPure-Cos
# step (a handful of vector operations): a generous guess for ZeroGPU's duration, not measured on a GPU.
PRIOR_STEP_COST = 10

SPEC = latent_defence(
    "CLIPure-Diff", "CLIPure-Diff (ICLR 2025): T steps of the image embedding down a diffusion prior's "
    "denoising loss; randomised (a timestep and noise per step).", diff_iterate, step_cost=PRIOR_STEP_COST,
    randomised=True, supports=has_prior, check_backbone=load_prior, reads=(*READS, "diffusion_timesteps"),
    describe=lambda cfg: f"T={cfg.steps} eta={cfg.step_size:g} t in [{cfg.diffusion_timesteps[0]}, "
                         f"{cfg.diffusion_timesteps[1]}]",
    record=lambda cfg: {"steps": cfg.steps, "step_size": cfg.step_size, "momentum": cfg.momentum, "norm": cfg.norm,
                        "grad_scope": cfg.grad_scope, "diffusion_timesteps": list(cfg.diffusion_timesteps)})

"""Purifiers: the registry, their config, and the one way to run them.

A purifier maps unit image embeddings z_0 (N, D) to z_1 ... z_T on the same sphere. Each
registered purifier is a generator of (z_t, extras) pairs, extras holding per-sample values
it measures along the way (CLIPure-Diff: the prior's loss). `trace` adds what people look at
(cosine to the blank, class probabilities) and yields TrajectorySteps; `purify` returns z_T
with the gradient behaviour a threat model asks for.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from app.common.errors import OutOfRangeError, UnsupportedError, check_int, check_range
from app.common.limits import LIMITS, Limits
from app.defences.clipure_cos import (
    BACKWARDS,
    GRAD_SCOPES,
    NORMS,
    clipure_cos,
    clipure_cos_iter,
    rotation_per_step,
)
from app.defences.clipure_diff import diff_iterate
from app.defences.priors import has_prior, load_prior
from app.defences.trajectory import Prediction, Trajectory, TrajectoryStep
from app.defences.ttc import Counterattack, TTCConfig, counterattack
from app.common.registry import Registry

__all__ = ["PURIFIERS", "PurifyConfig", "PAPER_DEFAULTS", "purify", "purify_iter", "trace", "Trajectory",
           "TrajectoryStep", "Prediction", "clipure_cos", "clipure_cos_iter", "rotation_per_step", "NORMS",
           "GRAD_SCOPES", "BACKWARDS", "TTCConfig", "Counterattack", "trajectory_steps"]


@dataclass(frozen=True)
class PurifyConfig:
    method: str = "clipure-cos"   # key of PURIFIERS
    steps: int = 10               # T, official default
    step_size: float = 30.0       # eta, official default
    momentum: float = 0.0         # gamma, official default
    norm: str = "l2"              # update norm, official default
    grad_scope: str = "sample"    # "batch" reproduces the official batch coupling
    seed: int = 0                 # randomised defences (CLIPure-Diff: timesteps and noise; TTC: its start)
    diffusion_timesteps: tuple[int, int] = (900, 999)   # CLIPure-Diff's random timestep range, both ends in
    ttc: TTCConfig = TTCConfig()  # TTC's own parameters (method "ttc"; steps and step_size above are CLIPure's)

    def validate(self, limits: Limits = LIMITS) -> "PurifyConfig":
        PURIFIERS.check(self.method)
        NORMS.check(self.norm)
        GRAD_SCOPES.check(self.grad_scope)
        return replace(
            self, steps=check_int("Purification steps", self.steps, 0, limits.max_purify_steps),
            step_size=check_range("Purification step size", self.step_size, 0, limits.max_step_size),
            momentum=check_range("Momentum", self.momentum, 0, 0.999),
            seed=check_int("Purification seed", self.seed, 0, 2**31 - 1),
            diffusion_timesteps=_check_timesteps(self.diffusion_timesteps), ttc=self.ttc.validate())

    def to_dict(self) -> dict:
        return asdict(self)


def _check_timesteps(value) -> tuple[int, int]:
    """A (low, high) pair of whole timesteps in [0, 999]; the prior's own schedule is checked when it runs."""
    try:
        low, high = value
    except (TypeError, ValueError):
        raise OutOfRangeError(f"The diffusion timestep range must be two whole numbers, got {value!r}.") from None
    low = check_int("The lowest diffusion timestep", low, 0, 999)
    return low, check_int("The highest diffusion timestep", high, low, 999)


PAPER_DEFAULTS = PurifyConfig()

# (z (N, D), blank (D,), cfg, backward, backbone name, generator, measure_last) -> yields (z_t (N, D),
# extras) for t = 0 .. T. A randomised purifier draws from `generator` only, so a caller decides
# whether repeated calls see fresh randomness (an attacked model) or the same draw (a replay).
# measure_last=False: nobody looks at the extras of z_T, so a purifier may skip measuring them
# (CLIPure-Diff's last prior loss costs a forward pass of the prior).
Iterate = Callable[..., Iterator[tuple[torch.Tensor, dict]]]


# (x (N, 3, S, S), encode, cfg, backward, generator) -> Counterattack: a defence in pixel space (TTC).
Counter = Callable[..., Counterattack]


@dataclass(frozen=True)
class PurifierSpec:
    label: str
    iterate: Iterate | None       # a purifier of the embedding (CLIPure); None for a pixel-space defence
    randomised: bool = False      # draws randomness each step (the attacker should average: EOT)
    counter: Counter | None = None   # a pixel-space defence: what it does to the image (TTC)
    # The official code attacks through the defence (CLIPure's official backward); TTC's evaluation
    # attacks bare CLIP only, so it has no `official` threat model.
    official: bool = True
    supports: Callable[[str | None], bool] = lambda backbone: True   # backbones it can purify for
    # (backbone, device): load what it needs for that backbone, or raise one sentence if it can't
    check_backbone: Callable[[str | None, torch.device | str], object] = lambda backbone, device: None

    @property
    def pixel(self) -> bool:
        """It defends the image, not the embedding: scoring needs the pixels."""
        return self.counter is not None


def _cos_iterate(z, blank, cfg: PurifyConfig, backward: str = "none", backbone: str | None = None,
                 generator: torch.Generator | None = None, measure_last: bool = True):
    for z_t in clipure_cos_iter(z, blank, cfg.steps, cfg.step_size, cfg.momentum, cfg.norm, cfg.grad_scope,
                                backward):
        yield z_t, {}


PURIFIERS: Registry[PurifierSpec] = Registry("purification method", {
    "clipure-cos": PurifierSpec("CLIPure-Cos", _cos_iterate),
    "clipure-diff": PurifierSpec("CLIPure-Diff", diff_iterate, randomised=True, supports=has_prior,
                                 check_backbone=load_prior),
    "ttc": PurifierSpec("TTC", None, randomised=True,
                        counter=lambda x, encode, cfg, backward, generator: counterattack(x, encode, cfg.ttc,
                                                                                         generator, backward),
                        official=False),
})


def trajectory_steps(cfg: PurifyConfig) -> int:
    """T, the steps of the defence's trajectory after its input: the purification's steps, or a
    pixel-space defence's (TTC: its random start, its K counterattack steps and the weighted image)."""
    return cfg.ttc.steps + 2 if PURIFIERS[cfg.method].pixel else cfg.steps


def seeded(cfg: PurifyConfig, device: torch.device | str = "cpu", stream: int = 0) -> torch.Generator:
    """A generator seeded from (cfg.seed, stream): the same seed gives the same randomised trajectory.
    Stream 0 scores (the defence's own draw); stream 1 is the attacker's queries, so the draw that
    is evaluated is never one the attacker has already seen."""
    return torch.Generator(device=device).manual_seed((cfg.seed * 1_000_003 + stream) % 2**63)


def purify_iter(z: torch.Tensor, blank: torch.Tensor, cfg: PurifyConfig = PAPER_DEFAULTS,
                backward: str = "none", backbone: str | None = None,
                generator: torch.Generator | None = None,
                measure_last: bool = True) -> Iterator[tuple[torch.Tensor, dict]]:
    """Registry-driven purification: yield (z_t, extras) for t = 0 .. T. Without a generator,
    randomised purifiers draw from a fresh one seeded by cfg.seed."""
    spec = PURIFIERS[cfg.method]
    if spec.pixel:
        raise UnsupportedError(f"{spec.label} defends the image, not its embedding: score it from the pixels "
                               f"(app.flows.scoring.score).")
    generator = generator if generator is not None else seeded(cfg, z.device)
    return spec.iterate(z, blank, cfg, backward, backbone, generator, measure_last)


def purify(z: torch.Tensor, blank: torch.Tensor, cfg: PurifyConfig = PAPER_DEFAULTS, backward: str = "none",
           backbone: str | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """The final purified embedding (N, D), with gradients as `backward` (BACKWARDS) says."""
    BACKWARDS.check(backward)
    if backward == "bpda":
        with torch.no_grad():
            z_t = purify(z.detach(), blank, cfg, "none", backbone, generator)
        return z + (z_t - z).detach()          # value z_T, gradient of the identity
    out = z
    for out, _ in purify_iter(z, blank, cfg, backward, backbone, generator, measure_last=False):
        pass
    return out


@torch.no_grad()
def trace(z: torch.Tensor, blank: torch.Tensor, cfg: PurifyConfig = PAPER_DEFAULTS,
          head: Callable[[torch.Tensor], torch.Tensor] | None = None,
          backbone: str | None = None, generator: torch.Generator | None = None) -> Iterator[TrajectoryStep]:
    """Purify unit embeddings z (N, D); yield each step with its cosine to the blank and, given
    the zero-shot head (z -> logits (N, C)), its class probabilities."""
    b = blank.to(z.device, z.dtype)
    for t, (z_t, extras) in enumerate(purify_iter(z, blank, cfg, "none", backbone, generator)):
        yield TrajectoryStep(
            t, z_t, F.cosine_similarity(z_t, b.expand_as(z_t), dim=-1),
            None if head is None else head(z_t).float().softmax(-1), extras.get("prior_loss"))

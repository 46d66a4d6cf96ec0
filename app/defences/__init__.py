"""Defences: the registry, their shared config, and the one way to run them.

Each defence is one module that declares a DefenceSpec (app/defences/spec.py): CLIPure-Cos and
CLIPure-Diff purify the embedding (app/defences/latent.py), TTC and JPEG change the image. Code
outside this package reads the declaration and never asks which defence is running.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Callable, Iterator

import torch

from app.common.errors import OutOfRangeError, UnsupportedError, check_int, check_range
from app.common.limits import LIMITS, Limits
from app.common.registry import Registry
from app.defences import cos, diff, jpeg, latent, ttc
from app.defences.cos import GRAD_SCOPES, NORMS, clipure_cos, clipure_cos_iter, rotation_per_step
from app.defences.jpeg import JPEGConfig
from app.defences.spec import BACKWARDS, DefenceSpec, Passes, seeded
from app.defences.trajectory import Prediction, Trajectory, TrajectoryStep
from app.defences.ttc import Counterattack, TTCConfig

__all__ = ["DEFENCES", "DefenceSpec", "Passes", "PurifyConfig", "PAPER_DEFAULTS", "purify", "purify_iter", "trace",
           "Trajectory", "TrajectoryStep", "Prediction", "clipure_cos", "clipure_cos_iter", "rotation_per_step",
           "NORMS", "GRAD_SCOPES", "BACKWARDS", "TTCConfig", "JPEGConfig", "Counterattack", "trajectory_steps",
           "seeded"]

# Each entry is declared in its own module; this table only names them.
DEFENCES: Registry[DefenceSpec] = Registry("defence", {
    "clipure-cos": cos.SPEC,
    "clipure-diff": diff.SPEC,
    "ttc": ttc.SPEC,
    "jpeg": jpeg.SPEC,
})


@dataclass(frozen=True)
class PurifyConfig:
    """The chosen defence and its settings. CLIPure's fields are top-level (the page and the evaluator
    sweep them); another defence's own parameters are `params`, an instance of its spec's `config`."""
    defence: str = "clipure-cos"  # key of DEFENCES
    steps: int = 10               # T, official default
    step_size: float = 30.0       # eta, official default
    momentum: float = 0.0         # gamma, official default
    norm: str = "l2"              # update norm, official default
    grad_scope: str = "sample"    # "batch" reproduces the official batch coupling
    seed: int = 0                 # randomised defences (CLIPure-Diff: timesteps and noise; TTC: its start)
    diffusion_timesteps: tuple[int, int] = (900, 999)   # CLIPure-Diff's random timestep range, both ends in
    params: object = None         # the defence's own config (TTCConfig, JPEGConfig); None: its defaults

    def validate(self, limits: Limits = LIMITS) -> "PurifyConfig":
        spec = DEFENCES[self.defence]
        NORMS.check(self.norm)
        GRAD_SCOPES.check(self.grad_scope)
        params = self.params
        if params is not None:
            if spec.config is None or not isinstance(params, spec.config):
                want = "no parameters of its own" if spec.config is None else f"a {spec.config.__name__}"
                raise OutOfRangeError(f"{spec.label} takes {want}, not {type(params).__name__}.")
            params = params.validate()
        return replace(
            self, steps=check_int("Purification steps", self.steps, 0, limits.max_purify_steps),
            step_size=check_range("Purification step size", self.step_size, 0, limits.max_step_size),
            momentum=check_range("Momentum", self.momentum, 0, 0.999),
            seed=check_int("Purification seed", self.seed, 0, 2**31 - 1),
            diffusion_timesteps=_check_timesteps(self.diffusion_timesteps), params=params)

    def own(self):
        """The defence's own parameters (an instance of its spec's `config`), defaults filled in; None for CLIPure."""
        config = DEFENCES[self.defence].config
        return self.params if self.params is not None else (None if config is None else config())

    def to_dict(self) -> dict:
        d = asdict(self)
        d["params"] = None if self.params is None else asdict(self.params)
        return d


def _check_timesteps(value) -> tuple[int, int]:
    """A (low, high) pair of whole timesteps in [0, 999]; the prior's own schedule is checked when it runs."""
    try:
        low, high = value
    except (TypeError, ValueError):
        raise OutOfRangeError(f"The diffusion timestep range must be two whole numbers, got {value!r}.") from None
    low = check_int("The lowest diffusion timestep", low, 0, 999)
    return low, check_int("The highest diffusion timestep", high, low, 999)


PAPER_DEFAULTS = PurifyConfig()


def _iterate(cfg: PurifyConfig) -> Callable:
    spec = DEFENCES[cfg.defence]
    if spec.iterate is None:
        raise UnsupportedError(f"{spec.label} defends the image, not its embedding: score it from the pixels "
                               f"(app.flows.scoring.score).")
    return spec.iterate


def trajectory_steps(cfg: PurifyConfig) -> int:
    """T, the points of the defence's trajectory after its input (its spec's `length`)."""
    return DEFENCES[cfg.defence].length(cfg)


def purify_iter(z: torch.Tensor, blank: torch.Tensor, cfg: PurifyConfig = PAPER_DEFAULTS,
                backward: str = "none", backbone: str | None = None,
                generator: torch.Generator | None = None,
                measure_last: bool = True) -> Iterator[tuple[torch.Tensor, dict]]:
    """A latent defence's purification: yield (z_t, extras) for t = 0 .. T. Without a generator,
    randomised purifiers draw from a fresh one seeded by cfg.seed."""
    return latent.run(_iterate(cfg), z, blank, cfg, backward, backbone, generator, measure_last)


def purify(z: torch.Tensor, blank: torch.Tensor, cfg: PurifyConfig = PAPER_DEFAULTS, backward: str = "none",
           backbone: str | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """The final purified embedding (N, D), with gradients as `backward` (BACKWARDS) says."""
    return latent.final(_iterate(cfg), z, blank, cfg, backward, backbone, generator)


def trace(z: torch.Tensor, blank: torch.Tensor, cfg: PurifyConfig = PAPER_DEFAULTS,
          head: Callable[[torch.Tensor], torch.Tensor] | None = None,
          backbone: str | None = None, generator: torch.Generator | None = None) -> Iterator[TrajectoryStep]:
    """Purify unit embeddings z (N, D); yield each step with its cosine to the blank and, given
    the zero-shot head (z -> logits (N, C)), its class probabilities."""
    return latent.trace(_iterate(cfg), z, blank, cfg, head, backbone, generator)

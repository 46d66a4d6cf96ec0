"""What the two CLIPure defences share: they purify the unit image embedding z on the sphere.

An `Iterate` is one purifier: (z (N, D), blank (D,), cfg, backward, backbone, generator,
measure_last) -> yields (z_t (N, D), extras) for t = 0 .. T, extras holding per-sample values it
measures along the way (CLIPure-Diff: the prior's loss). A randomised purifier draws from
`generator` only, so a caller decides whether repeated calls see fresh randomness (an attacked
model) or the same draw (a replay). measure_last=False: nobody looks at the extras of z_T, so a
purifier may skip measuring them (CLIPure-Diff's last prior loss costs a forward pass of the prior).

`latent_defence` turns an Iterate into a DefenceSpec: its trajectory, the forward an attacker
queries under each backward (docs/design.md, "Threat models"), its cost and its captions.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from app.defences.spec import BACKWARDS, DefenceSpec, Passes, seeded
from app.defences.trajectory import TrajectoryStep

Iterate = Callable[..., Iterator[tuple[torch.Tensor, dict]]]
READS = ("steps", "step_size", "momentum", "norm", "grad_scope", "seed")   # the PurifyConfig fields CLIPure reads


def run(iterate: Iterate, z: torch.Tensor, blank: torch.Tensor, cfg, backward: str = "none",
        backbone: str | None = None, generator: torch.Generator | None = None,
        measure_last: bool = True) -> Iterator[tuple[torch.Tensor, dict]]:
    """(z_t, extras) for t = 0 .. T; without a generator, a fresh one seeded by cfg.seed."""
    generator = generator if generator is not None else seeded(cfg, z.device)
    return iterate(z, blank, cfg, backward, backbone, generator, measure_last)


def final(iterate: Iterate, z: torch.Tensor, blank: torch.Tensor, cfg, backward: str = "none",
          backbone: str | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """z_T (N, D), with gradients as `backward` (BACKWARDS) says."""
    BACKWARDS.check(backward)
    if backward == "bpda":
        with torch.no_grad():
            z_t = final(iterate, z.detach(), blank, cfg, "none", backbone, generator)
        return z + (z_t - z).detach()          # value z_T, gradient of the identity
    out = z
    for out, _ in run(iterate, z, blank, cfg, backward, backbone, generator, measure_last=False):
        pass
    return out


@torch.no_grad()
def trace(iterate: Iterate, z: torch.Tensor, blank: torch.Tensor, cfg,
          head: Callable[[torch.Tensor], torch.Tensor] | None = None, backbone: str | None = None,
          generator: torch.Generator | None = None) -> Iterator[TrajectoryStep]:
    """Purify unit embeddings z (N, D); yield each step with its cosine to the blank and, given
    the zero-shot head (z -> logits (N, C)), its class probabilities."""
    b = blank.to(z.device, z.dtype)
    for t, (z_t, extras) in enumerate(run(iterate, z, blank, cfg, "none", backbone, generator)):
        yield TrajectoryStep(
            t, z_t, F.cosine_similarity(z_t, b.expand_as(z_t), dim=-1),
            None if head is None else head(z_t).float().softmax(-1), extras.get("prior_loss"))


def as_attacked(cfg, backward: str):
    """The purification the attacker's graph runs: the official pipeline normalises the step over
    the batch it is given (batch mates couple), whatever the page's gradient-norm scope says."""
    return replace(cfg, grad_scope="batch") if backward == "official" else cfg


def latent_defence(label: str, description: str, iterate: Iterate, *, step_cost: float = 1.0,
                   **declared) -> DefenceSpec:
    """A DefenceSpec for a purifier of the embedding. step_cost: one step's work in CLIPure-Cos steps."""

    def steps(defence, x, z=None):
        clf = defence.classifier
        z = z if z is not None else F.normalize(clf.encode(x), dim=-1)
        return trace(iterate, z, defence.blank, defence.purify, clf.logits_from_embedding, defence.backbone)

    def attacked(defence, x, backward, generator):
        clf, cfg = defence.classifier, as_attacked(defence.purify, backward)
        z = F.normalize(clf.encode(x), dim=-1)   # (N, D), unit: purification starts here
        z = final(iterate, z, defence.blank.float(), cfg, backward, defence.backbone, generator)
        if backward == "official":   # the official head: s * z_T @ t_c, z_T not re-normalised
            return clf.logit_scale * z @ clf.class_embeddings.T
        return clf.logits_from_embedding(z)

    def describe(cfg) -> str:
        return f"T={cfg.steps} eta={cfg.step_size:g}"

    def record(cfg) -> dict:
        return {"steps": cfg.steps, "step_size": cfg.step_size, "momentum": cfg.momentum, "norm": cfg.norm,
                "grad_scope": cfg.grad_scope}

    # One query: one encoder pass, then T steps (twice the work with the attacker's backward through them).
    for name, value in (("threat_models", ("undefended", "official", "adaptive", "bpda")),
                        ("default_threat_model", "official"), ("reads", READS), ("describe", describe),
                        ("record", record),
                        ("query_cost", lambda cfg, hit: Passes(1, int(hit), cfg.steps * step_cost * (2 if hit else 1))),
                        ("score_cost", lambda cfg: Passes(1, 0, cfg.steps * step_cost))):
        declared.setdefault(name, value)
    return DefenceSpec(label, description, "latent", steps, attacked, iterate=iterate, **declared)

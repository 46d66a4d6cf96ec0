"""Threat models: which function the attacker differentiates (docs/design.md, "Threat models").

  undefended  attack bare CLIP; the adversarial image is then purified (transfer setting)
  official    through the purification, directions detached as in the official code
  adaptive    exact gradients through the unrolled purification
  bpda        purification forward, identity backward (Athalye et al. 2018)
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from app.defences.defence import Defence
from app.common.errors import UnsupportedError
from app.defences import (
    BACKWARDS,
    PURIFIERS,
    PurifyConfig,
    purify,
    seeded,
)
from app.common.registry import Registry


@dataclass(frozen=True)
class ThreatModel:
    label: str
    explanation: str     # one line, shown in the UI
    backward: str        # key of BACKWARDS; "none": the attacker differentiates bare CLIP


THREAT_MODELS: Registry[ThreatModel] = Registry("threat model", {
    "undefended": ThreatModel(
        "Undefended (transfer)",
        "The attacker differentiates bare CLIP; the adversarial image is then purified.", "none"),
    "official": ThreatModel(
        "Official pipeline",
        "The official code's own forward and backward, at the chosen precision: one gradient norm over the "
        "batch, each step's gradient detached, the head on the unnormalised z_T. Its gradient shrinks by about "
        "1/sqrt(1+eta^2) per step (gradient masking), and in fp16 it is exactly zero.", "official"),
    "adaptive": ThreatModel(
        "Adaptive (exact)",
        "Exact gradients through the unrolled purification (create_graph=True equivalent); in fp16 they too can "
        "be exactly zero at a nearly certain clean image (a saturated loss), until PGD's random start moves off it.",
        "adaptive"),
    "bpda": ThreatModel(
        "BPDA",
        "Purification runs forward, and is taken as the identity in the backward pass.", "bpda"),
})
assert all(tm.backward in BACKWARDS for tm in THREAT_MODELS.values())


def as_attacked(cfg: PurifyConfig, backward: str) -> PurifyConfig:
    """The purification the attacker's graph runs: the official pipeline normalises the step over
    the batch it is given (batch mates couple), whatever the page's gradient-norm scope says."""
    return replace(cfg, grad_scope="batch") if backward == "official" else cfg


class PurifiedClassifier(nn.Module):
    """CLIPure: pixels -> E_img -> normalize -> purification -> zero-shot logits.

    backward: how gradients pass through the purification (a key of BACKWARDS). The forward
    value is the same in every mode.
    """

    def __init__(self, defence: Defence, backward: str = "adaptive", stream: int = 1):
        super().__init__()
        self.classifier = defence.classifier
        self.register_buffer("blank", defence.blank.float())
        self.cfg = as_attacked(defence.purify, backward)
        self.backward = BACKWARDS.check(backward)
        self.backbone = defence.backbone
        # One generator for the module's life: each forward pass of a randomised purifier
        # (CLIPure-Diff) sees a fresh draw, as an attacker querying the defence would. Stream 1
        # is the attacker's; stream 0 replays the draw that scoring uses (app.defences.seeded).
        self.generator = seeded(defence.purify, defence.class_embeddings.device, stream=stream)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = PURIFIERS[self.cfg.method]
        if spec.pixel:   # TTC: the counterattack on x, then zero-shot CLIP on x_ttc
            if self.backward == "official":
                raise UnsupportedError(no_official(self.cfg))
            with torch.set_grad_enabled(torch.is_grad_enabled() and self.backward != "none"):
                done = spec.counter(x, self.classifier.encode, self.cfg, self.backward, self.generator)
            return self.classifier(done.x_ttc)
        z = F.normalize(self.classifier.encode(x), dim=-1)   # (N, D), unit: purification starts here
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.backward != "none"):
            z = purify(z, self.blank, self.cfg, self.backward, self.backbone, self.generator)
        if self.backward == "official":   # the official head: s * z_T @ t_c, z_T not re-normalised
            return self.classifier.logit_scale * z @ self.classifier.class_embeddings.T
        return self.classifier.logits_from_embedding(z)


def attacked_model(threat_model: str, defence: Defence, stream: int = 1) -> nn.Module:
    """The module whose gradients the attacker follows under a threat model."""
    backward = THREAT_MODELS[threat_model].backward
    return defence.classifier if backward == "none" else PurifiedClassifier(defence, backward, stream).eval()


def no_official(cfg: PurifyConfig) -> str:
    label = PURIFIERS[cfg.method].label
    return (f"{label} has no official threat model: its own evaluation attacks bare CLIP (undefended) and then "
            f"defends; to attack through it, pick adaptive or bpda.")


def offered(cfg: PurifyConfig) -> list[str]:
    """The threat models a defence has, in THREAT_MODELS' order: `official` only where the official
    code attacks through the defence (CLIPure), not for TTC."""
    return [t for t, tm in THREAT_MODELS.items() if tm.backward != "official" or PURIFIERS[cfg.method].official]


def check_threat_model(threat_model: str, cfg: PurifyConfig) -> str:
    """The threat model's name if the defence has it; one sentence otherwise."""
    THREAT_MODELS.check(threat_model)
    if threat_model not in offered(cfg):
        raise UnsupportedError(no_official(cfg))
    return threat_model


def randomised(threat_model: str, cfg: PurifyConfig) -> bool:
    """Whether the model the attacker queries draws randomness (so EOT, K > 1, means something)."""
    return THREAT_MODELS[threat_model].backward != "none" and PURIFIERS[cfg.method].randomised


def eot_for(eot: int, threat_model: str, cfg: PurifyConfig) -> int:
    """The EOT count a run under `threat_model` uses: K where the attacked model draws, else 1."""
    return eot if randomised(threat_model, cfg) else 1


def check_eot_target(eot: int, threat_model: str, cfg: PurifyConfig) -> None:
    """EOT averages gradients over a randomised defence's draws: K > 1 against a model that draws
    nothing (bare CLIP, or a deterministic purifier) costs K times as much for the same gradient."""
    if eot > 1 and not randomised(threat_model, cfg):
        what = ("the undefended threat model attacks bare CLIP, which" if THREAT_MODELS[threat_model].backward == "none"
                else f"{PURIFIERS[cfg.method].label}")
        raise UnsupportedError(f"EOT averages gradients over a randomised defence's draws, and {what} draws none, "
                               f"so the EOT count must be 1 here, not {eot}.")

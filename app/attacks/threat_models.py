"""Threat models: which function the attacker differentiates (docs/design.md, "Threat models").

  undefended  attack bare CLIP; the adversarial image then goes through the defence (transfer setting)
  official    through CLIPure's purification, directions detached as in the official code
  adaptive    exact gradients through the defence
  bpda        the defence forward, identity backward (Athalye et al. 2018)

Which of them a defence has, and how its forward runs under each, is the defence's declaration
(app/defences/spec.py); this module asks nothing else of it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from app.defences.defence import Defence
from app.common.errors import UnsupportedError
from app.defences import BACKWARDS, DEFENCES, PurifyConfig, seeded
from app.common.registry import Registry


@dataclass(frozen=True)
class ThreatModel:
    label: str
    explanation: str     # one line, shown in the UI
    backward: str        # key of BACKWARDS; "none": the attacker differentiates bare CLIP


THREAT_MODELS: Registry[ThreatModel] = Registry("threat model", {
    "undefended": ThreatModel(
        "Undefended (transfer)",
        "The attacker differentiates bare CLIP; the adversarial image then goes through the defence.", "none"),
    "official": ThreatModel(
        "Official pipeline",
        "The official code's own forward and backward, at the chosen precision: one gradient norm over the "
        "batch, each step's gradient detached, the head on the unnormalised z_T. Its gradient shrinks by about "
        "1/sqrt(1+eta^2) per step (gradient masking), and in fp16 it is exactly zero.", "official"),
    "adaptive": ThreatModel(
        "Adaptive (exact)",
        "Exact gradients through the defence (for CLIPure, the unrolled purification: create_graph=True); in fp16 "
        "they too can be exactly zero at a nearly certain clean image (a saturated loss), until PGD's random start moves off it.",
        "adaptive"),
    "bpda": ThreatModel(
        "BPDA",
        "The defence runs forward, and is taken as the identity in the backward pass.", "bpda"),
})
assert all(tm.backward in BACKWARDS for tm in THREAT_MODELS.values())


class DefendedClassifier(nn.Module):
    """The defended classifier an attacker queries: pixels -> the defence (its spec's `attacked`
    forward) -> zero-shot logits.

    backward: how gradients pass through the defence (a key of BACKWARDS). The forward value is
    the same in every mode.
    """

    def __init__(self, defence: Defence, backward: str = "adaptive", stream: int = 1):
        super().__init__()
        self.defence = defence
        self.classifier = defence.classifier   # a submodule: .eval() and .to() reach the encoder
        self.backward = BACKWARDS.check(backward)
        # One generator for the module's life: each forward pass of a randomised defence sees a
        # fresh draw, as an attacker querying the defence would. Stream 1 is the attacker's;
        # stream 0 replays the draw that scoring uses (app.defences.seeded).
        self.generator = seeded(defence.purify, defence.class_embeddings.device, stream=stream)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled()):
            return DEFENCES[self.defence.purify.defence].attacked(self.defence, x, self.backward, self.generator)


def attacked_model(threat_model: str, defence: Defence, stream: int = 1) -> nn.Module:
    """The module whose gradients the attacker follows under a threat model."""
    backward = THREAT_MODELS[threat_model].backward
    return defence.classifier if backward == "none" else DefendedClassifier(defence, backward, stream).eval()


def offered(cfg: PurifyConfig) -> list[str]:
    """The threat models a defence has (its declaration), in THREAT_MODELS' order."""
    return [t for t in THREAT_MODELS if t in DEFENCES[cfg.defence].threat_models]


def check_threat_model(threat_model: str | None, cfg: PurifyConfig) -> str:
    """The threat model's name if the defence has it (None: the defence's default); one sentence otherwise."""
    spec = DEFENCES[cfg.defence]
    if threat_model is None:
        return spec.default_threat_model
    THREAT_MODELS.check(threat_model)
    if threat_model not in spec.threat_models:
        raise UnsupportedError(lacks(threat_model, cfg))
    return threat_model


def lacks(threat_model: str, cfg: PurifyConfig) -> str:
    """The defence's sentence for a threat model it does not have."""
    spec = DEFENCES[cfg.defence]
    return spec.lacks.get(threat_model) or (f"{spec.label} has no {threat_model} threat model; it has "
                                            f"{', '.join(spec.threat_models)}.")


def randomised(threat_model: str, cfg: PurifyConfig) -> bool:
    """Whether the model the attacker queries draws randomness (so EOT, K > 1, means something)."""
    return THREAT_MODELS[threat_model].backward != "none" and DEFENCES[cfg.defence].randomised


def eot_for(eot: int, threat_model: str, cfg: PurifyConfig) -> int:
    """The EOT count a run under `threat_model` uses: K where the attacked model draws, else 1."""
    return eot if randomised(threat_model, cfg) else 1


def check_eot_target(eot: int, threat_model: str, cfg: PurifyConfig) -> None:
    """EOT averages gradients over a randomised defence's draws: K > 1 against a model that draws
    nothing (bare CLIP, or a deterministic defence) costs K times as much for the same gradient."""
    if eot > 1 and not randomised(threat_model, cfg):
        what = ("the undefended threat model attacks bare CLIP, which" if THREAT_MODELS[threat_model].backward == "none"
                else f"{DEFENCES[cfg.defence].label}")
        raise UnsupportedError(f"EOT averages gradients over a randomised defence's draws, and {what} draws none, "
                               f"so the EOT count must be 1 here, not {eot}.")

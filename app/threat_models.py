"""Threat models: which function the attacker differentiates (DESIGN.md, "Facts the app must show").

  undefended  attack bare CLIP; the adversarial image is then purified (transfer setting)
  official    through the purification, directions detached as in the official code
  adaptive    exact gradients through the unrolled purification
  bpda        purification forward, identity backward (Athalye et al. 2018)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from app.errors import UnknownNameError
from app.purify import PAPER_DEFAULTS, PurifyConfig, purify
from app.zeroshot import ZeroShotClassifier


@dataclass(frozen=True)
class ThreatModel:
    label: str
    explanation: str     # one line, shown in the UI
    backward: str | None  # purification backward mode; None = the attacker ignores purification


THREAT_MODELS: dict[str, ThreatModel] = {
    "undefended": ThreatModel(
        "Undefended (transfer)",
        "The attacker differentiates bare CLIP; the adversarial image is then purified.", None),
    "official": ThreatModel(
        "Official gradients",
        "Through the purification, with each step's direction detached as in the official code "
        "(the gradient shrinks by about 1/sqrt(1+eta^2) per step: gradient masking).", "official"),
    "adaptive": ThreatModel(
        "Adaptive (exact)",
        "Exact gradients through the unrolled purification (create_graph=True equivalent).", "adaptive"),
    "bpda": ThreatModel(
        "BPDA",
        "Purification runs forward, and is taken as the identity in the backward pass.", "bpda"),
}


class PurifiedClassifier(nn.Module):
    """CLIPure: pixels -> E_img -> normalize -> purification -> zero-shot logits.

    backward: how gradients pass through the purification ("none", "official", "adaptive",
    "bpda"). The forward value is the same in every mode.
    """

    def __init__(self, classifier: ZeroShotClassifier, blank: torch.Tensor, cfg: PurifyConfig = PAPER_DEFAULTS,
                 backward: str = "adaptive"):
        super().__init__()
        self.classifier = classifier
        self.register_buffer("blank", blank.float())
        self.cfg = cfg
        self.backward = backward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.normalize(self.classifier.encode(x), dim=-1)   # (N, D), unit: purification starts here
        if self.backward == "bpda":
            with torch.no_grad():
                zp = purify(z.detach(), self.blank, self.cfg)
            z = z + (zp - z).detach()                           # value zp, gradient identity
        elif self.backward in ("official", "adaptive"):
            z = purify(z, self.blank, self.cfg, backward=self.backward)
        else:
            with torch.no_grad():
                z = purify(z, self.blank, self.cfg)
        return self.classifier.logits_from_embedding(z)


def attacked_model(threat_model: str, classifier: ZeroShotClassifier, blank: torch.Tensor,
                   cfg: PurifyConfig) -> nn.Module:
    """The module whose gradients the attacker follows under a threat model."""
    if threat_model not in THREAT_MODELS:
        raise UnknownNameError("threat model", threat_model, THREAT_MODELS)
    backward = THREAT_MODELS[threat_model].backward
    return classifier if backward is None else PurifiedClassifier(classifier, blank, cfg, backward).eval()

"""The defended classifier as one value: CLIP's zero-shot head, the blank it purifies towards,
the purification, and the backbone it runs on (docs/design.md, "The method").

Scoring, the threat models, the gradient diagnostics, the audit, the pipeline and the evaluator
take a Defence where they took (classifier, blank, purify config, backbone) apart. Which
gradient an attacker follows is a separate choice (app/attacks/threat_models.py): the same defence is
attacked under every threat model.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from app.defences import PAPER_DEFAULTS, PurifyConfig
from app.clip.zeroshot import ZeroShotClassifier


@dataclass(frozen=True)
class Defence:
    classifier: ZeroShotClassifier     # the zero-shot head: encode (N, 3, S, S) -> (N, D), logits (N, C)
    blank: torch.Tensor                # (D,) the blank prompts' embedding, the purification's target
    purify: PurifyConfig = PAPER_DEFAULTS
    backbone: str | None = None        # the registry name (CLIPure-Diff finds its prior by it)

    @property
    def class_embeddings(self) -> torch.Tensor:
        """(C, D) the unit class embeddings."""
        return self.classifier.class_embeddings

    def with_purify(self, purify: PurifyConfig) -> "Defence":
        """The same classifier and blank under another purification (bare CLIP: steps=0)."""
        return replace(self, purify=purify)

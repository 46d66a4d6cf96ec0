"""What a user asks for, and that request prepared: validated, with its backbone, classifier and
blank, and its image at model resolution.

Every request flow (the pipeline, compare, classify, the audit) starts from a Request and calls
`prepare` first. The checks run before the expensive parts: a bad image or attack setting is
refused without loading weights for it or encoding 80 templates per class.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from app.clip import models
from app.attacks import AttackConfig, validate_attack
from app.clip.classnames import parse_classnames
from app.defences.defence import Defence
from app.common.errors import CLIPureError
from app.clip.images import load_image, source_sha256
from app.common.limits import LIMITS, Limits
from app.clip.models import Backbone, load_backbone
from app.defences import DEFENCES, PurifyConfig
from app.defences.eot import check_eot
from app.attacks.threat_models import check_eot_target, check_threat_model
from app.clip.zeroshot import DEFAULT_TEMPLATE_SET, TEXT_CACHE, ZeroShotClassifier, build_classifier, get_templates


@dataclass(frozen=True)
class Request:
    """One user's request: the image, the class names and where to run them. Values are kept as
    given; `prepare` validates them."""
    image: object                          # a path, a PIL image, an array or bytes (app/clip/images.py)
    classnames: str | Sequence[str]        # comma- or newline-separated, or a list
    backbone: str | None = None            # a BACKBONES key; None: models.DEFAULT_BACKBONE
    template_set: str = DEFAULT_TEMPLATE_SET
    precision: str | None = None           # fp32, fp16, bf16; None: the backbone's own
    limits: Limits = LIMITS


@dataclass
class Prepared:
    request: Request
    backbone: Backbone
    classifier: ZeroShotClassifier
    blank: torch.Tensor              # (D,)
    x: torch.Tensor                  # (1, 3, S, S)
    classnames: list[str]
    warnings: list[str]
    input_sha256: str | None = None  # the uploaded file's hash (app/views/record.py)

    def defence(self, purify: PurifyConfig) -> Defence:
        """The defended classifier of this request under `purify`."""
        return Defence(self.classifier, self.blank, purify, self.backbone.name)


def prepare(request: Request, attack: AttackConfig | None = None) -> tuple[Prepared, AttackConfig | None]:
    """Validate every input, then build the classifier (text embeddings come from the cache).
    Returns the prepared request and the validated attack config."""
    templates = get_templates(request.template_set)
    pil = load_image(request.image, request.limits)
    backbone = load_backbone(request.backbone, precision=request.precision)
    names, warnings = parse_classnames(request.classnames, backbone.tokenizer, backbone.context_length, templates,
                                       request.limits)
    warnings += unknown_words(backbone, names)
    attack = validate_attack(attack, names, request.limits) if attack is not None else None
    classifier = build_classifier(backbone, names, request.template_set)
    blank = TEXT_CACHE.blank_embedding(backbone, request.template_set)
    x = torch.round(backbone.to_pixels(pil) * 255) / 255   # an 8-bit image at model resolution
    return Prepared(request, backbone, classifier, blank, x, names, warnings, source_sha256(request.image)), attack


def prepare_defence(request: Request, attack: AttackConfig | None, purify: PurifyConfig,
                    threat_model: str | None = None) -> tuple[Prepared, AttackConfig | None]:
    """prepare(), then the purifier's resources for this backbone (CLIPure-Diff: its prior, loaded
    on the model's device, or one sentence if the backbone has none). The attack's EOT count must
    meet a randomised model under `threat_model` (default: the attack's own)."""
    if attack is not None:   # before any text is encoded: K alone decides this
        check_eot_target(check_eot(attack.eot, request.limits),
                         threat_model or check_threat_model(attack.threat_model, purify), purify)
    prep, acfg = prepare(request, attack)
    DEFENCES[purify.defence].check_backbone(prep.backbone.name, prep.backbone.device)
    return prep, acfg


def unknown_words(backbone: Backbone, names: list[str]) -> list[str]:
    """A warning for class names outside a backbone's vocabulary (the bundled model knows 16 names)."""
    vocab = backbone.spec.vocabulary
    unknown = [n for n in names if vocab and n not in vocab]
    if not unknown:
        return []
    return [f"The bundled {backbone.name} model knows only its {len(vocab)} shape names ({', '.join(vocab)}); "
            f"{', '.join(repr(n) for n in unknown)} {'is' if len(unknown) == 1 else 'are'} not among them, so "
            f"{'its' if len(unknown) == 1 else 'their'} probabilities mean nothing."]


def preparing_message(request: Request) -> str:
    """What the preparation is doing: a backbone the server did not load at start (app/flows/warm.py) is
    loaded by this request, which takes a while; otherwise only the text cache may need filling."""
    try:
        loaded = models.is_loaded(request.backbone, precision=request.precision)
    except CLIPureError:   # an unknown name: prepare() refuses it in its turn, after the image
        loaded = True
    if loaded:
        return "Encoding the class names"
    return (f"Loading {request.backbone or models.DEFAULT_BACKBONE} (not loaded at start, so this request loads its "
            f"weights; the first use takes a while) and encoding the class names")

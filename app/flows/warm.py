"""The server's warm start: what it loads before it serves, so that requests load nothing.

On ZeroGPU each `@spaces.GPU` call runs in a process forked from the main one, and that process
may be new for every call (the `spaces` package, spaces/zero/wrappers.py): whatever a call loads
for itself is gone the next time. The documented pattern is to load models in the main process
at start and move them to `cuda` there (emulated in the main process, real inside the call). So
`warm_start` loads each backbone on its device, keeps it for the life of the process
(models.pin), and fills the text cache with its blank and class embeddings (pinned too). On a
CPU machine the same start means the first request pays no more than any other.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from app.clip import models
from app.clip.classnames import parse_classnames
from app.common.errors import CLIPureError
from app.common.limits import LIMITS
from app.defences.priors import has_prior, load_prior
from app.clip.zeroshot import TEXT_CACHE, build_classifier, get_templates


@dataclass(frozen=True)
class WarmItem:
    """One backbone at one precision, and the class names and template set a request will ask for."""
    backbone: str
    classnames: str                 # as typed in the form (parsed exactly as a request parses them)
    template_set: str
    precision: str | None = None    # None: the device's default (fp32)


@dataclass(frozen=True)
class Warmed:
    item: WarmItem
    seconds: float
    note: str | None = None         # why part of it could not be warmed (e.g. a prior's weights)


def warm(item: WarmItem) -> Warmed:
    """Load item's backbone (pinned) and its prior where it has one, and cache its text embeddings.
    Reduced precisions also warm the fp32 copy: the exact gradient of the diagnostics runs there."""
    t = time.perf_counter()
    precisions = [item.precision] + (["fp32"] if item.precision not in (None, "fp32") else [])
    note = None
    for precision in precisions:
        bb = models.load_backbone(item.backbone, precision=precision)
        models.pin(bb)
        templates = get_templates(item.template_set)
        names, _ = parse_classnames(item.classnames, bb.tokenizer, bb.context_length, templates, LIMITS)
        with TEXT_CACHE.pinned():
            build_classifier(bb, names, item.template_set)
            TEXT_CACHE.blank_embedding(bb, item.template_set)
        if has_prior(bb.name):
            try:
                load_prior(bb.name, bb.device)
            except CLIPureError as e:   # e.g. the LAION prior offline: CLIPure-Diff loads it per request
                note = str(e)
    return Warmed(item, time.perf_counter() - t, note)


def warm_start(items: list[WarmItem]) -> list[Warmed]:
    """Warm each distinct item once, in order."""
    return [warm(item) for item in dict.fromkeys(items)]

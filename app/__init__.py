"""CLIPure demo engine: zero-shot CLIP, CLIPure purification, attacks, one pipeline.

Knows nothing of Gradio. The public surface is __all__, imported lazily (importing `app`
alone loads no torch); the README's engine example runs run_pipeline and clipure_cos.
"""
from __future__ import annotations

import importlib

from app.common.version import __version__   # noqa: E402,F401  (no torch: app/common/version.py holds only the string)

# public name -> the module that defines it
_SURFACE = {
    "load_backbone": "app.clip.models", "BACKBONES": "app.clip.models",
    "TEMPLATE_SETS": "app.clip.zeroshot", "TEXT_CACHE": "app.clip.zeroshot", "build_classifier": "app.clip.zeroshot",
    "clipure_cos": "app.defences", "DEFENCES": "app.defences", "PurifyConfig": "app.defences",
    "PAPER_DEFAULTS": "app.defences", "Trajectory": "app.defences",
    "ATTACKS": "app.attacks", "AttackConfig": "app.attacks",
    "THREAT_MODELS": "app.attacks.threat_models",
    "run": "app.flows.pipeline", "run_pipeline": "app.flows.pipeline", "compare_threat_models": "app.flows.pipeline",
    "Request": "app.flows.request", "Defence": "app.defences.defence", "TTCConfig": "app.defences",
    "CLIPureError": "app.common.errors", "WeightsUnavailableError": "app.common.errors",
}
__all__ = list(_SURFACE)


def __getattr__(name: str):
    if name not in _SURFACE:
        raise AttributeError(f"module 'app' has no attribute {name!r}")
    return getattr(importlib.import_module(_SURFACE[name]), name)


def __dir__():
    return sorted(__all__)

"""CLIPure demo engine: zero-shot CLIP, CLIPure purification, attacks, one pipeline.

Knows nothing of Gradio. The public surface is __all__, imported lazily (importing `app`
alone loads no torch); the README's engine example runs run_pipeline and clipure_cos.
"""
from __future__ import annotations

import importlib

from app.version import __version__   # noqa: E402,F401  (no torch: app/version.py holds only the string)

# public name -> the module that defines it
_SURFACE = {
    "load_backbone": "app.models", "BACKBONES": "app.models",
    "TEMPLATE_SETS": "app.zeroshot", "TEXT_CACHE": "app.zeroshot", "build_classifier": "app.zeroshot",
    "clipure_cos": "app.purifiers", "PURIFIERS": "app.purifiers", "PurifyConfig": "app.purifiers",
    "PAPER_DEFAULTS": "app.purifiers", "Trajectory": "app.purifiers",
    "ATTACKS": "app.attacks", "AttackConfig": "app.attacks",
    "THREAT_MODELS": "app.threat_models",
    "run": "app.pipeline", "run_pipeline": "app.pipeline", "compare_threat_models": "app.pipeline",
    "Request": "app.request", "Defence": "app.defence", "TTCConfig": "app.purifiers",
    "CLIPureError": "app.errors", "WeightsUnavailableError": "app.errors",
}
__all__ = list(_SURFACE)


def __getattr__(name: str):
    if name not in _SURFACE:
        raise AttributeError(f"module 'app' has no attribute {name!r}")
    return getattr(importlib.import_module(_SURFACE[name]), name)


def __dir__():
    return sorted(__all__)

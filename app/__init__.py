"""CLIPure demo engine: zero-shot CLIP, CLIPure-Cos purification, attacks, one pipeline.

Knows nothing of Gradio. The public surface is __all__; the README runs run_pipeline and
clipure_cos in one example.
"""
from app.attacks import ATTACKS, AttackConfig, AttackResult, run_attack
from app.errors import CLIPureError, WeightsUnavailableError
from app.models import BACKBONES, load_backbone
from app.pipeline import PipelineResult, prepare, run, run_pipeline
from app.purify import PAPER_DEFAULTS, PURIFIERS, PurifyConfig, Trajectory, clipure_cos
from app.threat_models import THREAT_MODELS, PurifiedClassifier
from app.zeroshot import TEMPLATE_SETS, TEXT_CACHE, ZeroShotClassifier, build_classifier

__all__ = [
    "BACKBONES", "load_backbone", "TEMPLATE_SETS", "TEXT_CACHE", "ZeroShotClassifier", "build_classifier",
    "clipure_cos", "Trajectory", "PurifyConfig", "PAPER_DEFAULTS", "PURIFIERS",
    "ATTACKS", "THREAT_MODELS", "AttackConfig", "AttackResult", "PurifiedClassifier", "run_attack",
    "run", "run_pipeline", "prepare", "PipelineResult", "CLIPureError", "WeightsUnavailableError",
]

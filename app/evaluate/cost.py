"""--dry-run: how many encoder passes a run costs, and about how long it takes.

The counts come from the one cost model (app/flows/cost.py): each attack's declared passes, each
defence's declared cost per query and per scored image. They are upper bounds per image (attacks
that stop on success do less). The time is those counts times one forward and one forward+backward
pass of the bare encoder, measured on one batch on this machine; a latent purification step counts
as nothing beside them (0.5 ms against a forward's tens of ms on the CPU).
"""
from __future__ import annotations

import time

import torch

from app.attacks.threat_models import THREAT_MODELS
from app.defences import Passes
from app.evaluate.config import NO_ATTACK, EvalConfig
from app.flows.cost import attack_cost, score_cost


def count(cfg: EvalConfig, n_images: int, n_classes: int) -> dict:
    """Forward and backward passes of the whole run: each defence scores the clean images once and
    each x_adv once; an attack through bare CLIP is shared by every defence."""
    total, attacked, scored = Passes(0), set(), set()
    for s in cfg.settings():
        if s.purify not in scored:   # the clean images, through this defence (or bare CLIP)
            scored.add(s.purify)
            total = total + score_cost(s.purify) * n_images
        if s.attack == NO_ATTACK:
            continue
        shared = THREAT_MODELS[s.threat_model].backward == "none"
        key = (s.attack, s.eps, s.threat_model, None if shared else s.purify)
        if key not in attacked:
            attacked.add(key)
            total = total + attack_cost(s.attack, cfg.steps, n_classes, s.threat_model, s.purify,
                                        cfg.eot_of(s)) * n_images
        total = total + score_cost(s.purify) * n_images   # x_adv through this defence
    return {"images": n_images, "attacked_models": len(attacked), "forward_passes": total.forwards,
            "backward_passes": total.backwards}


def estimate_seconds(evaluator, counts: dict) -> float:
    """Counts times one measured forward and one forward+backward pass (per image, on a batch)."""
    clf, bb = evaluator.classifier, evaluator.backbone
    b = evaluator.cfg.batch_size
    x = torch.rand(b, 3, bb.image_size, bb.image_size, generator=torch.Generator().manual_seed(0)).to(bb.device)
    with torch.no_grad():
        clf(x)                      # warm-up
        t0 = time.perf_counter()
        clf(x)
        t_fwd = (time.perf_counter() - t0) / b
    xx = x.clone().requires_grad_(True)
    t0 = time.perf_counter()
    clf(xx).logsumexp(-1).sum().backward()
    t_fb = (time.perf_counter() - t0) / b
    fb = counts["backward_passes"]
    return fb * t_fb + max(counts["forward_passes"] - fb, 0) * t_fwd

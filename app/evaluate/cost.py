"""--dry-run: how many encoder passes a run costs, and about how long it takes.

Counts are upper bounds per image, in encoder passes: attacks that stop on success (APGD,
AutoAttack's later stages) do less. A pass of a model attacked through TTC is K + 2 encoder
forwards (and K backwards inside it); scoring TTC encodes each trajectory point. The time is
those counts times one forward and one forward+backward pass of the bare encoder, measured on
one batch on this machine.
"""
from __future__ import annotations

import time

import torch

from app.evaluate.config import NO_ATTACK, EvalConfig, Setting
from app.defences import PURIFIERS
from app.attacks.threat_models import THREAT_MODELS


def passes(cfg: EvalConfig, s: Setting, n_classes: int) -> tuple[int, int]:
    """(forward, backward) passes of the attacked model per image for one setting's attack."""
    t, targets = cfg.steps, min(9, n_classes - 1)
    per = {
        NO_ATTACK: (0, 0), "FGSM": (1, 1), "PGD": (t, t), "PGD-L2": (t, t), "MI-FGSM": (t, t),
        "APGD-CE": (t + 1, t), "APGD-DLR": (t + 1, t), "APGD-T": (targets * (t + 1), targets * t),
        "CW-L2": (t, t), "Square": (t + 1, 0), "DeepFool": (t, t * n_classes),
        "AutoAttack": (t + 1 + targets * (t + 1) + targets * 2 * t + t, t + targets * t + targets * 2 * t),
        "AutoAttack-L2": (t + 1 + targets * (t + 1) + targets * 2 * t + t, t + targets * t + targets * 2 * t),
        "AutoAttack-custom": (5 * (t + 1) + targets * (t + 1), 5 * t + targets * t),
    }
    return per.get(s.attack, (t, t))


def count(cfg: EvalConfig, n_images: int, n_classes: int) -> dict:
    """Forward and backward passes of the whole run, attacks plus scoring (one encode of each
    clean batch, one of each x_adv; attacks through bare CLIP are shared by every defence)."""
    fwd = bwd = 0
    attacked = set()
    for s in cfg.settings():
        shared = s.attack == NO_ATTACK or THREAT_MODELS[s.threat_model].backward == "none"
        key = (s.attack, s.eps, s.threat_model, None if shared else s.purify)
        if key in attacked:
            continue
        attacked.add(key)
        f, b = passes(cfg, s, n_classes)
        f, b = f * cfg.eot_of(s), b * cfg.eot_of(s)   # EOT: K queries of the defence per step
        if s.purify is not None and PURIFIERS[s.purify.method].pixel and not shared:
            k = s.purify.ttc.steps   # each query of the defence: f(x), K steps, the final classification
            f, b = f * (k + 2), b * (k + 2) + f * k
        fwd += (f + (0 if s.attack == NO_ATTACK else 1)) * n_images
        bwd += b * n_images
    fwd += n_images   # the clean encode
    for s in cfg.settings():   # TTC's scoring, clean and adversarial: its counterattack and 2 more points
        if s.purify is not None and PURIFIERS[s.purify.method].pixel:
            k = s.purify.ttc.steps
            fwd += 2 * (k + 3) * n_images
            bwd += 2 * k * n_images
    return {"images": n_images, "attacked_models": len(attacked), "forward_passes": fwd, "backward_passes": bwd}


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

"""Measure the bundled toy-shapes CLIP: zero-shot accuracy and robustness under four threat models.

    python -m app.eval_toy            # the README's figures (writes assets/toy-shapes/eval.json)
    python -m app.eval_toy --n 200 --attack-n 100 --no-write

The held-out images are freshly generated from seeds the training run never used
(HELDOUT_SEED). Every number names its threat model, attack, eps, steps and backbone.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from app.toy import shapes
from app.attacks import AttackConfig, run_attack
from app.models import TOY_DIR, load_backbone
from app.purify import PurifyConfig
from app.threat_models import THREAT_MODELS, PurifiedClassifier
from app.zeroshot import TEXT_CACHE, build_classifier

HELDOUT_SEED = 987_654_321     # training used seeds 0 .. steps-1
STEP_SIZES = (30.0, 0.5)       # the paper's eta, and a small one that does not overshoot
ATTACK = AttackConfig(attack="PGD", eps=8.0, steps=10, seed=0)
TARGET = "blue cross"


def heldout(n: int, size: int):
    batch = shapes.sample(n, seed=HELDOUT_SEED, size=size)
    x = torch.round(batch.images * 255) / 255   # 8-bit images, like the app's
    return x, batch.labels


@torch.no_grad()
def accuracy(model, x, y) -> float:
    return (model(x).argmax(-1).cpu() == y).float().mean().item()


def evaluate(n: int = 1000, attack_n: int = 500, template_set: str = "ensemble") -> dict:
    backbone = load_backbone("toy-shapes")
    names = list(shapes.CLASSNAMES)
    x, y = heldout(n, backbone.image_size)
    out = {"backbone": "toy-shapes", "classes": len(names), "heldout_seed": HELDOUT_SEED, "n": n,
           "zero_shot_top1": {}}
    for ts in ("single", "ensemble"):
        out["zero_shot_top1"][ts] = accuracy(build_classifier(backbone, names, ts), x, y)
    clf = build_classifier(backbone, names, template_set)
    blank = TEXT_CACHE.blank_embedding(backbone, template_set)
    xa, ya = x[:attack_n], y[:attack_n]
    out["attack"] = {"threat": f"PGD L-inf eps {ATTACK.eps:g}/255, {ATTACK.steps} steps, step size eps/4, "
                               f"random start, seed {ATTACK.seed}", "n": attack_n, "template_set": template_set}
    t0 = time.perf_counter()
    undefended = run_attack(ATTACK, clf, blank, xa, names, labels=ya)
    out["attack"]["bare_clip"] = {"clean": accuracy(clf, xa, ya),
                                  "adversarial": (undefended.pred_bare.cpu() == ya).float().mean().item()}
    out["attack"]["clipure"] = {}
    for eta in STEP_SIZES:
        pcfg = PurifyConfig(steps=10, step_size=eta)
        defended = PurifiedClassifier(clf, blank, pcfg, backward="none")
        row = {"purify": f"CLIPure-Cos T=10 eta={eta:g} gamma=0 L2 per-sample", "clean": accuracy(defended, xa, ya)}
        for tm in THREAT_MODELS:
            cfg = AttackConfig(**{**ATTACK.to_dict(), "threat_model": tm})
            res = run_attack(cfg, clf, blank, xa, names, purify_cfg=pcfg, labels=ya)
            row[tm] = (res.pred_purified.cpu() == ya).float().mean().item()
        out["attack"]["clipure"][f"eta={eta:g}"] = row
    # Targeted: every image not already of the target class, pushed towards TARGET.
    keep = ya != names.index(TARGET)
    cfg = AttackConfig(**{**ATTACK.to_dict(), "targeted": True, "target": TARGET})
    res = run_attack(cfg, clf, blank, xa[keep], names)
    out["attack"]["targeted"] = {"target": TARGET, "n": int(keep.sum()),
                                 "bare_clip_success": sum(res.success_bare) / len(res.success_bare)}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--attack-n", type=int, default=500)
    ap.add_argument("--template-set", default="ensemble")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    res = evaluate(args.n, args.attack_n, args.template_set)
    text = json.dumps(res, indent=1)
    print(text)
    if not args.no_write:
        (TOY_DIR / "eval.json").write_text(text + "\n")


if __name__ == "__main__":
    main()

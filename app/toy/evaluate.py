"""Measure the bundled toy-shapes CLIP: zero-shot accuracy and robustness under four threat models.

    python -m app.eval_toy            # the README's figures (writes assets/toy-shapes/eval.json)
    python -m app.eval_toy --n 200 --attack-n 100 --no-write

The robustness table is one run of the batch evaluator (app.evaluate), the same as
    python -m app.evaluate --data toy --n 500 --model toy-shapes --templates ensemble --batch-size 100 \\
        --defences none,clipure-cos --eta 30,0.5 --attacks PGD --eps 8 --steps 10 \\
        --threat-models undefended,official,adaptive,bpda --out artifacts/toy-eval
The held-out images are freshly generated from seeds the training run never used
(HELDOUT_SEED). Every number names its threat model, attack, eps, steps and backbone.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from app.attacks import AttackConfig, run_attack
from app.models import ROOT, TOY_DIR, load_backbone
from app.purifiers import PurifyConfig
from app.scoring import outcomes, score
from app.threat_models import THREAT_MODELS
from app.toy import shapes
from app.zeroshot import TEXT_CACHE, build_classifier

HELDOUT_SEED = 987_654_321     # training used seeds 0 .. steps-1
STEP_SIZES = (30.0, 0.5)       # the paper's eta, and a small one that does not overshoot
ATTACK = AttackConfig(attack="PGD", eps=8.0, steps=10, seed=0)
TARGET = "blue cross"
BARE = PurifyConfig(steps=0)
OUT = ROOT / "artifacts" / "toy-eval"
COMMAND = ("python -m app.evaluate --data toy --n {n} --model toy-shapes --templates {templates} --batch-size 100 "
           "--defences none,clipure-cos --eta 30,0.5 --attacks PGD --eps 8 --steps 10 "
           "--threat-models undefended,official,adaptive,bpda --out {out}")


def heldout(n: int, size: int):
    batch = shapes.sample(n, seed=HELDOUT_SEED, size=size)
    x = torch.round(batch.images * 255) / 255   # 8-bit images, like the app's
    return x, batch.labels


def table_config(attack_n: int, template_set: str = "ensemble"):
    from app.evaluate import EvalConfig
    return EvalConfig(data="toy", n=attack_n, seed=ATTACK.seed, model="toy-shapes", templates=template_set,
                      batch_size=100, defences=("none", "clipure-cos"), etas=STEP_SIZES, attacks=(ATTACK.attack,),
                      eps=(ATTACK.eps,), steps=ATTACK.steps, threat_models=tuple(THREAT_MODELS))


def evaluate(n: int = 1000, attack_n: int = 500, template_set: str = "ensemble", out=OUT) -> dict:
    from app.evaluate import run_evaluation
    from app.evaluate.tables import pivot
    backbone = load_backbone("toy-shapes")
    names = list(shapes.CLASSNAMES)
    t0 = time.perf_counter()
    x, y = heldout(n, backbone.image_size)
    res = {"backbone": "toy-shapes", "classes": len(names), "heldout_seed": HELDOUT_SEED, "n": n,
           "zero_shot_top1": {}}
    for ts in ("single", "ensemble"):
        clf = build_classifier(backbone, names, ts)
        bare = score(clf, TEXT_CACHE.blank_embedding(backbone, ts), BARE, x).bare
        res["zero_shot_top1"][ts] = (bare.cpu() == y).float().mean().item()

    cfg = table_config(attack_n, template_set)
    stats = run_evaluation(cfg, out)
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["setting"]: r for r in summary["rows"]}
    step = cfg.step_size if cfg.step_size is not None else ATTACK.eps / 4
    res["attack"] = {"threat": f"PGD L-inf eps {ATTACK.eps:g}/255, {ATTACK.steps} steps, step size {step:g}/255, "
                               f"random start, seed {ATTACK.seed} (per batch of 100: from seed and image ids), "
                               f"true labels", "n": attack_n, "template_set": template_set,
                     "evaluator": {"command": COMMAND.format(n=attack_n, templates=template_set, out=out),
                                   "stats": stats}}
    bare_row = rows[f"none|PGD|{ATTACK.eps:g}|undefended"]
    res["attack"]["bare_clip"] = {"clean": bare_row["clean_accuracy"], "adversarial": bare_row["robust_accuracy"],
                                  "clean_ci95": bare_row["clean_ci95"], "adversarial_ci95": bare_row["robust_ci95"]}
    res["attack"]["clipure"] = {}
    for eta in STEP_SIZES:
        cells = {tm: rows[f"clipure-cos(eta={eta:g})|PGD|{ATTACK.eps:g}|{tm}"] for tm in THREAT_MODELS}
        row = {"purify": f"CLIPure-Cos T=10 eta={eta:g} gamma=0 L2 per-sample",
               "clean": cells["undefended"]["clean_accuracy"], "clean_ci95": cells["undefended"]["clean_ci95"]}
        for tm, r in cells.items():
            row[tm] = r["robust_accuracy"]
            row[f"{tm}_ci95"] = r["robust_ci95"]
        res["attack"]["clipure"][f"eta={eta:g}"] = row
    res["attack"]["table_md"] = pivot(summary, ATTACK.attack, ATTACK.eps, list(THREAT_MODELS))

    # Targeted: every image not already of the target class, pushed towards TARGET (bare CLIP).
    clf = build_classifier(backbone, names, template_set)
    blank = TEXT_CACHE.blank_embedding(backbone, template_set)
    xa, ya = heldout(attack_n, backbone.image_size)
    keep = ya != names.index(TARGET)
    tcfg = AttackConfig(**{**ATTACK.to_dict(), "targeted": True, "target": TARGET})
    attack = run_attack(tcfg, clf, xa[keep], names, labels=ya[keep])
    hits = [o.fooled_clip for o in outcomes(attack, score(clf, blank, BARE, xa[keep]),
                                            score(clf, blank, BARE, attack.x_adv))]
    res["attack"]["targeted"] = {"target": TARGET, "n": int(keep.sum()), "bare_clip_success": sum(hits) / len(hits)}
    res["seconds"] = round(time.perf_counter() - t0, 1)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--attack-n", type=int, default=500)
    ap.add_argument("--template-set", default="ensemble")
    ap.add_argument("--out", default=str(OUT), help="the evaluator's folder (resumed when it holds this run)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    from pathlib import Path
    res = evaluate(args.n, args.attack_n, args.template_set, Path(args.out))
    text = json.dumps(res, indent=1)
    print(text)
    if not args.no_write:
        (TOY_DIR / "eval.json").write_text(text + "\n")


if __name__ == "__main__":
    main()

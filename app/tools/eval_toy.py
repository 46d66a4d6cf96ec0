"""Measure the bundled toy-shapes CLIP: zero-shot accuracy and robustness under four threat models.

    python -m app.tools.eval_toy            # writes assets/toy-shapes/eval.json (docs/measurements.md)
    python -m app.tools.eval_toy --n 200 --attack-n 100 --no-write

The robustness tables are two runs of the batch evaluator (app.evaluate): fp32 with CLIPure-Cos
and CLIPure-Diff, and fp16 (the official recipe) with CLIPure-Cos. The fp32 run is the same as
    python -m app.evaluate --data toy --n 300 --backbone toy-shapes --template-set ensemble --batch-size 100 \\
        --defences none,clipure-cos,clipure-diff --purify-step-size 30,0.5 --attacks PGD --eps 8 --steps 10 \\
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
from app.defences.defence import Defence
from app.clip.models import ROOT, TOY_BACKBONE, TOY_DIR, load_backbone
from app.defences import PurifyConfig
from app.flows.scoring import outcomes, score
from app.attacks.threat_models import THREAT_MODELS
from app.toy import shapes
from app.toy.heldout import HELDOUT_SEED, heldout
from app.clip.zeroshot import TEXT_CACHE, build_classifier

STEP_SIZES = (30.0, 0.5)       # the paper's eta, and a small one that does not overshoot
ATTACK = AttackConfig(attack="PGD", eps=8.0, steps=10, seed=0)
TARGET = "blue cross"
BARE = PurifyConfig(steps=0)
OUT = ROOT / "artifacts" / "toy-eval"
COMMAND = ("python -m app.evaluate --data toy --n {n} --backbone toy-shapes --template-set {templates} "
           "--batch-size 100 --defences none,clipure-cos,clipure-diff --purify-step-size 30,0.5 --attacks PGD "
           "--eps 8 --steps 10 --threat-models undefended,official,adaptive,bpda --out {out}")


def table_config(attack_n: int, template_set: str = "ensemble", precision: str = "fp32"):
    """fp32: bare CLIP, CLIPure-Cos and CLIPure-Diff (EOT 10 where the attack differentiates the random
    purification); fp16, the official recipe: bare CLIP and CLIPure-Cos."""
    from app.evaluate import EvalConfig
    defences = ("none", "clipure-cos", "clipure-diff") if precision == "fp32" else ("none", "clipure-cos")
    return EvalConfig(data="toy", n=attack_n, seed=ATTACK.seed, backbone=TOY_BACKBONE, template_set=template_set,
                      precision=precision, batch_size=100, defences=defences, purify_step_sizes=STEP_SIZES,
                      attacks=(ATTACK.attack,), eps=(ATTACK.eps,), steps=ATTACK.steps,
                      threat_models=tuple(THREAT_MODELS))


def _rows(cfg, summary: dict, defence: str, label: str) -> dict:
    """{eta: {clean, threat model: robust accuracy, ... with 95% intervals}} for one defence."""
    rows = {r["setting"]: r for r in summary["rows"]}
    out = {}
    for eta in STEP_SIZES:
        cells = {tm: rows[f"{defence}(eta={eta:g})|PGD|{ATTACK.eps:g}|{tm}"] for tm in THREAT_MODELS}
        row = {"purify": f"{label} T=10 eta={eta:g} gamma=0 L2 per-sample", "precision": cfg.precision,
               "clean": cells["undefended"]["clean_accuracy"], "clean_ci95": cells["undefended"]["clean_ci95"]}
        for tm, r in cells.items():
            row[tm] = r["robust_accuracy"]
            row[f"{tm}_ci95"] = r["robust_ci95"]
        out[f"eta={eta:g}"] = row
    return out


def evaluate(n: int = 1000, attack_n: int = 300, template_set: str = "ensemble", out=OUT) -> dict:
    from app.evaluate import run_evaluation
    from app.evaluate.tables import pivot
    backbone = load_backbone(TOY_BACKBONE)
    names = list(shapes.CLASSNAMES)
    t0 = time.perf_counter()
    x, y = heldout(n, backbone.image_size)
    res = {"backbone": TOY_BACKBONE, "classes": len(names), "heldout_seed": HELDOUT_SEED, "n": n,
           "zero_shot_top1": {}}
    for ts in ("single", "ensemble"):
        clf = build_classifier(backbone, names, ts)
        bare = score(Defence(clf, TEXT_CACHE.blank_embedding(backbone, ts), BARE), x).bare
        res["zero_shot_top1"][ts] = (bare.cpu() == y).float().mean().item()

    cfg = table_config(attack_n, template_set)
    stats = run_evaluation(cfg, out)
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["setting"]: r for r in summary["rows"]}
    cfg16 = table_config(attack_n, template_set, "fp16")
    stats16 = run_evaluation(cfg16, out.with_name(out.name + "-fp16"))
    summary16 = json.loads((out.with_name(out.name + "-fp16") / "summary.json").read_text())
    step = cfg.step_size if cfg.step_size is not None else ATTACK.eps / 4
    res["attack"] = {"threat": f"PGD L-inf eps {ATTACK.eps:g}/255, {ATTACK.steps} steps, step size {step:g}/255, "
                               f"random start, seed {ATTACK.seed} (per batch of 100: from seed and image ids), "
                               f"true labels", "n": attack_n, "template_set": template_set,
                     "evaluator": {"command": COMMAND.format(n=attack_n, templates=template_set, out=out),
                                   "stats": stats}}
    bare_row = rows[f"none|PGD|{ATTACK.eps:g}|undefended"]
    res["attack"]["bare_clip"] = {"clean": bare_row["clean_accuracy"], "adversarial": bare_row["robust_accuracy"],
                                  "clean_ci95": bare_row["clean_ci95"], "adversarial_ci95": bare_row["robust_ci95"]}
    res["attack"]["clipure"] = _rows(cfg, summary, "clipure-cos", "CLIPure-Cos")
    res["attack"]["clipure_diff"] = _rows(cfg, summary, "clipure-diff", "CLIPure-Diff (EOT 10: official, adaptive)")
    bare16 = {r["setting"]: r for r in summary16["rows"]}[f"none|PGD|{ATTACK.eps:g}|undefended"]
    res["attack"]["fp16"] = {"bare_clip": {"clean": bare16["clean_accuracy"], "adversarial": bare16["robust_accuracy"]},
                             "clipure": _rows(cfg16, summary16, "clipure-cos", "CLIPure-Cos"),
                             "stats": stats16, "audit_flags": summary16["audit_flags"]}
    res["attack"]["audit_flags"] = summary["audit_flags"]
    res["attack"]["table_md"] = pivot(summary, ATTACK.attack, ATTACK.eps, list(THREAT_MODELS))
    res["attack"]["table_md_fp16"] = pivot(summary16, ATTACK.attack, ATTACK.eps, list(THREAT_MODELS))

    # Targeted: every image not already of the target class, pushed towards TARGET (bare CLIP).
    clf = build_classifier(backbone, names, template_set)
    blank = TEXT_CACHE.blank_embedding(backbone, template_set)
    xa, ya = heldout(attack_n, backbone.image_size)
    keep = ya != names.index(TARGET)
    tcfg = AttackConfig(**{**ATTACK.to_dict(), "targeted": True, "target": TARGET})
    attack = run_attack(tcfg, clf, xa[keep], names, labels=ya[keep])
    bare_clip = Defence(clf, blank, BARE)
    hits = [o.fooled_clip for o in outcomes(attack, score(bare_clip, xa[keep]), score(bare_clip, attack.x_adv))]
    res["attack"]["targeted"] = {"target": TARGET, "n": int(keep.sum()), "bare_clip_success": sum(hits) / len(hits)}
    res["seconds"] = round(time.perf_counter() - t0, 1)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--attack-n", type=int, default=300)
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

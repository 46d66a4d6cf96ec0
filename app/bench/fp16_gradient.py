"""Where fp16 leaves the attacker a gradient (a measurement, not a test).

    python -m app.bench.fp16_gradient                 # n = 300; ends with one JSON line
    python -m app.bench.fp16_gradient --n 50 --json

On the bundled toy model (toy-shapes) and its held-out images, for fp16 (the official recipe)
and fp32, under the `adaptive` (exact) and `official` threat models, with CLIPure-Cos at the
paper's defaults (T = 10, eta = 30; per-sample norm under adaptive, the batch norm under official,
at batch 1), a single template and the toy vocabulary (16 classes, or --classes): how many images
get a pixel gradient of the cross-entropy that is exactly zero in every entry (and, as "mostly
zero", in at least 99% of them: what the audit's check (a) flags)

  - at the clean input (where check (a) and an attack's first step look), and
  - at PGD's random start, x + U(-eps, eps) clipped to [0, 1] with L-inf eps 8/255 (where PGD
    takes its first gradient),

and how confident the threat model's own clean answer is on those images (the largest softmax
probability of its logits, in fp32). The label is that clean answer, as the audit and the app's
attacks use it. Each gradient is app.attacks.gradients.gradient_diagnostics's, which also gives the exact
fp32 gradient's norm at the same point.

The mechanism where fp16's exact gradient vanishes: a confident answer makes the cross-entropy's
gradient at the logits 1 - p (about 1e-6), and the fp16 encoder's backward carries it in fp16,
whose smallest subnormal is 6e-8: it rounds to zero before it reaches the pixels.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import replace

import torch

from app.bench import report
from app.defences.defence import Defence
from app.attacks.gradients import exact_defence, gradient_diagnostics
from app.clip.models import TOY_BACKBONE, TOY_CLASSNAMES, load_backbone
from app.defences import PAPER_DEFAULTS
from app.flows.scoring import score
from app.attacks.threat_models import attacked_model
from app.toy.heldout import heldout
from app.clip.zeroshot import TEXT_CACHE, build_classifier

EPS = 8.0            # L-inf, in 1/255
TEMPLATES = "single"
THREAT_MODELS = ("adaptive", "official")
PRECISIONS = ("fp16", "fp32")
MOSTLY = 0.99        # "mostly zero": at least this share of the entries exactly 0 (check (a)'s threshold)


def _summary(values: list[float]) -> dict | None:
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def measure(n: int = 300, seed: int = 0, classnames: list[str] | None = None) -> dict:
    pcfg = replace(PAPER_DEFAULTS, steps=10, step_size=30.0)
    x, _ = heldout(n, load_backbone(TOY_BACKBONE, precision="fp32").image_size)
    g = torch.Generator().manual_seed(seed)
    noise = (torch.rand(x.shape, generator=g) * 2 - 1) * EPS / 255
    x_start = (x + noise).clamp(0, 1)                     # PGD's random start (torchattacks PGD)
    names = list(classnames or TOY_CLASSNAMES)
    figures: dict = {"threat_models": list(THREAT_MODELS), "attack": "PGD (first gradient: clean input and random "
                     "start)", "eps": f"{EPS:g}/255 L-inf", "backbone": TOY_BACKBONE, "precisions": list(PRECISIONS),
                     "n": n, "purify": f"{pcfg.defence} T={pcfg.steps} eta={pcfg.step_size:g}",
                     "templates": TEMPLATES, "classes": names if classnames else len(names), "seed": seed}
    for precision in PRECISIONS:
        bb = load_backbone(TOY_BACKBONE, precision=precision)
        clf = build_classifier(bb, names, TEMPLATES)
        blank = TEXT_CACHE.blank_embedding(bb, TEMPLATES)
        defence = Defence(clf, blank, pcfg, TOY_BACKBONE)
        exact = exact_defence(defence, names, TEMPLATES, precision)
        labels = score(defence, x).purified    # the attacked model's clean answers
        for tm in THREAT_MODELS:
            model = attacked_model(tm, defence)
            zero_clean, zero_start, conf_zero, conf_other, exact_norms, saturated = [], [], [], [], [], 0
            mostly_clean = mostly_start = 0
            for i in range(n):
                xi, yi = x[i:i + 1], labels[i:i + 1]
                with torch.no_grad():
                    p = model(xi).float().softmax(-1).max().item()
                saturated += p == 1.0
                at_clean = gradient_diagnostics(tm, defence, xi, yi, exact)
                at_start = gradient_diagnostics(tm, defence, x_start[i:i + 1], yi, exact)
                if at_clean.zero_fraction == 1.0:
                    zero_clean.append(i)
                    conf_zero.append(p)
                    exact_norms.append(at_clean.exact_norm)
                else:
                    conf_other.append(p)
                if at_start.zero_fraction == 1.0:
                    zero_start.append(i)
                mostly_clean += at_clean.zero_fraction >= MOSTLY
                mostly_start += at_start.zero_fraction >= MOSTLY
            figures[f"{precision}_{tm}"] = {
                "zero_gradient_at_clean": len(zero_clean),
                "zero_gradient_at_random_start": len(zero_start),
                "zero_at_both": len(set(zero_clean) & set(zero_start)),
                "mostly_zero_at_clean": mostly_clean,
                "mostly_zero_at_random_start": mostly_start,
                "confidence_of_zero_at_clean": _summary(conf_zero),
                "confidence_of_nonzero_at_clean": _summary(conf_other),
                "exact_fp32_norm_of_zero_at_clean": _summary(exact_norms),
                "softmax_exactly_1": saturated,
            }
            print(f"{precision} {tm}: done", file=sys.stderr, flush=True)
    return figures


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300, help="held-out toy images")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random start")
    ap.add_argument("--classes", default=None, help="comma-separated class names (default: the toy vocabulary, 16)")
    ap.add_argument("--json", action="store_true", help="print the JSON line only")
    args = ap.parse_args(argv)
    names = [c.strip() for c in args.classes.split(",")] if args.classes else None
    report(measure(args.n, args.seed, names), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A gradient-masking audit of one image (the gradient diagnostics of check a: app/attacks/gradients.py).

The checks follow Carlini et al. 2019 ("On evaluating adversarial robustness") and AutoAttack's
own checks.py: a defence whose robustness comes from masked gradients shows (a) zero or
vanishing gradients, (b) a gap between the threat model's attack and attacks that get usable
gradients (adaptive, BPDA), (c) a gradient-free attack beating the white-box one, (d) success
that does not reach 100% as eps grows, (e) results that change when the iterations double,
(f) random noise of the same size doing as well as the attack.

    python -m app.audit IMAGE --classes "a, b, c" --backbone toy-shapes --precision fp16 --threat-model official --json
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, replace
from typing import Callable, Sequence

import torch

from app.attacks import AttackConfig, validate_attack
from app.defences.defence import Defence
from app.common.errors import CLIPureError, OutOfRangeError, check_int
from app.attacks.gradients import GradientDiagnostics, exact_defence, gradient_diagnostics, pgd_start, vanishing
from app.common.limits import LIMITS, Limits
from app.clip.models import TOY_BACKBONE
from app.defences import PAPER_DEFAULTS, DEFENCES, PurifyConfig
from app.common.registry import Registry
from app.flows.request import Request, prepare
from app.flows.scoring import attack_and_score, reference_labels, score
from app.attacks.threat_models import check_eot_target, check_threat_model, eot_for

SWEEP_EPS = (2.0, 8.0, 16.0, 32.0)   # L-inf, 1/255; capped by the public limit (sweep_eps)


def sweep_eps(limits: Limits = LIMITS) -> tuple[float, ...]:
    """The eps sweep of check (d): SWEEP_EPS below the L-inf limit, and the limit itself last."""
    return tuple(e for e in SWEEP_EPS if e < limits.max_linf_eps) + (float(limits.max_linf_eps),)


# --- the audit ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Check:
    name: str
    flagged: bool
    detail: str


@dataclass
class Audit:
    image_label: str
    threat_model: str
    precision: str
    gradient: GradientDiagnostics
    checks: list[Check]
    sweep_eps: tuple[float, ...]      # the eps values of the sweep, L-inf in 1/255
    sweep: dict[str, list[float]]     # threat model -> probability of the reference class per sweep eps
    attack: AttackConfig              # the white-box attack of checks (b), (d), (e) (PGD, with its EOT K)
    purify: PurifyConfig              # the defence audited (its name, parameters and seed)
    backbone: str | None = None
    # Check (a) at PGD's random start (pgd_start with the attack's eps and seed), taken only when
    # the attacker's gradient at the clean input is exactly zero everywhere; else None.
    gradient_at_random_start: GradientDiagnostics | None = None
    clean_confidence: float | None = None   # the defence's largest class probability on the clean image

    def to_dict(self) -> dict:
        start = self.gradient_at_random_start
        return {"label": self.image_label, "threat_model": self.threat_model, "precision": self.precision,
                "backbone": self.backbone, "attack": asdict(self.attack), "purify": self.purify.to_dict(),
                "gradient": self.gradient.to_dict(), "checks": [asdict(c) for c in self.checks],
                "sweep_eps": list(self.sweep_eps), "sweep": self.sweep,
                "gradient_at_random_start": None if start is None else start.to_dict(),
                "clean_confidence": self.clean_confidence}


CHECKS = Registry("check", {
    "a": "zero or vanishing gradients",
    "b": "the threat model's attack fails where adaptive or BPDA gradients succeed",
    "c": "a gradient-free attack (Square) beats the white-box attack",
    "d": "success does not reach 100% as eps grows",
    "e": "doubling the iterations changes the result",
    "f": "random noise of the same eps does as well as the attack",
})


def audit(defence: Defence, x: torch.Tensor, classnames: Sequence[str], threat_model: str, exact: Defence, *,
          precision: str, eps: float = 8.0, steps: int = 10, seed: int = 0,
          on_progress: Callable[[float, str], None] | None = None, eot: int = 1) -> Audit:
    """Run checks (a)-(f) on one image x (1, 3, S, S) under `threat_model` with PGD (L-inf).

    Against a randomised defence every white-box attack (and the gradient of check a) averages
    `eot` gradients per step (EOT), whatever its threat model; Square needs no gradient. Every
    attack it derives (Square with 10x the steps, PGD with 2x, the eps sweep) is checked against
    the limits before the first one runs, so a bad setting costs nothing.
    """
    pcfg = defence.purify
    who = DEFENCES[pcfg.defence].label   # the defence audited
    check_eot_target(eot, check_threat_model(threat_model, pcfg), pcfg)
    if check_int("Attack steps", steps, 1, LIMITS.max_attack_steps) > LIMITS.max_attack_steps // 2:
        raise OutOfRangeError(f"The audit doubles the attack steps (check e): give at most "
                              f"{LIMITS.max_attack_steps // 2}, got {steps}.")
    queries = min(10 * steps, LIMITS.max_attack_steps)
    sweep = sweep_eps()
    say = on_progress or (lambda f, m: None)
    clean = score(defence, x)
    base = validate_attack(AttackConfig(attack="PGD", eps=eps, steps=steps, seed=seed, threat_model=threat_model,
                                        eot=eot), classnames)

    def under(tm: str, **changes) -> AttackConfig:
        """The base attack under another threat model: EOT where that model draws randomness."""
        return replace(base, threat_model=tm, eot=eot_for(eot, tm, pcfg), **changes)

    labels = reference_labels(base, clean, classnames)

    def fooled(cfg: AttackConfig) -> tuple[bool, float]:
        """(CLIPure fooled, CLIPure's probability of the reference class on x_adv)."""
        a = attack_and_score(cfg, defence, x, classnames, labels=labels, clean=clean)
        return a.outcomes[0].fooled_defence, float(a.adversarial.trajectory.probs[-1, 0, int(labels[0])])

    say(0.0, "gradient diagnostics")
    x_start = pgd_start(x, eps, seed)   # also check (f)'s noisy image
    grad = gradient_diagnostics(threat_model, defence, x, labels, exact, eot)
    confidence = float(clean.trajectory.probs[-1, 0].max())
    detail = f"{grad.detail}; {who}'s clean confidence {confidence:.7g}"
    at_start = None
    if grad.zero_fraction == 1.0:
        # A zero gradient at a confident clean input can be a saturated loss, not the defence: 1 - p
        # (about 1e-6) is lost in fp16's backward (smallest subnormal 6e-8). PGD's first gradient is
        # taken at its random start.
        at_start = gradient_diagnostics(threat_model, defence, x_start, labels, exact, eot)
        detail += f"; at PGD's random start (uniform in ±{eps:g}/255): {at_start.detail}"
    checks = [Check("a", vanishing(grad), detail)]
    say(0.1, "the threat model against adaptive and BPDA")
    own = fooled(base)[0]
    others = {tm: fooled(under(tm))[0] for tm in ("adaptive", "bpda") if tm != threat_model}
    gap = not own and any(others.values())
    pgd = f"PGD-{steps}" + (f" (EOT K={eot} where the defence draws)" if eot > 1 else "")
    checks.append(Check("b", gap, f"{pgd} at {eps:g}/255 fooled {who}: {threat_model} {own}, "
                        + ", ".join(f"{k} {v}" for k, v in others.items())))
    say(0.3, "Square (gradient-free)")
    square = fooled(replace(base, attack="Square", steps=queries, eot=1))[0]
    checks.append(Check("c", square and not own, f"Square ({queries} queries) fooled {who}: "
                        f"{square}; PGD under {threat_model}: {own}"))
    say(0.45, "eps sweep")
    probs_by_tm: dict[str, list[float]] = {}
    success_at_max = False
    for tm in dict.fromkeys((threat_model, "adaptive")):
        probs = []
        for e in sweep:
            ok, p = fooled(under(tm, eps=e))
            probs.append(p)
            if tm == threat_model and e == sweep[-1]:
                success_at_max = ok
        probs_by_tm[tm] = probs
    checks.append(Check("d", not success_at_max, f"PGD under {threat_model} at {sweep[-1]:g}/255 fooled {who}: "
                        f"{success_at_max}"))
    say(0.8, "twice the iterations")
    doubled = fooled(replace(base, steps=2 * steps))[0]
    checks.append(Check("e", doubled != own, f"PGD-{steps}: {own}; PGD-{2 * steps}: {doubled}"))
    say(0.9, "random noise")
    noisy = score(defence, x_start)
    noise_fools = bool(noisy.purified[0] != labels[0])
    checks.append(Check("f", noise_fools and not own, f"uniform noise of L-inf {eps:g}/255 fooled {who}: "
                        f"{noise_fools}; PGD under {threat_model}: {own}"))
    say(1.0, "done")
    return Audit(classnames[int(labels[0])], threat_model, precision, grad, checks, sweep_eps=sweep,
                 sweep=probs_by_tm, attack=base, purify=pcfg, backbone=defence.backbone,
                 gradient_at_random_start=at_start, clean_confidence=confidence)


def audit_image(request: Request, threat_model: str = "official", pcfg: PurifyConfig = PAPER_DEFAULTS, *,
                eps: float = 8.0, steps: int = 10, seed: int = 0,
                on_progress: Callable[[float, str], None] | None = None, eot: int = 1) -> Audit:
    """The audit of one image as a user asks for it: validated and prepared as a request, then
    `audit` against the exact fp32 gradient."""
    pcfg = pcfg.validate(request.limits)
    check_threat_model(threat_model, pcfg)
    prep, _ = prepare(request)
    DEFENCES[pcfg.defence].check_backbone(prep.backbone.name, prep.backbone.device)
    defence = prep.defence(pcfg)
    exact = exact_defence(defence, prep.classnames, request.template_set, prep.backbone.precision)
    return audit(defence, prep.x, prep.classnames, threat_model, exact, precision=prep.backbone.precision,
                 eps=eps, steps=steps, seed=seed, on_progress=on_progress, eot=eot)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image")
    ap.add_argument("--classes", required=True, help="comma-separated class names")
    ap.add_argument("--backbone", "--model", dest="backbone", default=TOY_BACKBONE)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--threat-model", default=None,
                    help="the threat model audited; default: the defence's own (official for CLIPure, adaptive for "
                         "the others)")
    ap.add_argument("--template-set", "--templates", dest="template_set", default="single")
    ap.add_argument("--eps", type=float, default=8.0, help="L-inf, in 1/255")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--defence", "--method", dest="defence", default=PAPER_DEFAULTS.defence,
                    help=f"the defence audited: {', '.join(DEFENCES)} (--method is its older spelling)")
    ap.add_argument("--purify-seed", "--seed", dest="purify_seed", type=int, default=0,
                    help="the defence's seed (CLIPure-Diff's draws, TTC's random start)")
    ap.add_argument("--eot", type=int, default=1, help="gradients averaged per attack step against a randomised "
                                                       "defence (EOT K)")
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    args = ap.parse_args(argv)
    try:
        pcfg = replace(PAPER_DEFAULTS, defence=DEFENCES.check(args.defence), seed=args.purify_seed)
        request = Request(args.image, args.classes, args.backbone, args.template_set, args.precision)
        result = audit_image(request, check_threat_model(args.threat_model, pcfg), pcfg, eps=args.eps, steps=args.steps, eot=args.eot,
                             on_progress=lambda f, m: print(f"[{100 * f:3.0f}%] {m}", file=sys.stderr, flush=True))
    except CLIPureError as e:
        print(str(e), file=sys.stderr)
        return 2
    if not args.json:
        for c in result.checks:
            print(f"({c.name}) {'FLAGGED' if c.flagged else 'ok':7} {CHECKS[c.name]}: {c.detail}")
    print(json.dumps(result.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

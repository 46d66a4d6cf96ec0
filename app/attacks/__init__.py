"""Attacks through torchattacks, in one registry with one uniform config.

Contract (torchattacks'): the attacked model maps pixels in [0,1] to (N, C) logits; the
normalisation sits inside the model, so `set_normalization_used` is never called. Which model
the attacker differentiates is the threat model's business (app/attacks/threat_models.py).
"""
from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torchattacks

from app.attacks import passes
from app.attacks.progress import ForwardCounter, Phase, report_phases
from app.common.errors import (
    InvalidClassNamesError,
    OutOfRangeError,
    UnsupportedError,
    check_int,
    check_range,
)
from app.common.limits import LIMITS, Limits
from app.attacks.perturbation import perturbation_norms, perturbation_stats, quantize_toward
from app.defences.eot import check_eot
from app.common.registry import Registry
from app.attacks.threat_models import THREAT_MODELS

# --- attacks --------------------------------------------------------------------------------

NO_ATTACK = "none"         # the evaluator's clean-only setting: robust accuracy = clean accuracy

@dataclass(frozen=True)
class AttackConfig:
    attack: str = "PGD"            # key of ATTACKS
    eps: float = 4.0               # 1/255 units for L-inf attacks, pixel units for L2 attacks
    steps: int = 10                # iterations (for Square: queries)
    step_size: float | None = None  # same units as eps; None = eps / 4 (2.5 eps / steps for L2)
    random_start: bool = True
    seed: int = 0
    targeted: bool = False
    target: str | None = None      # a class name; required when targeted
    threat_model: str = "undefended"
    label: str | None = None       # true class; None = the attacked model's clean prediction
    eot: int = 1                   # gradients averaged per step (EOT) against randomised defences

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class AttackSpec:
    label: str
    norm: str | None          # "linf" or "l2": the eps ball; None for minimum-norm attacks
    build: Callable[["AttackConfig", nn.Module, int], torchattacks.attack.Attack]
    targeted: bool = False    # has a targeted mode in torchattacks (its supported_mode)
    min_classes: int = 2
    forwards_per_step: int | None = 1   # for per-step progress; None = unknown (per phase)
    uses_eps: bool = True
    note: str = ""
    eot: bool = False         # averages `eot` gradients per step (torchattacks' EOTPGD, or eot_iter)
    # (steps, classes) -> (forwards, backwards) of the attacked model per image; required
    passes: Callable[[int, int], tuple[int, int]] | None = None
    one_step: bool = False    # takes a single step whatever `steps` says (FGSM)

    def __post_init__(self):
        assert callable(self.passes), f"the attack {self.label!r} declares no cost (passes)"


def _eps(cfg: AttackConfig, norm: str | None) -> float:
    return cfg.eps / 255.0 if norm == "linf" else float(cfg.eps)


def step_size_used(cfg: AttackConfig) -> float | None:
    """The attack step size the attack ran with, in eps units (1/255 for L-inf), the default filled
    in; None for minimum-norm attacks."""
    spec = ATTACKS[cfg.attack]
    if not spec.uses_eps:
        return None
    return round(_alpha(cfg, spec.norm) * (255 if spec.norm == "linf" else 1), 6)


def _alpha(cfg: AttackConfig, norm: str | None) -> float:
    if cfg.step_size is not None:
        return cfg.step_size / 255.0 if norm == "linf" else float(cfg.step_size)
    return _eps(cfg, norm) / 4 if norm == "linf" else 2.5 * _eps(cfg, norm) / max(cfg.steps, 1)


def _pgd(cfg, model, n_classes):
    if cfg.eot > 1:
        return torchattacks.EOTPGD(model, eps=_eps(cfg, "linf"), alpha=_alpha(cfg, "linf"), steps=cfg.steps,
                                   eot_iter=cfg.eot, random_start=cfg.random_start)
    return torchattacks.PGD(model, eps=_eps(cfg, "linf"), alpha=_alpha(cfg, "linf"), steps=cfg.steps,
                            random_start=cfg.random_start)


def _apgdt(cfg, model, n_classes):
    atk = torchattacks.APGDT(model, norm="Linf", eps=_eps(cfg, "linf"), steps=cfg.steps, n_restarts=1,
                             seed=cfg.seed, n_classes=n_classes, eot_iter=cfg.eot)
    atk.n_target_classes = min(9, n_classes - 1)   # AutoAttack's standard: the top 9 other classes
    return atk


def _autoattack(norm: str):
    def build(cfg, model, n_classes):
        atk = torchattacks.AutoAttack(model, norm="Linf" if norm == "linf" else "L2", eps=_eps(cfg, norm),
                                      version="standard", n_classes=n_classes, seed=cfg.seed)
        # Budget every component by `steps` (iterations; queries for Square), so the public
        # limits hold; and target at most 9 classes, as standard AutoAttack does.
        for sub in atk._autoattack.attacks:
            if hasattr(sub, "n_queries"):
                sub.n_queries = cfg.steps
            else:
                sub.steps = cfg.steps
            if hasattr(sub, "n_target_classes"):
                sub.n_target_classes = min(9, n_classes - 1)
        return atk
    return build


def _autoattack_custom(cfg, model, n_classes):
    """The official evaluation's AutoAttack version='custom' with ['apgd-ce', 'apgd-t']: APGD-CE with
    5 restarts, then APGD-T with 9 target classes (fewer when there are fewer classes) on the
    images APGD-CE left correct. Its `alpha=2` (APGD's initial step, 2 eps) is APGD's default here."""
    eps = _eps(cfg, "linf")
    ce = torchattacks.APGD(model, norm="Linf", eps=eps, steps=cfg.steps, n_restarts=5, seed=cfg.seed, loss="ce",
                           eot_iter=cfg.eot)
    t = torchattacks.APGDT(model, norm="Linf", eps=eps, steps=cfg.steps, n_restarts=1, seed=cfg.seed,
                           n_classes=n_classes, eot_iter=cfg.eot)
    t.n_target_classes = min(9, n_classes - 1)
    return torchattacks.MultiAttack([ce, t])




ATTACKS: Registry[AttackSpec] = Registry("attack", {
    "FGSM": AttackSpec("FGSM (L-inf, one step)", "linf",
                       lambda c, m, n: torchattacks.FGSM(m, eps=_eps(c, "linf")), targeted=True,
                 passes=passes.one_step, one_step=True),
    "PGD": AttackSpec("PGD (L-inf)", "linf", _pgd, targeted=True, eot=True,
                 passes=passes.iterative),
    "PGD-L2": AttackSpec("PGD (L2)", "l2",
                         lambda c, m, n: torchattacks.PGDL2(m, eps=_eps(c, "l2"), alpha=_alpha(c, "l2"),
                                                            steps=c.steps, random_start=c.random_start),
                         targeted=True,
                 passes=passes.iterative),
    "MI-FGSM": AttackSpec("MI-FGSM (L-inf, momentum)", "linf",
                          lambda c, m, n: torchattacks.MIFGSM(m, eps=_eps(c, "linf"), alpha=_alpha(c, "linf"),
                                                              steps=c.steps),
                          targeted=True,
                 passes=passes.iterative),
    "APGD-CE": AttackSpec("APGD-CE (L-inf)", "linf",
                          lambda c, m, n: torchattacks.APGD(m, norm="Linf", eps=_eps(c, "linf"), steps=c.steps,
                                                            n_restarts=1, seed=c.seed, loss="ce", eot_iter=c.eot),
                          eot=True,
                 passes=passes.apgd),
    "APGD-DLR": AttackSpec("APGD-DLR (L-inf)", "linf",
                           lambda c, m, n: torchattacks.APGD(m, norm="Linf", eps=_eps(c, "linf"), steps=c.steps,
                                                             n_restarts=1, seed=c.seed, loss="dlr", eot_iter=c.eot),
                           min_classes=3, eot=True, note="its DLR loss compares the top three logits",
                 passes=passes.apgd),
    "APGD-T": AttackSpec("APGD-T (L-inf, targeted DLR over the top classes)", "linf", _apgdt, min_classes=4, eot=True,
                         forwards_per_step=None, note="its targeted DLR loss compares the top four logits",
                 passes=passes.apgd_t),
    "CW-L2": AttackSpec("Carlini-Wagner (L2, minimum norm)", None,
                        lambda c, m, n: torchattacks.CW(m, c=1.0, kappa=0.0, steps=c.steps, lr=0.01),
                        targeted=True, uses_eps=False, note="a minimum-norm attack: eps is not used",
                 passes=passes.iterative),
    "Square": AttackSpec("Square (L-inf, query-based, no gradients)", "linf",
                         lambda c, m, n: torchattacks.Square(m, norm="Linf", eps=_eps(c, "linf"), n_queries=c.steps,
                                                             n_restarts=1, seed=c.seed),
                         targeted=True, note="steps are queries",
                 passes=passes.queries),
    "AutoAttack": AttackSpec("AutoAttack standard (L-inf)", "linf", _autoattack("linf"), min_classes=4,
                             forwards_per_step=None, note="APGD-CE, APGD-T, FAB-T, Square, each with `steps`",
                 passes=passes.autoattack),
    "AutoAttack-L2": AttackSpec("AutoAttack standard (L2)", "l2", _autoattack("l2"), min_classes=4,
                                forwards_per_step=None, note="APGD-CE, APGD-T, FAB-T, Square, each with `steps`",
                 passes=passes.autoattack),
    "AutoAttack-custom": AttackSpec("AutoAttack custom as the paper (APGD-CE 5 restarts, then APGD-T 9 targets; L-inf)",
                                    "linf", _autoattack_custom, min_classes=4, forwards_per_step=None, eot=True,
                                    note="the official evaluation's attack; APGD-T's targeted DLR loss compares the "
                                         "top four logits",
                 passes=passes.autoattack_custom),
    "DeepFool": AttackSpec("DeepFool (L2, minimum norm)", None,
                           lambda c, m, n: torchattacks.DeepFool(m, steps=c.steps, overshoot=0.02),
                           forwards_per_step=None, uses_eps=False, note="a minimum-norm attack: eps is not used",
                 passes=passes.deepfool),
})


def validate_attack(cfg: AttackConfig, classnames: Sequence[str], limits: Limits = LIMITS) -> AttackConfig:
    """Check every field; return a cleaned copy. Raises one CLIPureError sentence on bad input."""
    spec = ATTACKS[cfg.attack]
    THREAT_MODELS.check(cfg.threat_model)
    if len(classnames) < spec.min_classes:
        raise InvalidClassNamesError(
            f"{cfg.attack} needs at least {spec.min_classes} class names ({spec.note}); got {len(classnames)}.")
    if spec.norm == "linf":
        eps = check_range("L-inf eps", cfg.eps, 0, limits.max_linf_eps, " (in 1/255)")
    elif spec.norm == "l2":
        eps = check_range("L2 eps", cfg.eps, 0, limits.max_l2_eps, " (pixel units)")
    else:
        eps = float(cfg.eps)
    steps = check_int("Attack steps", cfg.steps, 1, limits.max_attack_steps)
    step_size = None
    if cfg.step_size is not None:
        high = limits.max_linf_eps if spec.norm == "linf" else limits.max_l2_eps
        step_size = check_range("Attack step size", cfg.step_size, 0, high)
        if step_size == 0:
            raise OutOfRangeError("Attack step size must be greater than 0.")
    seed = check_int("Seed", cfg.seed, 0, 2**31 - 1)
    eot = check_eot(cfg.eot, limits)
    if eot > 1 and not spec.eot:
        ok = [k for k, v in ATTACKS.items() if v.eot]
        raise UnsupportedError(f"{cfg.attack} cannot average gradients (EOT); use one of: {', '.join(ok)}.")
    names = list(classnames)
    for field_name, value in (("target", cfg.target), ("label", cfg.label)):
        if value is not None and value not in names:
            raise InvalidClassNamesError(f"The {field_name} class {value!r} is not among the class names.")
    if cfg.targeted:
        if cfg.target is None:
            raise InvalidClassNamesError("Targeted mode needs a target class from the class names.")
        if not spec.targeted:
            ok = [k for k, v in ATTACKS.items() if v.targeted]
            raise UnsupportedError(f"{cfg.attack} has no targeted mode; use one of: {', '.join(ok)}.")
    return replace(cfg, eps=eps, steps=steps, step_size=step_size, seed=seed, eot=eot)


# --- running --------------------------------------------------------------------------------

@dataclass
class AttackResult:
    """What an attack made: x_adv and the size of its perturbation. Predictions on x_adv are
    the scorer's business (app/flows/scoring.py), so each image is encoded once per request."""
    x_adv: torch.Tensor            # (N, 3, S, S) in [0,1]
    linf_255: float                # ||x_adv - x||_inf in 1/255 units (max over the batch)
    l2: float                      # ||x_adv - x||_2 in pixel units (max over the batch)
    psnr_db: float                 # PSNR of x_adv against x, peak 1 (inf when identical; min over the batch)
    linf_255_each: list[float]     # (N,) per image
    l2_each: list[float]           # (N,) per image
    label: torch.Tensor            # (N,) reference class the attack moved away from
    target: torch.Tensor | None    # (N,) target class in targeted mode
    seconds: float
    config: AttackConfig
    forwards: int                  # forward passes of the attacked model


# torchattacks' APGD, FAB, Square and AutoAttack reseed the global torch RNG. Every attack runs
# inside fork_rng under this lock, so its randomness is its own and the caller's RNG is untouched.
# It serialises attacks across threads; the app runs one engine request at a time anyway
# (default_concurrency_limit=1), and a cancelled attack releases it at its next forward pass.
_RNG_LOCK = threading.Lock()


def run_attack(cfg: AttackConfig, model: nn.Module, x: torch.Tensor, classnames: Sequence[str],
               labels: torch.Tensor, on_forward: Callable[[int], None] | None = None, *,
               limits: Limits = LIMITS, quantize: bool = True,
               on_phase: Callable[[Phase], None] | None = None) -> AttackResult:
    """Attack x (N, 3, S, S) in [0,1] through `model` (pixels -> logits; the threat model's choice,
    see app.attacks.threat_models.attacked_model). cfg is validated here (validation is idempotent and cheap).

    labels: (N,) the classes to move away from: the attacked model's clean prediction (APGD and
    CW skip inputs that are already misclassified), or the true classes.
    quantize: round the result to 8 bits (towards x), so it survives a PNG round trip.
    on_phase(Phase): each APGD restart or target class as it starts (AutoAttack and the APGD
    attacks), so progress can say where the attack is.
    """
    cfg = validate_attack(cfg, classnames, limits)
    spec = ATTACKS[cfg.attack]
    names = list(classnames)
    labels = labels.to(x.device)
    target = torch.full_like(labels, names.index(cfg.target)) if cfg.targeted else None
    # eval(): torchattacks restores the wrapper's mode after the attack, recursively; a wrapper
    # left in training mode would switch CLIP itself to training mode.
    counter = ForwardCounter(model, on_forward).eval()
    atk = spec.build(cfg, counter, len(names))
    if on_phase is not None:
        report_phases(atk, counter, on_phase)
    devices = [x.device.index or 0] if x.device.type == "cuda" else []
    t0 = time.perf_counter()
    with _RNG_LOCK, torch.random.fork_rng(devices=devices):
        torch.manual_seed(cfg.seed)
        if cfg.targeted:
            atk.set_mode_targeted_by_label(quiet=True)
            x_adv = atk(x, target)
        else:
            x_adv = atk(x, labels)
    seconds = time.perf_counter() - t0
    x_adv = x_adv.detach().clamp(0, 1)
    if quantize:
        x_adv = quantize_toward(x, x_adv)
    linf, l2, psnr = perturbation_stats(x, x_adv)
    linf_each, l2_each = perturbation_norms(x, x_adv)
    return AttackResult(x_adv, linf_255=linf, l2=l2, psnr_db=psnr, linf_255_each=linf_each, l2_each=l2_each,
                        label=labels, target=target, seconds=seconds, config=cfg, forwards=counter.count)

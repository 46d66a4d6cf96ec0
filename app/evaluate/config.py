"""What one evaluation run measures: its config, the grid of settings, and their fingerprint.

A setting is one (defence, attack, eps, threat model) cell of the grid; the run evaluates every
setting on every image. The fingerprint covers every field that can change a result, so a
resumed run cannot mix results of two configurations.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace

from app.attacks import ATTACKS, NO_ATTACK
from app.common.errors import CLIPureError, UnknownNameError, check_int, check_range
from app.clip.models import BACKBONES, TOY_BACKBONE
from app.clip.precision import PRECISIONS
from app.defences import GRAD_SCOPES, DEFENCES, PurifyConfig
from app.attacks.threat_models import THREAT_MODELS, lacks, offered, randomised
from app.clip.zeroshot import TEMPLATE_SETS

NO_DEFENCE = "none"        # bare CLIP, no purification
UNDEFENDED = "undefended"  # the threat model of bare CLIP: the attacker differentiates CLIP itself


def defence_names() -> list[str]:
    """Every value --defences accepts: bare CLIP plus each registered purifier."""
    return [NO_DEFENCE, *DEFENCES]


@dataclass(frozen=True)
class EvalConfig:
    """One run. Tuple fields are grid axes; every combination is evaluated on every image."""
    data: str = "toy"                 # "toy", "cifar10", "cifar100" or an ImageFolder path
    root: str | None = None           # torchvision root holding CIFAR (no download)
    classnames: str | None = None     # ImageFolder classes: a file, "imagenet" or "cifar10"; None = folder names
    n: int | None = None              # images (the first n of a fixed shuffle); None = all
    seed: int = 0                     # attacks and randomised purifiers draw from (seed, image ids)
    backbone: str = TOY_BACKBONE      # key of app.clip.models.BACKBONES
    precision: str = "fp32"           # key of app.clip.models.PRECISIONS
    template_set: str = "ensemble"    # key of app.clip.zeroshot.TEMPLATE_SETS
    batch_size: int = 32              # the official norm couples batch mates: batches never change shape
    defences: tuple[str, ...] = (NO_DEFENCE, "clipure-cos")
    purify_step_sizes: tuple[float, ...] = (30.0,)  # purification step sizes eta (a grid axis)
    purify_steps: int = 10            # T
    momentum: float = 0.0             # gamma
    norm: str = "l2"                  # the purification's update norm
    grad_scope: str = "sample"        # "batch" reproduces the official batch coupling
    attacks: tuple[str, ...] = ("PGD",)
    eps: tuple[float, ...] = (4.0,)   # 1/255 for L-inf attacks, pixel units for L2
    steps: int = 10                   # attack iterations
    step_size: float | None = None    # None: the attack registry's default
    threat_models: tuple[str, ...] = (UNDEFENDED,)
    eot: int | None = None            # gradients averaged per attack step against a randomised defence
                                      # (1 elsewhere); None: 10 under official/adaptive where the attack can
    diagnostics: bool = False         # per image: the attacker's gradient at x (app.attacks.gradients), +2 passes
    protocol: str | None = None       # the preset the run started from, if any (recorded only)

    def to_dict(self) -> dict:
        return asdict(self)

    def fingerprint(self) -> str:
        """Hash of every field that can change a result."""
        d = self.to_dict()
        d.pop("protocol")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def changed_fields(self, other: dict) -> list[str]:
        mine = self.to_dict()
        return [f.name for f in fields(self) if f.name != "protocol"
                and json.dumps(mine[f.name]) != json.dumps(other.get(f.name))]

    def validate(self) -> "EvalConfig":
        """Check every name against its registry and every number against its range; one
        CLIPureError sentence otherwise."""
        BACKBONES.check(self.backbone)
        PRECISIONS.check(self.precision)
        TEMPLATE_SETS.check(self.template_set)
        GRAD_SCOPES.check(self.grad_scope)
        for d in self.defences:
            if d not in defence_names():
                raise UnknownNameError("defence", d, defence_names())
        for a in self.attacks:
            if a != NO_ATTACK and a not in ATTACKS:
                raise UnknownNameError("attack", a, [NO_ATTACK, *ATTACKS])
        if self.eot is not None:
            check_int("--eot", self.eot, 1, 10_000)
        for t in self.threat_models:
            THREAT_MODELS.check(t)
        for d in self.defences:
            if d != NO_DEFENCE and not any(t in offered(PurifyConfig(defence=d)) for t in self.threat_models):
                raise CLIPureError(f"--threat-models {','.join(self.threat_models)}: "
                                   f"{lacks(self.threat_models[0], PurifyConfig(defence=d))}")
        for name, values in (("--defences", self.defences), ("--attacks", self.attacks),
                             ("--eps", self.eps), ("--threat-models", self.threat_models),
                             ("--purify-step-size", self.purify_step_sizes)):
            if not values:
                raise CLIPureError(f"{name} needs at least one value.")
        for e in self.eps:
            check_range("eps", e, 0, 1000)
        check_int("--batch-size", self.batch_size, 1, 100_000)
        check_int("--seed", self.seed, 0, 2**31 - 1)
        if self.n is not None:
            check_int("--n", self.n, 1, 10**9)
        for eta in self.purify_step_sizes:
            PurifyConfig(step_size=eta, steps=self.purify_steps, momentum=self.momentum,
                         norm=self.norm, grad_scope=self.grad_scope).validate()
        return self

    def eot_of(self, s: "Setting") -> int:
        """The EOT count K of a setting's attack. K > 1 only where the attacked model draws randomness
        (a randomised defence, queried through it): elsewhere every draw is the same and K would only
        multiply the cost. --eot unset: 10 under official and adaptive where the attack can average."""
        draws = s.purify is not None and randomised(s.threat_model, s.purify)
        if self.eot is None:
            return 10 if draws and s.attack in ATTACKS and ATTACKS[s.attack].eot and \
                THREAT_MODELS[s.threat_model].backward in ("official", "adaptive") else 1
        return self.eot if draws else 1

    def step_sizes_of(self, defence: str) -> tuple[float, ...]:
        """The purification step sizes a defence is evaluated at: the grid's where it reads eta, else one
        (TTC and JPEG have parameters of their own and are evaluated once)."""
        return self.purify_step_sizes if "step_size" in DEFENCES[defence].reads else self.purify_step_sizes[:1]

    def settings(self) -> list["Setting"]:
        """The grid, in a fixed order. Bare CLIP has nothing to purify, so it is attacked once
        per (attack, eps), under the undefended threat model, whatever --threat-models says."""
        out = []
        for d in self.defences:
            if d == NO_DEFENCE:
                purify_cfgs, tms = [None], [UNDEFENDED]
            else:
                purify_cfgs = [PurifyConfig(defence=d, steps=self.purify_steps, step_size=eta, momentum=self.momentum,
                                            norm=self.norm, grad_scope=self.grad_scope)
                               for eta in self.step_sizes_of(d)]
                tms = [t for t in self.threat_models if t in offered(purify_cfgs[0])]   # those the defence has
            for p in purify_cfgs:
                for a in self.attacks:
                    for e in ([0.0] if a == NO_ATTACK else self.eps):
                        for t in ([UNDEFENDED] if a == NO_ATTACK else tms):
                            s = Setting(d, p, a, float(e), t)
                            if s not in out:
                                out.append(s)
        return out


@dataclass(frozen=True)
class Setting:
    """One cell of the grid: a defence (with its purification config), an attack, eps and a threat model."""
    defence: str
    purify: PurifyConfig | None      # None for bare CLIP
    attack: str
    eps: float
    threat_model: str
    key: str = field(default="", compare=False)

    def __post_init__(self):
        eta = "" if self.purify_step_size is None else f"(eta={self.purify.step_size:g})"
        object.__setattr__(self, "key", f"{self.defence}{eta}|{self.attack}|{self.eps:g}|{self.threat_model}")

    @property
    def purify_step_size(self) -> float | None:
        """The purification step size eta where the defence reads it; None for bare CLIP and for a defence
        whose parameters are its own (TTC, JPEG)."""
        reads = self.purify is not None and "step_size" in DEFENCES[self.purify.defence].reads
        return self.purify.step_size if reads else None

    def with_seed(self, seed: int) -> PurifyConfig | None:
        return None if self.purify is None else replace(self.purify, seed=seed)


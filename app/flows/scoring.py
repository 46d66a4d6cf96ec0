"""Scoring: what bare CLIP and the defence answer on a batch (the defence's trajectory, as its
declaration computes it), and the one definition of every yes/no the app reports.

The pipeline (one request) and the evaluators (many images) both score through here, so an
"attack succeeded" means the same thing in the panels, the tables, the JSON and the API.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from app.attacks import ATTACKS, AttackConfig, AttackResult, run_attack
from app.defences.defence import Defence
from app.defences import DEFENCES, Trajectory, TrajectoryStep
from app.attacks.threat_models import THREAT_MODELS, attacked_model
from app.clip.zeroshot import ZeroShotClassifier


@torch.no_grad()
def encode(classifier: ZeroShotClassifier, x: torch.Tensor) -> torch.Tensor:
    """(N, 3, S, S) pixels in [0,1] -> (N, D) unit image embeddings: one encoder pass."""
    return F.normalize(classifier.encode(x), dim=-1)


def score_steps(defence: Defence, x: torch.Tensor | None, z: torch.Tensor | None = None) -> Iterator[TrajectoryStep]:
    """The defence on pixels x (N, 3, S, S) step by step, with the class probabilities at each step.
    Step 0 is bare CLIP's answer; the last step is the defence's. z: x's unit embeddings when the caller
    has them (a defence of the embedding then needs no encoder pass)."""
    return DEFENCES[defence.purify.defence].steps(defence, x, z)


@dataclass
class Scored:
    """Bare CLIP's and the defence's answers on N images."""
    trajectory: Trajectory           # probs (T+1, N, C); [0] bare CLIP, [-1] the defence

    @property
    def bare(self) -> torch.Tensor:
        """(N,) bare CLIP's top-1."""
        return self.trajectory.top1[0]

    @property
    def purified(self) -> torch.Tensor:
        """(N,) the defence's top-1."""
        return self.trajectory.top1[-1]


def score(defence: Defence, x: torch.Tensor, z: torch.Tensor | None = None) -> Scored:
    """The defence on x (N, 3, S, S): both answers with the whole trajectory. z: x's unit embeddings
    when the caller has them (a purifier of the embedding then needs no encoder pass)."""
    return Scored(Trajectory.from_steps(list(score_steps(defence, x, z))))


def reference_labels(cfg: AttackConfig, clean: Scored, classnames: Sequence[str]) -> torch.Tensor:
    """(N,) the classes an untargeted attack moves away from: the named true class, else the
    attacked model's own clean answer (bare CLIP when undefended, the defence otherwise)."""
    if cfg.label is not None:
        return torch.full_like(clean.bare, list(classnames).index(cfg.label))
    return clean.bare if THREAT_MODELS[cfg.threat_model].backward == "none" else clean.purified


# A model that does not know the class names spreads its probability about evenly over them
# (the bundled model gives each of "cat, dog, car, plane, tree" 20%); then no answer, and no
# attack verdict, means anything. A trained CLIP's logit scale (about 100) makes even a small
# preference far larger than this, so the threshold flags ignorance, not a hard image.
UNIFORM_RATIO = 1.25


def near_uniform(probs: Sequence[float]) -> bool:
    """No class gets more than UNIFORM_RATIO times the uniform share 1/C."""
    return max(probs) <= UNIFORM_RATIO / len(probs)


@dataclass(frozen=True)
class Outcome:
    """The yes/no answers about one attacked image, each defined once.

    Untargeted: an attack succeeds against a classifier when its answer on x_adv differs from
    its own answer on x (or from the true label, when one is given). Targeted: when the answer
    on x_adv is the target.
    """
    fooled_clip: bool            # the attack succeeded against bare CLIP
    fooled_defence: bool         # the attack succeeded against the defence
    defence_changed_clean: bool  # the defence's answer on the clean image differs from bare CLIP's
    exceeds_eps: bool            # a minimum-norm attack went past the eps the user set

    @property
    def failed(self) -> bool:
        """Neither classifier was fooled."""
        return not (self.fooled_clip or self.fooled_defence)


def outcomes(attack: AttackResult, clean: Scored, adversarial: Scored,
             labels: torch.Tensor | None = None) -> list[Outcome]:
    """One Outcome per image. labels: (N,) true classes, or None to compare with the clean answers."""
    cfg = attack.config
    spec = ATTACKS[cfg.attack]
    if cfg.targeted:
        fooled_clip = adversarial.bare == attack.target
        fooled_defence = adversarial.purified == attack.target
    else:
        ref_clip = clean.bare if labels is None else labels
        ref_defence = clean.purified if labels is None else labels
        fooled_clip = adversarial.bare != ref_clip
        fooled_defence = adversarial.purified != ref_defence
    changed = clean.purified != clean.bare
    # Minimum-norm attacks ignore eps; the L-inf eps the user set (1/255) is still the budget a
    # reader compares with, so going past it is flagged rather than counted as a success in budget.
    over = [not spec.uses_eps and linf > cfg.eps + 1e-6 for linf in attack.linf_255_each]
    return [Outcome(bool(a), bool(b), bool(c), e) for a, b, c, e in zip(fooled_clip, fooled_defence, changed, over)]


@dataclass
class Attacked:
    """One attack on a batch, scored: the attack's output, both classifiers' answers on the
    clean and the adversarial images, and the per-image outcomes."""
    attack: AttackResult
    clean: Scored
    adversarial: Scored
    outcomes: list[Outcome]


def attack_and_score(cfg: AttackConfig, defence: Defence, x: torch.Tensor, classnames: Sequence[str],
                     labels: torch.Tensor | None = None, clean: Scored | None = None, on_forward=None) -> Attacked:
    """Score x (unless `clean` already holds its score), attack it under cfg.threat_model, and score
    x_adv (the cost: app.flows.cost). labels: (N,) true classes, or None to attack
    the attacked model's own clean answers."""
    clean = clean if clean is not None else score(defence, x)
    refs = labels if labels is not None else reference_labels(cfg, clean, classnames)
    model = attacked_model(cfg.threat_model, defence)
    res = run_attack(cfg, model, x, classnames, refs, on_forward=on_forward)
    adv = score(defence, res.x_adv)
    return Attacked(res, clean, adv, outcomes(res, clean, adv, labels))

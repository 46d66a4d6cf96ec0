"""The one cost model: what a request or an evaluation costs, in encoder passes and latent steps.

Attacks declare their passes of the attacked model (AttackSpec.passes); defences declare what one
query of them costs and what scoring one image costs (DefenceSpec.query_cost, .score_cost). The
evaluator's dry run (app/evaluate/cost.py) and ZeroGPU's duration (app/ui/hosting.py) both read
these, so they cannot disagree. Counts are upper bounds: attacks that stop on success do less.
"""
from __future__ import annotations

from app.attacks import ATTACKS, NO_ATTACK
from app.attacks.threat_models import THREAT_MODELS, eot_for
from app.defences import DEFENCES, Passes, PurifyConfig

BARE = Passes(1)   # bare CLIP: one encoder pass


def attack_cost(attack: str, steps: int, n_classes: int, threat_model: str, purify: PurifyConfig | None,
                eot: int = 1) -> Passes:
    """One image's attack: its passes of the attacked model, each a query of the defence unless the
    threat model attacks bare CLIP; EOT multiplies the queries of a randomised defence."""
    if attack == NO_ATTACK:
        return Passes(0)
    forwards, backwards = ATTACKS[attack].passes(steps, n_classes)
    if purify is None or THREAT_MODELS[threat_model].backward == "none":
        return Passes(forwards, backwards)
    spec, k = DEFENCES[purify.defence], eot_for(eot, threat_model, purify)
    plain, graded = spec.query_cost(purify, False), spec.query_cost(purify, True)
    # every forward is a query; every backward adds what the attacker's gradient through it costs
    extra = Passes(graded.forwards - plain.forwards, graded.backwards - plain.backwards, graded.latent - plain.latent)
    return (plain * forwards + extra * backwards) * k


def score_cost(purify: PurifyConfig | None) -> Passes:
    """Scoring one image: bare CLIP, or the defence's whole trajectory."""
    return BARE if purify is None else DEFENCES[purify.defence].score_cost(purify)


def request_cost(attack: str | None, steps: int, n_classes: int, threat_model: str, purify: PurifyConfig,
                 eot: int = 1) -> Passes:
    """One request of the page: the clean image scored, attacked, and the adversarial image scored."""
    clean = score_cost(purify)
    if attack is None or attack == NO_ATTACK:
        return clean
    return clean + attack_cost(attack, steps, n_classes, threat_model, purify, eot) + score_cost(purify)

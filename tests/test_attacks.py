"""Attacks: the eps ball, [0,1], targeted success, threat-model gradients, RNG hygiene."""
import numpy as np
import pytest
import torch
import torchattacks

from app.attacks import ATTACKS, AttackConfig
from app.defences.defence import Defence
from app.common.errors import (
    InvalidClassNamesError,
    OutOfRangeError,
    UnknownNameError,
    UnsupportedError,
)
from app.defences import PAPER_DEFAULTS, PurifyConfig
from app.flows.scoring import attack_and_score
from app.attacks.threat_models import THREAT_MODELS, DefendedClassifier, attacked_model
from tests.conftest import CLASSES


@pytest.fixture(scope="module")
def x(tiny, noise_image):
    return tiny.to_pixels(noise_image)


@pytest.mark.parametrize("name", [k for k, v in ATTACKS.items() if v.uses_eps])
def test_bounded_attacks_stay_in_the_eps_ball_and_in_0_1(tiny_setup, x, name):
    clf, blank = tiny_setup
    eps = 1.0 if ATTACKS[name].norm == "l2" else 8.0
    res = attack_and_score(AttackConfig(attack=name, eps=eps, steps=3), Defence(clf, blank, PAPER_DEFAULTS), x, CLASSES).attack
    assert res.x_adv.shape == x.shape and res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    d = (res.x_adv - x).flatten(1)
    if ATTACKS[name].norm == "linf":
        assert d.abs().max() <= 8 / 255 + 1e-6 and res.linf_255 <= 8 + 1e-4
    else:
        assert d.norm(dim=1).max() <= 1.0 + 1e-5 and res.l2 <= 1.0 + 1e-5
    assert res.seconds > 0 and res.forwards >= 1


@pytest.mark.parametrize("name", ["CW-L2", "DeepFool"])
def test_minimum_norm_attacks_stay_in_0_1(tiny_setup, x, name):
    clf, blank = tiny_setup
    res = attack_and_score(AttackConfig(attack=name, steps=5), Defence(clf, blank, PAPER_DEFAULTS), x, CLASSES).attack
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1


def test_untargeted_pgd_flips_bare_clip(tiny_setup, x):
    clf, blank = tiny_setup
    a = attack_and_score(AttackConfig(attack="PGD", eps=16, steps=20), Defence(clf, blank, PAPER_DEFAULTS), x, CLASSES)
    assert a.outcomes[0].fooled_clip
    assert a.adversarial.bare.item() != clf(x).argmax().item() == a.clean.bare.item()


@pytest.mark.parametrize("target", ["dog", "plane", "tree"])
def test_targeted_pgd_reaches_its_target(tiny_setup, x, target):
    clf, blank = tiny_setup
    cfg = AttackConfig(attack="PGD", eps=16, steps=40, targeted=True, target=target)
    a = attack_and_score(cfg, Defence(clf, blank, PAPER_DEFAULTS), x, CLASSES)
    assert a.adversarial.bare.item() == CLASSES.index(target) and a.outcomes[0].fooled_clip


def test_adaptive_gradient_is_alive_where_official_vanishes(tiny_setup, x):
    clf, blank = tiny_setup
    grads = {}
    for tm in THREAT_MODELS:
        model = attacked_model(tm, Defence(clf, blank, PAPER_DEFAULTS))
        xx = x.clone().requires_grad_(True)
        logits = model(xx)
        torch.nn.functional.cross_entropy(logits, logits.argmax(-1)).backward()
        grads[tm] = xx.grad.norm().item()
    assert grads["adaptive"] > 1e-6 and grads["bpda"] > 1e-6 and grads["undefended"] > 1e-6
    # Ten steps of eta = 30 through the official graph shrink the gradient by about (1 + 30^2)^-5 ~ 2e-15;
    # in float32 what is left is rounding noise of about 1e-8 of the exact gradient.
    assert grads["official"] / grads["adaptive"] < 1e-6, grads


def test_purified_classifier_forward_is_the_same_in_every_mode(tiny_setup, x):
    clf, blank = tiny_setup
    cfg = PurifyConfig(steps=3, step_size=0.5)
    outs = [DefendedClassifier(Defence(clf, blank, cfg), b)(x) for b in ("none", "official", "adaptive", "bpda")]
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0])


def test_same_seed_same_result_and_global_rng_untouched(tiny_setup, x):
    clf, blank = tiny_setup
    torch.manual_seed(1234)
    expected_next = torch.rand(3)
    torch.manual_seed(1234)
    a = attack_and_score(AttackConfig(attack="APGD-CE", eps=8, steps=5, seed=7), Defence(clf, blank, PAPER_DEFAULTS), x, CLASSES).attack
    assert torch.equal(torch.rand(3), expected_next)   # APGD reseeds; we fork the RNG
    b = attack_and_score(AttackConfig(attack="APGD-CE", eps=8, steps=5, seed=7), Defence(clf, blank, PAPER_DEFAULTS), x, CLASSES).attack
    assert torch.equal(a.x_adv, b.x_adv)
    c = attack_and_score(AttackConfig(attack="PGD", eps=8, steps=2, seed=7), Defence(clf, blank, PAPER_DEFAULTS), x, CLASSES).attack
    d = attack_and_score(AttackConfig(attack="PGD", eps=8, steps=2, seed=8), Defence(clf, blank, PAPER_DEFAULTS), x, CLASSES).attack
    assert not torch.equal(c.x_adv, d.x_adv)   # random start follows the seed


def test_targeted_flags_match_torchattacks(tiny_setup):
    clf, _ = tiny_setup
    for name, spec in ATTACKS.items():
        atk = spec.build(AttackConfig(attack=name, eps=1.0, steps=1), clf, len(CLASSES))
        assert isinstance(atk, torchattacks.attack.Attack)
        assert spec.targeted == ("targeted" in atk.supported_mode), name


def test_autoattack_gets_the_class_count_and_budget(tiny_setup):
    clf, _ = tiny_setup
    atk = ATTACKS["AutoAttack"].build(AttackConfig(attack="AutoAttack", eps=4, steps=7), clf, len(CLASSES))
    assert atk.n_classes == len(CLASSES)
    for sub in atk._autoattack.attacks:
        assert getattr(sub, "n_queries", getattr(sub, "steps", None)) == 7
        if hasattr(sub, "n_target_classes"):
            assert sub.n_target_classes == len(CLASSES) - 1


@pytest.mark.parametrize("cfg, classes, error, match", [
    (AttackConfig(attack="nope"), CLASSES, UnknownNameError, "PGD, PGD-L2"),
    (AttackConfig(threat_model="nope"), CLASSES, UnknownNameError, "undefended, official, adaptive, bpda"),
    (AttackConfig(eps=33), CLASSES, OutOfRangeError, "L-inf eps"),
    (AttackConfig(eps=-1), CLASSES, OutOfRangeError, "L-inf eps"),
    (AttackConfig(attack="PGD-L2", eps=50), CLASSES, OutOfRangeError, "L2 eps"),
    (AttackConfig(steps=0), CLASSES, OutOfRangeError, "Attack steps"),
    (AttackConfig(steps=201), CLASSES, OutOfRangeError, "Attack steps"),
    (AttackConfig(step_size=0), CLASSES, OutOfRangeError, "step size"),
    (AttackConfig(step_size=100), CLASSES, OutOfRangeError, "step size"),
    (AttackConfig(targeted=True, target="zebra"), CLASSES, InvalidClassNamesError, "not among"),
    (AttackConfig(targeted=True), CLASSES, InvalidClassNamesError, "needs a target"),
    (AttackConfig(attack="DeepFool", targeted=True, target="dog"), CLASSES, UnsupportedError, "no targeted mode"),
    (AttackConfig(attack="APGD-T"), CLASSES[:3], InvalidClassNamesError, "at least 4"),
    (AttackConfig(attack="APGD-DLR"), CLASSES[:2], InvalidClassNamesError, "at least 3"),
])
def test_bad_attack_settings_get_one_typed_sentence(tiny_setup, x, cfg, classes, error, match):
    clf, blank = tiny_setup
    with pytest.raises(error, match=match):
        attack_and_score(cfg, Defence(clf, blank, PAPER_DEFAULTS), x, classes).attack


@pytest.mark.parametrize("threat_model", list(THREAT_MODELS))
def test_attacks_leave_clip_in_eval_mode(tiny_setup, x, threat_model):
    clf, blank = tiny_setup
    attack_and_score(AttackConfig(attack="PGD", eps=4, steps=1, threat_model=threat_model), Defence(clf, blank, PAPER_DEFAULTS), x, CLASSES).attack
    assert not clf.training and not clf.clip.training
    assert not any(m.training for m in clf.clip.modules())


def test_quantised_adversarial_survives_a_png_round_trip_within_eps(tiny_setup, x):
    import io

    from PIL import Image

    from app.views.export import to_pil
    clf, blank = tiny_setup
    x8 = torch.round(x * 255) / 255                       # the pipeline's 8-bit input
    for name, eps in (("PGD", 4.0), ("PGD-L2", 0.3)):
        res = attack_and_score(AttackConfig(attack=name, eps=eps, steps=5), Defence(clf, blank, PAPER_DEFAULTS), x8, CLASSES).attack
        buf = io.BytesIO()
        to_pil(res.x_adv).save(buf, format="PNG")
        back = torch.from_numpy(np.asarray(Image.open(buf), dtype=np.float32) / 255).permute(2, 0, 1)[None]
        assert torch.equal(back, res.x_adv.float()) or (back - res.x_adv).abs().max() < 1e-6
        d = (back - x8).flatten()
        if name == "PGD":
            assert d.abs().max() * 255 <= 4 + 1e-4
        else:
            assert d.norm() <= 0.3 + 1e-5


def test_a_copied_config_is_validated_again(tiny_setup, x):
    """run_attack validates every config it gets, also one copied from a validated config."""
    from dataclasses import replace

    from app.attacks import run_attack, validate_attack
    clf, _ = tiny_setup
    ok = validate_attack(AttackConfig(eps=4), CLASSES)
    with pytest.raises(OutOfRangeError, match="L-inf eps"):
        run_attack(replace(ok, eps=500), clf, x, CLASSES, torch.tensor([0]))


def test_registries_refuse_unknown_names_in_one_sentence_and_get_never_raises():
    from app.common.errors import UnknownNameError
    with pytest.raises(UnknownNameError, match="PGD"):
        ATTACKS["PGX"]
    assert ATTACKS.get("PGX") is None and ATTACKS.get(["unhashable"]) is None and ATTACKS.get("PGD") is ATTACKS["PGD"]
    assert "PGD" in ATTACKS and ["unhashable"] not in ATTACKS
    with pytest.raises(TypeError):
        ATTACKS["PGD"] = None    # read-only
